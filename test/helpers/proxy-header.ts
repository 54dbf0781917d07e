/**
 * PROXY protocol headers as a load balancer writes them (haproxy/haproxy
 * doc/proxy-protocol.txt §2.1, §2.2), built independently of the parser in
 * src/broker/proxy-protocol.ts so tests compare two readings of the spec.
 */
import { isIPv6 } from 'node:net';

export const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

export function proxyV1(src: string, dst = '127.0.0.1', srcPort = 40000, dstPort = 1883): Buffer {
  return Buffer.from(`PROXY ${isIPv6(src) ? 'TCP6' : 'TCP4'} ${src} ${dst} ${srcPort} ${dstPort}\r\n`, 'latin1');
}

function ipv6Bytes(a: string): Buffer {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

/** A v2 header: PROXY over TCP4/TCP6 from `src`, or LOCAL (`src` null); `tlv` appended after the addresses. */
export function proxyV2(src: string | null, o: { dst?: string; srcPort?: number; dstPort?: number; tlv?: Buffer; verCmd?: number; fam?: number } = {}): Buffer {
  const tlv = o.tlv ?? Buffer.alloc(0);
  if (src === null) {
    const head = Buffer.concat([V2_SIGNATURE, Buffer.from([o.verCmd ?? 0x20, o.fam ?? 0x00, 0, 0])]);
    head.writeUInt16BE(tlv.length, 14);
    return Buffer.concat([head, tlv]);
  }
  const six = isIPv6(src);
  const dst = o.dst ?? (six ? '::1' : '127.0.0.1');
  const addrs = six
    ? Buffer.concat([ipv6Bytes(src), ipv6Bytes(dst), Buffer.alloc(4)])
    : Buffer.concat([Buffer.from(src.split('.').map(Number)), Buffer.from(dst.split('.').map(Number)), Buffer.alloc(4)]);
  addrs.writeUInt16BE(o.srcPort ?? 40000, addrs.length - 4);
  addrs.writeUInt16BE(o.dstPort ?? 1883, addrs.length - 2);
  const head = Buffer.concat([V2_SIGNATURE, Buffer.from([o.verCmd ?? 0x21, o.fam ?? (six ? 0x21 : 0x11), 0, 0])]);
  head.writeUInt16BE(addrs.length + tlv.length, 14);
  return Buffer.concat([head, addrs, tlv]);
}
