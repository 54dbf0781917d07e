/**
 * Stream URLs of schedules and "play now" (config/README.md "Stream URLs").
 * Every loudspeaker of the target fetches the URL, so whoever may write a
 * schedule could otherwise make a village's speakers probe the commune
 * office's router (http://192.168.1.1/), another device's admin page, or the
 * speakers' own loopback. Checked when saved:
 *
 * - no user name or password in the URL (400, schema/model.ts): they would
 *   be shown to every operator, kept in the audit log and sent to every
 *   speaker; refused rather than stored and hidden, since state.db keeps no
 *   plain credentials. URLs saved before with credentials still play, and
 *   are shown as `***@host` (redactStreamUrl) in the API, logs and audit.
 * - the host against `broadcast.streamHosts` (StreamUrlPolicy, 422): a
 *   literal address, or every address a name resolves to (dns.lookup, as
 *   the speakers' resolver would), must be public unless listed; with a list
 *   without `*`, only listed hosts. A listed name is trusted unresolved.
 *
 * Limit (documented): speakers resolve the name again when they play; a name
 * that changes its address in between (DNS rebinding) is not caught here.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { withTimeout } from '../core/async.js';
import { Errors, withDetails, type KengError } from '../core/errors.js';
import type { HostAllowList } from '../core/host-allow-list.js';
import { nonPublicClass, normalizeIp } from '../core/net-ranges.js';

const FIELD = 'content.streamUrl';
/** How long a name may take to resolve before the URL is refused (a save must not hang on DNS). */
export const RESOLVE_TIMEOUT_MS = 3000;

export type ResolveHost = (host: string) => Promise<string[]>;

/** Every address of a name, as the system resolver (and so, usually, the speakers') gives them. */
export const systemResolve: ResolveHost = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

/** True when the URL carries a user name or password (`http://user:pass@host/`). */
export function hasCredentials(url: URL): boolean {
  return url.username !== '' || url.password !== '';
}

/** The URL as shown and logged: credentials (only in URLs saved by earlier versions) replaced by `***`. */
export function redactStreamUrl(url: string): string {
  let u: URL;
  try { u = new URL(url); } catch { return url; }
  if (!hasCredentials(u)) return url;
  u.username = '***';
  u.password = '';
  return u.toString();
}

/** A copy of `value` with every `streamUrl` and `stream.url` inside it redacted (audit records, command params). */
export function redactStreamUrls<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v) => redactStreamUrls(v)) as T;
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k === 'streamUrl' && typeof v === 'string') out[k] = redactStreamUrl(v);
    else if (k === 'stream' && typeof v === 'object' && v !== null && typeof (v as { url?: unknown }).url === 'string') {
      out[k] = { ...v, url: redactStreamUrl((v as { url: string }).url) };
    } else out[k] = redactStreamUrls(v);
  }
  return out as T;
}

function refused(message: string): KengError {
  return withDetails(Errors.UNPROCESSABLE(`stream URL refused: ${message}`), [{ field: FIELD, message }]);
}

export class StreamUrlPolicy {
  constructor(
    private readonly hosts: HostAllowList,
    private readonly resolve: ResolveHost = systemResolve,
    private readonly timeoutMs = RESOLVE_TIMEOUT_MS,
  ) {}

  /** Resolves when the URL may be played; otherwise throws 422 KENG_ERR_UNPROCESSABLE naming the reason. */
  async check(raw: string): Promise<void> {
    const url = new URL(raw); // the shape was checked before (schema/model.ts)
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host)) {
      this.checkAddresses(host, [host], false);
      return;
    }
    if (this.hosts.listsName(host)) return; // listed by name: the operator's choice, not resolved
    let addresses: string[];
    try {
      addresses = await withTimeout(this.resolve(host), this.timeoutMs);
    } catch {
      throw refused(`cannot resolve "${host}" from the controller; list it in broadcast.streamHosts to allow it without resolving`);
    }
    if (addresses.length === 0) throw refused(`"${host}" has no address`);
    this.checkAddresses(host, addresses, true);
  }

  /** Every address must be listed, or public when `*` (or an empty list) allows public hosts. */
  private checkAddresses(host: string, addresses: string[], resolved: boolean): void {
    const via = resolved ? ` (it resolves to ${addresses.map(normalizeIp).join(', ')})` : '';
    for (const a of addresses) {
      if (this.hosts.addresses.has(a)) continue;
      const cls = nonPublicClass(a);
      if (cls) throw refused(`"${host}" is a ${cls} address${via}; add it to broadcast.streamHosts to allow it`);
      if (!this.hosts.anyPublic) throw refused(`"${host}" is not in broadcast.streamHosts${via}`);
    }
  }
}
