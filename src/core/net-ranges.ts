/**
 * IP address classes that matter for safe defaults: loopback (connection
 * limits count it only when told to; tests and benchmarks run there), and
 * the non-public ranges a stream URL may not point at unless an operator
 * allowed them (a loudspeaker told to fetch http://192.168.1.1/ would probe
 * the commune office's router for whoever wrote the schedule).
 *
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) and NAT64 ones (64:ff9b::/96)
 * are judged by the IPv4 address they carry.
 */
import { BlockList, isIP } from 'node:net';

type Family = 'ipv4' | 'ipv6';

/** Non-public ranges: [network, prefix, family, what it is]. */
const NON_PUBLIC: ReadonlyArray<readonly [string, number, Family, string]> = [
  ['0.0.0.0', 8, 'ipv4', 'unspecified'],
  ['10.0.0.0', 8, 'ipv4', 'private'],
  ['100.64.0.0', 10, 'ipv4', 'shared address space (CGNAT)'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'],
  ['172.16.0.0', 12, 'ipv4', 'private'],
  ['192.0.0.0', 24, 'ipv4', 'IETF protocol assignments'],
  ['192.168.0.0', 16, 'ipv4', 'private'],
  ['198.18.0.0', 15, 'ipv4', 'benchmarking'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['fc00::', 7, 'ipv6', 'unique local (private)'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['ff00::', 8, 'ipv6', 'multicast'],
];

const CLASSES = NON_PUBLIC.map(([net, prefix, family, what]) => {
  const b = new BlockList();
  b.addSubnet(net, prefix, family);
  return { b, family, what };
});

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** The IPv4 address an IPv4-mapped (::ffff:a.b.c.d) or NAT64 (64:ff9b::a.b.c.d) IPv6 address carries. */
function embeddedIpv4(ip: string): string | null {
  const m = /^(?:::ffff:|64:ff9b::)(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/i.exec(ip);
  if (!m) return null;
  if (m[1]) return m[1];
  const hi = parseInt(m[2]!, 16), lo = parseInt(m[3]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** An address as the kernel or the URL parser gives it: brackets and a zone (`%eth0`) removed, IPv4 out of IPv4-mapped form. */
export function normalizeIp(ip: string): string {
  const bare = ip.replace(/^\[|\]$/g, '').replace(/%.*$/, '').toLowerCase();
  return embeddedIpv4(bare) ?? bare;
}

function familyOf(ip: string): Family | null {
  const v = isIP(ip);
  return v === 4 ? 'ipv4' : v === 6 ? 'ipv6' : null;
}

/** What kind of non-public address `ip` is (e.g. "private", "loopback"), or null for a public one (or not an IP). */
export function nonPublicClass(ip: string): string | null {
  const a = normalizeIp(ip);
  const family = familyOf(a);
  if (!family) return null;
  for (const c of CLASSES) if (c.family === family && c.b.check(a, family)) return c.what;
  return null;
}

export function isLoopback(ip: string | undefined): boolean {
  if (!ip) return false;
  const a = normalizeIp(ip);
  const family = familyOf(a);
  return family !== null && LOOPBACK.check(a, family);
}

/** A set of addresses and CIDR ranges (`192.168.1.5`, `10.0.0.0/8`, `fd00::/8`). */
export class AddressSet {
  private readonly list = new BlockList();
  private empty = true;

  /** Adds an address or a range; false when `entry` is neither. */
  add(entry: string): boolean {
    const [addr, prefix, extra] = entry.trim().split('/');
    if (extra !== undefined || !addr) return false;
    const a = normalizeIp(addr);
    const family = familyOf(a);
    if (!family) return false;
    if (prefix === undefined) {
      this.list.addAddress(a, family);
    } else {
      const n = Number(prefix);
      if (!/^\d{1,3}$/.test(prefix) || n > (family === 'ipv4' ? 32 : 128)) return false;
      this.list.addSubnet(a, n, family);
    }
    this.empty = false;
    return true;
  }

  get isEmpty(): boolean { return this.empty; }

  has(ip: string): boolean {
    const a = normalizeIp(ip);
    const family = familyOf(a);
    return family !== null && this.list.check(a, family);
  }
}
