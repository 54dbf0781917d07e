/** Address classes behind the stream-URL check and the loopback exemption of connection limits. */
import { describe, expect, it } from 'vitest';
import { HostAllowList } from '../../src/core/host-allow-list.js';
import { AddressSet, isLoopback, nonPublicClass, normalizeIp } from '../../src/core/net-ranges.js';

describe('nonPublicClass', () => {
  it.each([
    ['127.0.0.1', 'loopback'], ['127.255.0.9', 'loopback'], ['::1', 'loopback'], ['::ffff:127.0.0.1', 'loopback'], ['::ffff:7f00:1', 'loopback'],
    ['0.0.0.0', 'unspecified'], ['::', 'unspecified'], ['10.1.2.3', 'private'], ['172.31.255.255', 'private'], ['192.168.0.1', 'private'],
    ['100.64.0.1', 'shared address space (CGNAT)'], ['100.127.255.254', 'shared address space (CGNAT)'], ['169.254.169.254', 'link-local'],
    ['fe80::1', 'link-local'], ['fd12:3456::1', 'unique local (private)'], ['fc00::1', 'unique local (private)'], ['64:ff9b::10.0.0.1', 'private'],
    ['224.0.0.1', 'multicast'], ['255.255.255.255', 'reserved'], ['[::1]', 'loopback'], ['fe80::1%eth0', 'link-local'],
  ])('%s is %s', (ip, what) => expect(nonPublicClass(ip)).toBe(what));

  it.each(['8.8.8.8', '172.32.0.1', '100.128.0.1', '203.0.113.10', '2001:4860:4860::8888', '::ffff:8.8.8.8', 'not-an-ip'])('%s is public (or no address)', (ip) => {
    expect(nonPublicClass(ip)).toBeNull();
  });
});

describe('isLoopback, normalizeIp, AddressSet', () => {
  it('loopback in every spelling; nothing else', () => {
    for (const ip of ['127.0.0.1', '::1', '::ffff:127.0.0.1', '127.8.9.10']) expect(isLoopback(ip), ip).toBe(true);
    for (const ip of ['10.0.0.1', '::2', undefined, '']) expect(isLoopback(ip)).toBe(false);
    expect(normalizeIp('::FFFF:192.168.1.1')).toBe('192.168.1.1');
  });

  it('addresses and ranges, both families; bad entries refused', () => {
    const set = new AddressSet();
    for (const e of ['192.168.1.20', '10.10.0.0/16', 'fd00::/8', '[fd00::5]']) expect(set.add(e), e).toBe(true);
    for (const e of ['10.0.0.0/33', '10.0.0.0/8/1', 'radio.vn', '::/129', '10.0.0.0/x']) expect(set.add(e), e).toBe(false);
    expect(set.has('192.168.1.20')).toBe(true);
    expect(set.has('::ffff:192.168.1.20')).toBe(true);
    expect(set.has('192.168.1.21')).toBe(false);
    expect(set.has('10.10.200.1')).toBe(true);
    expect(set.has('fd12::1')).toBe(true);
  });
});

describe('HostAllowList', () => {
  it('names, *.domain (subdomains only), addresses, "*"; empty means any public host', () => {
    const r = HostAllowList.parse(['Radio.VOV.vn.', '*.example.vn', '192.168.1.20', 'radio.xã.vn']);
    expect(r.ok).toBe(true);
    const l = (r as { list: HostAllowList }).list;
    expect(l.anyPublic).toBe(false);
    expect(l.listsName('radio.vov.vn')).toBe(true);
    expect(l.listsName('a.b.example.vn')).toBe(true);
    expect(l.listsName('example.vn')).toBe(false);
    expect(l.listsName('radio.xn--x-yfa.vn')).toBe(true);
    expect(l.listsName('evilexample.vn')).toBe(false);
    expect((HostAllowList.parse([]) as { list: HostAllowList }).list.anyPublic).toBe(true);
    expect(HostAllowList.parse(['10.0.0.0/33'])).toEqual({ ok: false, bad: '10.0.0.0/33' });
  });
});
