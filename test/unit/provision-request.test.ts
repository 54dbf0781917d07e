/** Reading ThingsBoard provision requests and making device ids of device names (src/devices/provision-request.ts). */
import { describe, expect, it } from 'vitest';
import { chosenTokenProblem, deviceIdFromName, parseProvisionRequest, randomDeviceName } from '../../src/devices/provision-request.js';
import { DEVICE_ID_RE } from '../../src/devices/types.js';

const req = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));

describe('deviceIdFromName', () => {
  it.each([
    ['Cảm biến đất 01', 'cam-bien-dat-01'],
    ['Loa Đình làng', 'loa-dinh-lang'],
    ['A4:CF:12:34:56:78', 'a4-cf-12-34-56-78'],
    ['  --soil_7--  ', 'soil_7'],
    ['ESP32-C3 #12 (thôn Đông)', 'esp32-c3-12-thon-dong'],
    ['x'.repeat(80), 'x'.repeat(64)],
  ])('%s → %s', (name, id) => {
    expect(deviceIdFromName(name)).toBe(id);
    expect(DEVICE_ID_RE.test(id)).toBe(true);
  });

  it.each(['', '!!!', 'a', '日本語', '--'])('%j gives no usable id', (name) => {
    expect(deviceIdFromName(name)).toBeNull();
  });

  it('never ends a cut id with a separator', () => {
    expect(deviceIdFromName(`${'a'.repeat(63)} b`)).toBe('a'.repeat(63));
  });
});

describe('parseProvisionRequest', () => {
  it('reads the SDKs\' request', () => {
    expect(parseProvisionRequest(req({ deviceName: ' Pump 1 ', provisionDeviceKey: 'k', provisionDeviceSecret: 's' })))
      .toEqual({ ok: true, key: 'k', secret: 's', deviceName: 'Pump 1', credentialsType: 'ACCESS_TOKEN', token: null });
    expect(parseProvisionRequest(req({ provisionDeviceKey: 'k', provisionDeviceSecret: 's', token: 'T', credentialsType: 'ACCESS_TOKEN' })))
      .toMatchObject({ ok: true, deviceName: null, token: 'T' });
    expect(parseProvisionRequest(req({ provisionDeviceKey: 'k', provisionDeviceSecret: 's', credentialsType: 'MQTT_BASIC', username: 'u' })))
      .toMatchObject({ ok: true, credentialsType: 'MQTT_BASIC' });
  });

  it('missing key or secret, or absurdly long ones: missing_key (NOT_FOUND)', () => {
    for (const o of [{ provisionDeviceKey: 'k' }, { provisionDeviceSecret: 's' }, { provisionDeviceKey: '', provisionDeviceSecret: 's' },
      { provisionDeviceKey: 'k'.repeat(300), provisionDeviceSecret: 's' }]) {
      expect(parseProvisionRequest(req(o))).toMatchObject({ ok: false, reason: 'missing_key' });
    }
  });

  it('a blank or too long name is bad_name; not JSON or not an object is not_json', () => {
    expect(parseProvisionRequest(req({ deviceName: '   ', provisionDeviceKey: 'k', provisionDeviceSecret: 's' }))).toMatchObject({ ok: false, reason: 'bad_name' });
    expect(parseProvisionRequest(req({ deviceName: 'n'.repeat(129), provisionDeviceKey: 'k', provisionDeviceSecret: 's' }))).toMatchObject({ ok: false, reason: 'bad_name' });
    expect(parseProvisionRequest(req({ deviceName: { a: 1 }, provisionDeviceKey: 'k', provisionDeviceSecret: 's' }))).toMatchObject({ ok: false, reason: 'bad_name' });
    expect(parseProvisionRequest(Buffer.from('{"deviceName":'))).toMatchObject({ ok: false, reason: 'not_json' });
    expect(parseProvisionRequest(req([1, 2]))).toMatchObject({ ok: false, reason: 'not_json' });
  });

  it('a random name is already a device id', () => {
    for (let i = 0; i < 20; i++) {
      const n = randomDeviceName();
      expect(n).toMatch(/^[a-z0-9]{20}$/);
      expect(deviceIdFromName(n)).toBe(n);
    }
  });
});

describe('chosenTokenProblem', () => {
  it('takes a long printable token that no other login would claim', () => {
    expect(chosenTokenProblem('Factory-Token-0001-ABCDEF')).toBeNull();
    expect(chosenTokenProblem('A1b2C3d4E5f6G7h8I9j0')).toBeNull();
  });
  it.each([
    ['MY_TOKEN_123', /20 to 256/],
    ['x'.repeat(257), /20 to 256/],
    ['Factory Token 0001 ABCDEF', /printable ASCII/],
    ['factory-token-0001-abcdef', /device id/],
    ['kengt_ABCDEFGHIJKLMNOPQRSTUVWXYZ', /kengt_/],
  ])('refuses %j', (token, why) => {
    expect(chosenTokenProblem(token)).toMatch(why);
  });
});
