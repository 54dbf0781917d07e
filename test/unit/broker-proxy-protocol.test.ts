/**
 * src/broker/proxy-protocol.ts against haproxy/haproxy doc/proxy-protocol.txt:
 * v1 (§2.1) and v2 (§2.2) headers, fed whole and one byte at a time; every
 * deviation the spec names is refused.
 */
import { describe, expect, it } from 'vitest';
import { parseProxyHeader, V2_MAX, type ProxyParse } from '../../src/broker/proxy-protocol.js';
import { proxyV1, proxyV2, V2_SIGNATURE } from '../helpers/proxy-header.js';

const MQTT = Buffer.from([0x10, 0x0c, 0x00, 0x04]); // the start of a CONNECT

/** Feeds `bytes` one more byte at a time; every prefix before the end must ask for more. */
function byteByByte(bytes: Buffer): ProxyParse {
  for (let i = 1; i < bytes.length; i++) {
    const r = parseProxyHeader(bytes.subarray(0, i));
    if (r.state !== 'more') return r;
  }
  return parseProxyHeader(bytes);
}

const v1 = (line: string): ProxyParse => parseProxyHeader(Buffer.from(line, 'latin1'));

describe('PROXY protocol v1 (§2.1)', () => {
  it('TCP4 and TCP6: source and destination, the header length (what follows is not part of it)', () => {
    const h = proxyV1('192.168.0.1', '192.168.0.11', 56324, 1883);
    expect(parseProxyHeader(Buffer.concat([h, MQTT]))).toEqual({
      state: 'done', length: h.length,
      header: { version: 1, command: 'proxy', source: { address: '192.168.0.1', port: 56324 }, destination: { address: '192.168.0.11', port: 1883 } },
    });
    const r = v1('PROXY TCP6 2001:DB8::1 ::1 65535 0\r\n');
    expect(r).toMatchObject({ state: 'done', header: { source: { address: '2001:db8::1', port: 65535 }, destination: { address: '::1', port: 0 } } });
  });

  it('one byte at a time: "more" until the CRLF', () => {
    const h = proxyV1('10.1.2.3');
    expect(byteByByte(h)).toMatchObject({ state: 'done', length: h.length, header: { source: { address: '10.1.2.3' } } });
  });

  it('UNKNOWN (with or without the rest of the line): the connection\'s own endpoints', () => {
    expect(v1('PROXY UNKNOWN\r\n')).toEqual({ state: 'done', length: 15, header: { version: 1, command: 'local' } });
    expect(v1('PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n')).toMatchObject({ state: 'done', header: { command: 'local' } });
  });

  it.each([
    ['heading zeroes in an address', 'PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n'],
    ['heading zeroes in a port', 'PROXY TCP4 10.0.0.1 10.0.0.2 01 2\r\n'],
    ['a port above 65535', 'PROXY TCP4 10.0.0.1 10.0.0.2 65536 2\r\n'],
    ['an IPv6 address under TCP4', 'PROXY TCP4 ::1 10.0.0.2 1 2\r\n'],
    ['an IPv4 address under TCP6', 'PROXY TCP6 10.0.0.1 ::1 1 2\r\n'],
    ['an unknown protocol', 'PROXY UDP4 10.0.0.1 10.0.0.2 1 2\r\n'],
    ['two spaces', 'PROXY TCP4  10.0.0.1 10.0.0.2 1 2\r\n'],
    ['a missing field', 'PROXY TCP4 10.0.0.1 10.0.0.2 1\r\n'],
    ['a lone LF', 'PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n'],
    ['lower case', 'proxy TCP4 10.0.0.1 10.0.0.2 1 2\r\n'],
  ])('refuses %s', (_what, line) => {
    expect(v1(line).state).toBe('invalid');
  });

  it('refuses a line without CRLF in the first 107 bytes, and does not wait for more', () => {
    expect(v1(`PROXY UNKNOWN ${'f'.repeat(120)}`)).toMatchObject({ state: 'invalid', why: expect.stringMatching(/107/) });
    expect(v1(`PROXY UNKNOWN ${'f'.repeat(80)}`).state).toBe('more');
  });
});

