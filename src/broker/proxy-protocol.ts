/**
 * The PROXY protocol header a load balancer (HAProxy `send-proxy` /
 * `send-proxy-v2`) puts before the relayed bytes, so Keng learns the device's
 * own address. Spec: "The PROXY protocol, Versions 1 & 2" (haproxy/haproxy
 * doc/proxy-protocol.txt, 2020/03/05). Strict and incremental: call it with
 * everything received so far; it answers `more`, a header and its length, or
 * why the bytes can never become one (the connection must then be dropped:
 * §2 "Any sequence which does not exactly match the protocol must be
 * discarded and cause the receiver to abort the connection").
 *
 * Both versions are accepted (§2.2: a v2 receiver "is recommended" to take v1
 * too); which one a deployment uses is the balancer's choice.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface ProxyEndpoint { address: string; port: number }

export type ProxyHeader =
  /** Relayed on behalf of a client: use `source` as the peer. */
  | { version: 1 | 2; command: 'proxy'; source: ProxyEndpoint; destination: ProxyEndpoint }
  /**
   * Use the connection's own endpoints: v2 LOCAL (the proxy's own health
   * check, §2.2 "must accept this connection as valid and must use the real
   * connection endpoints"), v1 UNKNOWN (§2.1), or a v2 family/protocol Keng
   * does not use (UNSPEC, UNIX, UDP: §2.2 "falls back to the UNSPEC mode").
   */
  | { version: 1 | 2; command: 'local' };

export type ProxyParse =
  | { state: 'more' }
  | { state: 'done'; header: ProxyHeader; length: number }
  | { state: 'invalid'; why: string };

/** §2.2: the 12-byte v2 signature. */
const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_SIG = Buffer.from('PROXY ', 'latin1');
/** §2.1: "If the CRLF sequence is not found in the first 107 characters, the receiver should declare the line invalid." */
const V1_MAX = 107;
/**
 * Longest v2 header accepted (16 + addresses + TLVs). The format allows 64 KiB;
 * HAProxy sends TLVs only when told to (send-proxy-v2-ssl, unique-id), far
 * below this. Bounds what an unauthenticated peer can make Keng buffer.
 */
export const V2_MAX = 2048;

const MORE: ProxyParse = { state: 'more' };
const invalid = (why: string): ProxyParse => ({ state: 'invalid', why });

/** True when `buf` is a prefix of `sig` or starts with it. */
function matches(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length);
  return buf.subarray(0, n).equals(sig.subarray(0, n));
}

export function parseProxyHeader(buf: Buffer): ProxyParse {
  if (buf.length === 0) return MORE;
  if (matches(buf, V2_SIG)) return buf.length < 16 ? (buf.length > 12 ? v2Prefix(buf) : MORE) : parseV2(buf);
  if (matches(buf, V1_SIG)) return buf.length < V1_SIG.length ? MORE : parseV1(buf);
  return invalid('no PROXY protocol signature');
}

/** The 13th byte alone can already be wrong (§2.2: "the receiver must only accept this value"). */
function v2Prefix(buf: Buffer): ProxyParse {
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return invalid(`v2: version ${verCmd >> 4}`);
  if ((verCmd & 0x0f) > 1) return invalid(`v2: command ${verCmd & 0x0f}`);
  return MORE;
}

