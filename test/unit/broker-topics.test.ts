import { describe, expect, it } from 'vitest';
import { DeviceAcl, parseDeviceTopic, checkDeviceSubscription } from '../../src/broker/topics.js';
import type { DeviceIdentity } from '../../src/devices/types.js';

const secretDev: DeviceIdentity = { deviceId: 'soil-01', kind: 'sensor', area: 'a', viaToken: false };
const tokenDev: DeviceIdentity = { ...secretDev, viaToken: true };
const meDev: DeviceIdentity = { deviceId: 'me', kind: 'sensor', area: 'a', viaToken: false };

describe('parseDeviceTopic (publish ACL, device protocol §3 / §4)', () => {
  const table: [string, DeviceIdentity, unknown][] = [
    // own topics, either credential form
    ['v1/devices/soil-01/telemetry', secretDev, { type: 'telemetry' }],
    ['v1/devices/soil-01/attributes', secretDev, { type: 'attributes' }],
    ['v1/devices/soil-01/status', secretDev, { type: 'status' }],
    ['v1/devices/soil-01/events', secretDev, { type: 'events' }],
    ['v1/devices/soil-01/rpc/response/42', secretDev, { type: 'rpc.response', requestId: '42' }],
    ['v1/devices/soil-01/rpc/response/a-b_c.9', tokenDev, { type: 'rpc.response', requestId: 'a-b_c.9' }],
    ['v1/devices/soil-01/telemetry', tokenDev, { type: 'telemetry' }],
    // other device
    ['v1/devices/soil-02/telemetry', secretDev, 'other_device'],
    ['v1/devices/soil-02/telemetry', tokenDev, 'other_device'],
    ['v1/devices/soil-0/telemetry', secretDev, 'other_device'],
    ['v1/devices/soil-011/telemetry', secretDev, 'other_device'],
    // me topics need the token
    ['v1/devices/me/telemetry', secretDev, 'me_requires_token'],
    ['v1/devices/me/rpc/request/1', secretDev, 'me_requires_token'],
    ['v1/devices/me/telemetry', tokenDev, { type: 'telemetry' }],
    ['v1/devices/me/attributes', tokenDev, { type: 'attributes' }],
    ['v1/devices/me/status', tokenDev, { type: 'status' }],
    ['v1/devices/me/events', tokenDev, { type: 'events' }],
    ['v1/devices/me/rpc/response/7', tokenDev, { type: 'rpc.response', requestId: '7', viaMe: true }],
    // ThingsBoard client-side requests: token only
    ['v1/devices/me/rpc/request/3', tokenDev, { type: 'rpc.request', requestId: '3', viaMe: true }],
    ['v1/devices/me/attributes/request/4', tokenDev, { type: 'attributes.request', requestId: '4', viaMe: true }],
    // ThingsBoard claiming: taken for token devices (refused and recorded by ingest), forbidden otherwise.
    ['v1/devices/me/claim', tokenDev, { type: 'claim' }],
    ['v1/devices/soil-01/claim', tokenDev, { type: 'claim' }],
    ['v1/devices/soil-01/claim', secretDev, 'forbidden_topic'],
    ['v1/devices/me/claim/x', tokenDev, 'forbidden_topic'],
    ['v1/devices/soil-01/rpc/request/3', tokenDev, { type: 'rpc.request', requestId: '3' }],
    ['v1/devices/soil-01/attributes/request/4', tokenDev, { type: 'attributes.request', requestId: '4' }],
    ['v1/devices/soil-01/rpc/request/3', secretDev, 'forbidden_topic'],
    ['v1/devices/soil-01/attributes/request/4', secretDev, 'forbidden_topic'],
    // malformed own topics
    ['v1/devices/soil-01/telemetry/x', secretDev, 'forbidden_topic'],
    ['v1/devices/soil-01/telemetr', secretDev, 'forbidden_topic'],
    ['v1/devices/soil-01/', secretDev, 'forbidden_topic'],
    ['v1/devices/soil-01/attributes/response/1', tokenDev, 'forbidden_topic'],
    ['v1/devices/soil-01/rpc/response/', secretDev, 'bad_request_id'],
    ['v1/devices/soil-01/rpc/response/1/2', secretDev, 'bad_request_id'],
    ['v1/devices/soil-01/rpc/response/' + 'x'.repeat(129), secretDev, 'bad_request_id'],
    ['v1/devices/me/rpc/request/', tokenDev, 'bad_request_id'],
    ['v1/devices/soil-01/rpc/other', secretDev, 'forbidden_topic'],
    // reserved and foreign
    ['$SYS/broker/new/clients', secretDev, 'reserved_topic'],
    ['$SYS/x', tokenDev, 'reserved_topic'],
    ['$keng/dropped', secretDev, 'reserved_topic'],
    ['v2/devices/soil-01/telemetry', secretDev, 'unknown_topic'],
    ['telemetry', secretDev, 'unknown_topic'],
    ['/v1/devices/soil-01/telemetry', secretDev, 'unknown_topic'],
    // a device literally named "me" is itself
    ['v1/devices/me/telemetry', meDev, { type: 'telemetry' }],
  ];
  it.each(table)('%s (%o) → %o', (topic, identity, expected) => {
    expect(parseDeviceTopic(topic, identity)).toEqual(expected);
  });

  it('returns shared objects for fixed topics (no allocation per message)', () => {
    const acl = new DeviceAcl(secretDev);
    expect(acl.publish('v1/devices/soil-01/telemetry')).toBe(acl.publish('v1/devices/soil-01/telemetry'));
  });
});