describe('PROXY protocol v2 (§2.2)', () => {
  it('PROXY over TCP4 and TCP6, followed by MQTT bytes', () => {
    const h = proxyV2('203.0.113.7', { srcPort: 5555 });
    expect(parseProxyHeader(Buffer.concat([h, MQTT]))).toEqual({
      state: 'done', length: 28,
      header: { version: 2, command: 'proxy', source: { address: '203.0.113.7', port: 5555 }, destination: { address: '127.0.0.1', port: 1883 } },
    });
    const h6 = proxyV2('2001:db8:0:0:1:0:0:1');
    expect(parseProxyHeader(h6)).toMatchObject({ state: 'done', length: 52, header: { source: { address: '2001:db8::1:0:0:1' }, destination: { address: '::1' } } });
  });

  it('one byte at a time: "more" until the whole address block is there', () => {
    const h = proxyV2('198.51.100.9', { tlv: Buffer.from([0x04, 0x00, 0x02, 0xaa, 0xbb]) });
    expect(byteByByte(h)).toMatchObject({ state: 'done', length: h.length, header: { source: { address: '198.51.100.9' } } });
  });

  it('TLVs are skipped (the length field counts them)', () => {
    const tlv = Buffer.concat([Buffer.from([0x05, 0x00, 0x04]), Buffer.from('abcd')]);
    const h = proxyV2('10.0.0.5', { tlv });
    expect(parseProxyHeader(Buffer.concat([h, MQTT]))).toMatchObject({ state: 'done', length: 28 + tlv.length });
  });

  it('LOCAL (the proxy\'s health check): the real endpoints; its length is honoured even when not zero', () => {
    expect(parseProxyHeader(proxyV2(null))).toEqual({ state: 'done', length: 16, header: { version: 2, command: 'local' } });
    const withAddr = proxyV2('10.0.0.1', { verCmd: 0x20 });
    expect(parseProxyHeader(Buffer.concat([withAddr, MQTT]))).toEqual({ state: 'done', length: 28, header: { version: 2, command: 'local' } });
  });

  it('PROXY with UNSPEC, UNIX or UDP: accepted with the real endpoints (the UNSPEC fallback)', () => {
    for (const fam of [0x00, 0x31, 0x12]) {
      expect(parseProxyHeader(proxyV2('10.0.0.1', { fam }))).toMatchObject({ state: 'done', header: { command: 'local' } });
    }
  });

  it('refuses another version or command as soon as the 13th byte arrives', () => {
    expect(parseProxyHeader(Buffer.concat([V2_SIGNATURE, Buffer.from([0x11])])).state).toBe('invalid');
    expect(parseProxyHeader(Buffer.concat([V2_SIGNATURE, Buffer.from([0x22])])).state).toBe('invalid');
    expect(parseProxyHeader(Buffer.concat([V2_SIGNATURE, Buffer.from([0x21])])).state).toBe('more');
  });

  it('refuses undefined families and protocols, short address blocks and oversized headers', () => {
    expect(parseProxyHeader(proxyV2('10.0.0.1', { fam: 0x41 })).state).toBe('invalid');
    expect(parseProxyHeader(proxyV2('10.0.0.1', { fam: 0x13 })).state).toBe('invalid');
    const short = proxyV2('10.0.0.1');
    short.writeUInt16BE(8, 14);
    expect(parseProxyHeader(short).state).toBe('invalid');
    const big = proxyV2('10.0.0.1', { tlv: Buffer.alloc(V2_MAX) });
    expect(parseProxyHeader(big.subarray(0, 16)).state).toBe('invalid'); // refused before the bytes are buffered
  });
});

describe('neither', () => {
  it('MQTT, TLS or HTTP bytes are refused at the first byte that differs', () => {
    expect(parseProxyHeader(MQTT).state).toBe('invalid');
    expect(parseProxyHeader(Buffer.from([0x16, 0x03, 0x01])).state).toBe('invalid');
    expect(parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n')).state).toBe('invalid');
    expect(parseProxyHeader(Buffer.from('PROX')).state).toBe('more');
    expect(parseProxyHeader(Buffer.from([0x0d, 0x0a, 0x0d])).state).toBe('more');
  });
});
