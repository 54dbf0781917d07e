/** Gateway topics in the device ACL (firmware-protocols/gateway.md) and sub-device ids. */
import { describe, expect, it } from 'vitest';
import { DeviceAcl } from '../../src/broker/topics.js';
import type { DeviceIdentity } from '../../src/devices/types.js';
import { DEVICE_ID_RE } from '../../src/devices/types.js';
import { subDeviceId, validSubDeviceName } from '../../src/gateway/names.js';

const gw: DeviceIdentity = { deviceId: 'gw-1', kind: 'gateway', area: 'a', viaToken: true };
const sensor: DeviceIdentity = { deviceId: 'soil-1', kind: 'sensor', area: 'a', viaToken: true };

describe('gateway topics', () => {
  it('a gateway publishes the ThingsBoard gateway API; other devices cannot', () => {
    const acl = new DeviceAcl(gw);
    expect(acl.publish('v1/gateway/connect')).toEqual({ type: 'gateway.connect' });
    expect(acl.publish('v1/gateway/disconnect')).toEqual({ type: 'gateway.disconnect' });
    expect(acl.publish('v1/gateway/telemetry')).toEqual({ type: 'gateway.telemetry' });
    expect(acl.publish('v1/gateway/attributes')).toEqual({ type: 'gateway.attributes' });
    expect(acl.publish('v1/gateway/attributes/request')).toEqual({ type: 'gateway.attributes.request' });
    expect(acl.publish('v1/gateway/rpc')).toEqual({ type: 'gateway.rpc' });
    expect(acl.publish('v1/gateway/claim')).toEqual({ type: 'gateway.claim' });
    expect(acl.publish('v1/gateway/other')).toBe('forbidden_topic');
    expect(acl.publish('v1/gateway/telemetry/x')).toBe('forbidden_topic');
    expect(acl.publish('v1/devices/gw-1/gateway/rpc')).toBe('forbidden_topic');
    expect(acl.publish('v1/devices/me/telemetry')).toEqual({ type: 'telemetry' });
    expect(new DeviceAcl(sensor).publish('v1/gateway/telemetry')).toBe('unknown_topic');
  });

  it('its subscriptions are kept per gateway and delivered back as v1/gateway/...', () => {
    const acl = new DeviceAcl(gw);
    expect(acl.subscribe('v1/gateway/rpc')).toEqual({ topic: 'v1/devices/gw-1/gateway/rpc', viaMe: false });
    expect(acl.subscribe('v1/gateway/attributes')).toEqual({ topic: 'v1/devices/gw-1/gateway/attributes', viaMe: false });
    expect(acl.subscribe('v1/gateway/attributes/response')).toEqual({ topic: 'v1/devices/gw-1/gateway/attributes/response', viaMe: false });
    expect(acl.subscribe('v1/gateway/#')).toBe('forbidden_topic');
    expect(acl.subscribe('v1/gateway/telemetry')).toBe('forbidden_topic');
    expect(acl.subscribe('v1/devices/gw-1/gateway/rpc')).toBe('forbidden_topic');
    expect(new DeviceAcl(sensor).subscribe('v1/gateway/rpc')).toBe('unknown_topic');
    expect(acl.forward('v1/devices/gw-1/gateway/rpc', false)).toBe('v1/gateway/rpc');
    expect(acl.forward('v1/devices/gw-1/gateway/rpc', true)).toBe('v1/gateway/rpc');
    expect(acl.forward('v1/devices/gw-2/gateway/rpc', false)).toBeNull();
    expect(new DeviceAcl(sensor).forward('v1/devices/soil-1/gateway/rpc', false)).toBe('v1/devices/soil-1/gateway/rpc');
  });
});

describe('sub-device ids', () => {
  it('are deterministic, valid device ids, and differ for names that fold alike', () => {
    for (const name of ['Trạm bơm 1', 'Đồng hồ nước', 'Dev A', 'dev-a', '温度计', '   x', 'a'.repeat(200), '--', 'Soil Sensor #2']) {
      const id = subDeviceId(name);
      expect(id, name).toMatch(DEVICE_ID_RE);
      expect(subDeviceId(name)).toBe(id);
    }
    expect(subDeviceId('Trạm bơm 1')).toMatch(/^tram-bom-1-[0-9a-f]{10}$/);
    expect(subDeviceId('Đồng hồ nước')).toMatch(/^dong-ho-nuoc-/);
    expect(subDeviceId('温度计')).toMatch(/^sub-[0-9a-f]{10}$/);
    expect(subDeviceId('Dev A')).not.toBe(subDeviceId('dev-a'));
  });

  it('names: 1..200 characters, not blank, no control characters', () => {
    expect(validSubDeviceName('Dev A')).toBe(true);
    expect(validSubDeviceName('')).toBe(false);
    expect(validSubDeviceName('   ')).toBe(false);
    expect(validSubDeviceName('a\nb')).toBe(false);
    expect(validSubDeviceName('a'.repeat(201))).toBe(false);
    expect(validSubDeviceName(5)).toBe(false);
  });
});