describe('checkDeviceSubscription (subscribe ACL)', () => {
  const table: [string, DeviceIdentity, unknown][] = [
    ['v1/devices/soil-01/rpc/request/+', secretDev, { topic: 'v1/devices/soil-01/rpc/request/+', viaMe: false }],
    ['v1/devices/soil-01/rpc/request/17', secretDev, { topic: 'v1/devices/soil-01/rpc/request/17', viaMe: false }],
    ['v1/devices/soil-01/rpc/request/#', secretDev, 'bad_request_id'],
    ['v1/devices/soil-01/rpc/request/', secretDev, 'bad_request_id'],
    ['v1/devices/soil-01/#', secretDev, 'forbidden_topic'],
    ['v1/devices/soil-01/telemetry', secretDev, 'forbidden_topic'],
    ['v1/devices/soil-01/attributes', secretDev, 'forbidden_topic'],
    ['v1/devices/soil-02/rpc/request/+', secretDev, 'other_device'],
    ['v1/devices/+/rpc/request/+', secretDev, 'other_device'],
    ['v1/devices/#', secretDev, 'other_device'],
    ['#', secretDev, 'unknown_topic'],
    ['+/devices/soil-01/rpc/request/+', secretDev, 'unknown_topic'],
    ['$SYS/#', secretDev, 'reserved_topic'],
    ['$keng/dropped', tokenDev, 'reserved_topic'],
    // ThingsBoard SDK subscriptions: all granted for token devices, rewritten to the real id
    ['v1/devices/me/attributes', tokenDev, { topic: 'v1/devices/soil-01/attributes', viaMe: true }],
    ['v1/devices/me/attributes/response/+', tokenDev, { topic: 'v1/devices/soil-01/attributes/response/+', viaMe: true }],
    ['v1/devices/me/rpc/request/+', tokenDev, { topic: 'v1/devices/soil-01/rpc/request/+', viaMe: true }],
    ['v1/devices/me/rpc/response/+', tokenDev, { topic: 'v1/devices/soil-01/rpc/response/+', viaMe: true }],
    ['v1/devices/soil-01/attributes', tokenDev, { topic: 'v1/devices/soil-01/attributes', viaMe: false }],
    ['v1/devices/me/#', tokenDev, 'forbidden_topic'],
    ['v1/devices/me/telemetry', tokenDev, 'forbidden_topic'],
    ['v1/devices/me/attributes/+', tokenDev, 'forbidden_topic'],
    ['v1/devices/me/rpc/request/+', secretDev, 'me_requires_token'],
    ['v1/devices/me/rpc/request/+', meDev, { topic: 'v1/devices/me/rpc/request/+', viaMe: false }],
  ];
  it.each(table)('%s (%o) → %o', (filter, identity, expected) => {
    expect(checkDeviceSubscription(filter, identity)).toEqual(expected);
  });

  it('a device whose id is as long as "me" is not confused with me', () => {
    const ab: DeviceIdentity = { deviceId: 'ab', kind: 'sensor', area: 'a', viaToken: true };
    expect(checkDeviceSubscription('v1/devices/ab/rpc/request/+', ab)).toEqual({ topic: 'v1/devices/ab/rpc/request/+', viaMe: false });
    expect(checkDeviceSubscription('v1/devices/me/rpc/request/+', ab)).toEqual({ topic: 'v1/devices/ab/rpc/request/+', viaMe: true });
  });
});