function parseV2(buf: Buffer): ProxyParse {
  const pre = v2Prefix(buf);
  if (pre.state === 'invalid') return pre;
  const command = buf[12]! & 0x0f; // 0 LOCAL, 1 PROXY
  const fam = buf[13]!;
  const len = buf.readUInt16BE(14);
  const total = 16 + len;
  if (total > V2_MAX) return invalid(`v2: header of ${total} bytes`);
  // §2.2: families above AF_UNIX (0x3) and protocols above DGRAM (0x2) "must be rejected as invalid by receivers".
  if (fam >> 4 > 3 || (fam & 0x0f) > 2) return invalid(`v2: family/protocol 0x${fam.toString(16)}`);
  if (buf.length < total) return MORE; // §2.2: "must not start to parse an address before the whole address block is received"
  // LOCAL: "discard the protocol block including the family"; the length is still honoured (not assumed 0).
  if (command === 0) return { state: 'done', header: { version: 2, command: 'local' }, length: total };
  if (fam === 0x11) {
    if (len < 12) return invalid('v2: TCP over IPv4 needs 12 address bytes');
    return done2(ipv4(buf, 16), ipv4(buf, 20), buf.readUInt16BE(24), buf.readUInt16BE(26), total);
  }
  if (fam === 0x21) {
    if (len < 36) return invalid('v2: TCP over IPv6 needs 36 address bytes');
    return done2(ipv6(buf, 16), ipv6(buf, 32), buf.readUInt16BE(48), buf.readUInt16BE(50), total);
  }
  // UNSPEC, UNIX, UDP: valid, not used by an MQTT listener: the real endpoints (§2.2 UNSPEC fallback).
  return { state: 'done', header: { version: 2, command: 'local' }, length: total };
}

function done2(src: string, dst: string, sport: number, dport: number, length: number): ProxyParse {
  return { state: 'done', header: { version: 2, command: 'proxy', source: { address: src, port: sport }, destination: { address: dst, port: dport } }, length };
}

function ipv4(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

function ipv6(buf: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(buf.readUInt16BE(at + i).toString(16));
  // Canonical enough for logs and limits: normalizeIp (core/net-ranges.ts) maps ::ffff:a.b.c.d to IPv4.
  return compressIpv6(groups);
}

/** RFC 5952 form: the longest run (≥ 2) of zero groups becomes `::`. */
function compressIpv6(groups: string[]): string {
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** §2.1: "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n", or "PROXY UNKNOWN[ anything]\r\n". */
function parseV1(buf: Buffer): ProxyParse {
  const limit = Math.min(buf.length, V1_MAX);
  const cr = buf.subarray(0, limit).indexOf('\r\n');
  if (cr < 0) {
    // "The receiver must not tolerate a single CR or LF character to end the line".
    const lf = buf.subarray(0, limit).indexOf(0x0a);
    if (lf >= 0) return invalid('v1: line ends without CRLF');
    return buf.length >= V1_MAX ? invalid('v1: no CRLF within 107 bytes') : MORE;
  }
  const line = buf.subarray(0, cr).toString('latin1');
  const length = cr + 2;
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') return { state: 'done', header: { version: 1, command: 'local' }, length };
  if (parts.length !== 6) return invalid('v1: expected 6 fields');
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const isAddr = proto === 'TCP4' ? canonicalIpv4 : proto === 'TCP6' ? (a: string) => isIPv6(a) : null;
  if (!isAddr) return invalid('v1: protocol must be TCP4, TCP6 or UNKNOWN');
  if (!isAddr(src) || !isAddr(dst)) return invalid(`v1: addresses are not ${proto}`);
  const sp = port(sport), dp = port(dport);
  if (sp === null || dp === null) return invalid('v1: bad port');
  const norm = (a: string): string => (proto === 'TCP6' ? a.toLowerCase() : a);
  return { state: 'done', header: { version: 1, command: 'proxy', source: { address: norm(src), port: sp }, destination: { address: norm(dst), port: dp } }, length };
}

/** §2.1: exactly 4 decimals 0..255, "Heading zeroes are not permitted". */
function canonicalIpv4(a: string): boolean {
  return isIPv4(a) && a.split('.').every((o) => o === '0' || !o.startsWith('0'));
}

/** §2.1: 0..65535, no leading zeroes. */
function port(s: string): number | null {
  if (!/^(0|[1-9]\d{0,4})$/.test(s)) return null;
  const n = Number(s);
  return n <= 65535 ? n : null;
}
