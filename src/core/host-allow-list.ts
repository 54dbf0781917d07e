/**
 * An operator's list of hosts (config `broadcast.streamHosts`): host names
 * (`radio.vov.vn`), every subdomain of a domain (`*.vov.vn`), IP addresses
 * (`192.168.1.20`, `[fd00::5]`), CIDR ranges (`10.10.0.0/16`), and `*` for
 * "any host with public addresses". Parsed once at start; a bad entry stops
 * the start naming it (config/load.ts).
 */
import { domainToASCII } from 'node:url';
import { AddressSet } from './net-ranges.js';

const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
const HOST_NAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);

/** A host name as URLs carry it: lower case, punycode, no trailing dot; null when it is not a valid name. */
export function normalizeHostName(name: string): string | null {
  const n = name.trim().replace(/\.$/, '');
  // domainToASCII parses like a URL host (it would read "10.0.0.0/33" as "10.0.0.0"): no URL punctuation, no bare numbers.
  if (n === '' || /[\s/\\:@?#[\]%]/.test(n) || /^[\d.]+$/.test(n)) return null;
  const ascii = domainToASCII(n);
  return ascii && ascii.length <= 253 && HOST_NAME.test(ascii) ? ascii : null;
}

export class HostAllowList {
  /** `*`: any host whose addresses are all public. */
  anyPublic = false;
  readonly names = new Set<string>();
  /** `*.example.vn` → ".example.vn" (subdomains only, as in TLS wildcards). */
  readonly suffixes: string[] = [];
  readonly addresses = new AddressSet();

  /** The list, or the first entry that is none of the accepted forms. */
  static parse(entries: readonly string[]): { ok: true; list: HostAllowList } | { ok: false; bad: string } {
    const list = new HostAllowList();
    for (const raw of entries) {
      const e = raw.trim();
      if (e === '*') { list.anyPublic = true; continue; }
      if (list.addresses.add(e)) continue;
      if (e.startsWith('*.')) {
        const d = normalizeHostName(e.slice(2));
        if (!d) return { ok: false, bad: raw };
        list.suffixes.push(`.${d}`);
        continue;
      }
      const n = normalizeHostName(e);
      if (!n) return { ok: false, bad: raw };
      list.names.add(n);
    }
    // No entry at all is the default: any public host.
    if (entries.length === 0) list.anyPublic = true;
    return { ok: true, list };
  }

  /** The host is listed by name (exactly, or under a `*.` domain). */
  listsName(host: string): boolean {
    const h = normalizeHostName(host);
    return h !== null && (this.names.has(h) || this.suffixes.some((s) => h.endsWith(s)));
  }
}