describe('DeviceAcl.forward (delivery)', () => {
  it('delivers only own topics, rewritten to me when subscribed via me', () => {
    const acl = new DeviceAcl(tokenDev);
    expect(acl.forward('v1/devices/soil-01/rpc/request/5', false)).toBe('v1/devices/soil-01/rpc/request/5');
    expect(acl.forward('v1/devices/soil-01/rpc/request/5', true)).toBe('v1/devices/me/rpc/request/5');
    expect(acl.forward('v1/devices/me/rpc/request/5', true)).toBe('v1/devices/me/rpc/request/5');
    expect(acl.forward('v1/devices/soil-02/rpc/request/5', true)).toBeNull();
    expect(acl.forward('$SYS/x/heartbeat', false)).toBeNull();
    expect(new DeviceAcl(secretDev).forward('v1/devices/me/rpc/request/5', false)).toBeNull();
  });
});

describe('ThingsBoard OTA topics (device protocol §13.6)', () => {
  it('v2/fw/request/{n}/chunk/{k} is a firmware request with decimal n and k; anything else under it is refused', () => {
    expect(parseDeviceTopic('v2/fw/request/3/chunk/17', tokenDev)).toEqual({ type: 'fw.request', requestId: '3', chunk: 17 });
    expect(parseDeviceTopic('v2/fw/request/0/chunk/0', secretDev)).toEqual({ type: 'fw.request', requestId: '0', chunk: 0 });
    for (const t of ['v2/fw/request/x/chunk/1', 'v2/fw/request/1/chunk/', 'v2/fw/request/1/chunk/1/2', 'v2/fw/request/1234567890/chunk/1', 'v2/fw/request/+/chunk/1']) {
      expect(parseDeviceTopic(t, tokenDev), t).toBe('bad_request_id');
    }
    expect(parseDeviceTopic('v2/fw/response/1/chunk/0', tokenDev)).toBe('unknown_topic');
    expect(parseDeviceTopic('v2/fw/error', tokenDev)).toBe('unknown_topic');
  });

  it('the SDKs\' answer filters are granted as they are; other v2/fw filters are refused', () => {
    for (const f of ['v2/fw/response/+', 'v2/fw/response/#', 'v2/fw/response/+/chunk/+', 'v2/fw/error']) {
      expect(checkDeviceSubscription(f, tokenDev), f).toEqual({ topic: f, viaMe: false });
    }
    for (const f of ['v2/fw/#', 'v2/fw/request/+/chunk/+', 'v2/#', 'v2/fw/response/1/chunk/+']) {
      expect(checkDeviceSubscription(f, tokenDev), f).toBe(f.startsWith('v2/fw/') ? 'forbidden_topic' : 'unknown_topic');
    }
  });

  it('v2/fw/ answers pass delivery (only ever written to the requesting connection)', () => {
    const acl = new DeviceAcl(tokenDev);
    expect(acl.forward('v2/fw/response/1/chunk/0', true)).toBe('v2/fw/response/1/chunk/0');
    expect(acl.forward('v2/fw/error', false)).toBe('v2/fw/error');
  });
});
