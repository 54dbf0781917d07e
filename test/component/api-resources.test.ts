/**
 * Areas, devices and telemetry history through the API server alone (fakes
 * for registry, store and broker): shapes per the spec, times in the
 * configured zone, role and area scoping.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Authenticator, Principal } from '../../src/auth/index.js';
import { harness, type Harness } from './api-fakes.js';
import { seedAreas } from '../helpers/seed.js';

const T0 = Date.parse('2025-11-30T12:00:00Z'); // the fake clock's now: 19:00 in Vietnam
const PRINCIPALS: Record<string, Principal> = {
  'viewer-c1': { kind: 'user', id: 'farmer', role: 'viewer', areas: ['C1'] },
  'operator-c1': { kind: 'user', id: 'staff', role: 'operator', areas: ['C1'] },
  'service-p1': { kind: 'token', id: 'ioc', role: 'service', areas: ['P1'] },
  'viewer-none': { kind: 'user', id: 'nobody', role: 'viewer', areas: [] },
};
const users: Authenticator = { authenticate: (t) => PRINCIPALS[t] ?? null };

let h: Harness;
beforeEach(async () => {
  h = await harness({}, { now: T0, authenticators: [users] });
  // P1 → C1 → V1, P1 → C2
  await seedAreas(h, [
    { code: 'P1', name: 'Tỉnh Một', level: 'province' }, { code: 'C1', name: 'Xã Một', level: 'commune', parent: 'P1' },
    { code: 'V1', name: 'Thôn Một', level: 'village', parent: 'C1' }, { code: 'C2', name: 'Xã Hai', level: 'commune', parent: 'P1' },
  ]);
});
afterEach(async () => { await h.close(); });

const addDevice = async (id: string, area: string, kind = 'sensor', token?: string) =>
  h.inject('POST', '/api/v1/devices', { id, kind, name: `Device ${id}`, area }, token);

describe('areas', () => {
  it('POST creates an area: 201 with createdAt in the configured zone', async () => {
    const r = await h.inject('POST', '/api/v1/areas', { code: '00004', name: 'Thôn 4', level: 'village', parent: 'C2' });
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ code: '00004', name: 'Thôn 4', level: 'village', parent: 'C2', createdAt: '2025-11-30T19:00:00.000+07:00' });
    expect(r.headers.location).toBe('/api/v1/areas/00004');
  });

  it('refuses duplicates (409), bad levels (400) and non-admins (403)', async () => {
    let r = await h.inject('POST', '/api/v1/areas', { code: 'C1', name: 'again', level: 'commune', parent: 'P1' });
    expect([r.status, r.body.error.code]).toEqual([409, 'KENG_ERR_AREA_EXISTS']);
    r = await h.inject('POST', '/api/v1/areas', { code: 'D1', name: 'x', level: 'district', parent: 'P1' });
    expect([r.status, r.body.error.code]).toEqual([400, 'KENG_ERR_VALIDATION']);
    expect(r.body.error.details).toEqual([{ in: 'body', field: 'level', message: 'must be one of: province, commune, village' }]);
    r = await h.inject('POST', '/api/v1/areas', { code: 'bad code', name: 'x', level: 'province' });
    expect(r.body.error.details[0].field).toBe('code');
    r = await h.inject('POST', '/api/v1/areas', { code: 'V9', name: 'x', level: 'village', parent: 'C1' }, 'operator-c1');
    expect([r.status, r.body.error.code]).toEqual([403, 'KENG_ERR_FORBIDDEN']);
  });

  it('GET lists areas, optionally the children of one (?parent=) or the top level (?parent=)', async () => {
    const all = await h.inject('GET', '/api/v1/areas');
    expect(all.status).toBe(200);
    expect(all.body.map((a: { code: string }) => a.code)).toEqual(['P1', 'C1', 'V1', 'C2']);
    expect((await h.inject('GET', '/api/v1/areas?parent=P1')).body.map((a: { code: string }) => a.code)).toEqual(['C1', 'C2']);
    expect((await h.inject('GET', '/api/v1/areas?parent=')).body.map((a: { code: string }) => a.code)).toEqual(['P1']);
  });

  it('non-admins see only their areas\' subtrees', async () => {
    expect((await h.inject('GET', '/api/v1/areas', undefined, 'viewer-c1')).body.map((a: { code: string }) => a.code)).toEqual(['C1', 'V1']);
    expect((await h.inject('GET', '/api/v1/areas', undefined, 'service-p1')).body).toHaveLength(4);
    expect((await h.inject('GET', '/api/v1/areas', undefined, 'viewer-none')).body).toEqual([]);
  });
});

describe('devices', () => {
  it('POST registers a device: 201 with the view, secret and accessToken', async () => {
    const r = await h.inject('POST', '/api/v1/devices', { id: 'soil-01', kind: 'sensor', name: 'Ruộng A', area: 'V1', location: { lat: 10.03, lon: 105.78 }, model: 'SM-1' });
    expect(r.status).toBe(201);
    expect(r.body).toEqual({
      id: 'soil-01', kind: 'sensor', name: 'Ruộng A', area: 'V1', location: { lat: 10.03, lon: 105.78 }, model: 'SM-1',
      enabled: true, online: false, lastSeen: null, attributes: {}, latest: {},
      secret: expect.stringMatching(/.{16,}/), accessToken: expect.stringMatching(/.{16,}/),
    });
    expect(r.headers.location).toBe('/api/v1/devices/soil-01');
  });

  it('GET /devices/{id}: exactly the spec shape (plus location and model), times in +07:00, no credentials', async () => {
    await addDevice('spk-1', 'C1', 'speaker');
    h.registry.setOnline('spk-1', true, Date.parse('2025-11-30T11:59:00Z'));
    h.registry.mergeAttributes('spk-1', { firmware: '1.2.0', capabilities: ['mp3'] });
    h.registry.updateLatest('spk-1', Date.parse('2025-11-30T11:58:30.250Z'), { volume: 70, playing: false, power_source: 'solar' });
    const r = await h.inject('GET', '/api/v1/devices/spk-1');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      id: 'spk-1', kind: 'speaker', name: 'Device spk-1', area: 'C1', location: null, model: null,
      enabled: true, online: true, lastSeen: '2025-11-30T18:59:00.000+07:00',
      attributes: { firmware: '1.2.0', capabilities: ['mp3'] },
      latest: {
        volume: { ts: '2025-11-30T18:58:30.250+07:00', value: 70 },
        playing: { ts: '2025-11-30T18:58:30.250+07:00', value: false },
        power_source: { ts: '2025-11-30T18:58:30.250+07:00', value: 'solar' },
      },
    });
  });

  it('refuses duplicates (409), unknown areas (422) and unknown ids (404)', async () => {
    await addDevice('d-1', 'C1');
    let r = await addDevice('d-1', 'C1');
    expect([r.status, r.body.error.code]).toEqual([409, 'KENG_ERR_DEVICE_EXISTS']);
    r = await addDevice('d-2', 'ZZ');
    expect([r.status, r.body.error.code]).toEqual([422, 'KENG_ERR_UNPROCESSABLE']);
    r = await h.inject('GET', '/api/v1/devices/nope');
    expect([r.status, r.body.error.code]).toEqual([404, 'KENG_ERR_NOT_FOUND']);
  });

  it('GET /devices filters by area (subtree), kind and online', async () => {
    await addDevice('s-c1', 'C1');
    await addDevice('s-v1', 'V1');
    await addDevice('k-v1', 'V1', 'speaker');
    await addDevice('s-c2', 'C2');
    h.registry.setOnline('k-v1', true, T0);
    const ids = async (q: string) => (await h.inject('GET', `/api/v1/devices${q}`)).body.map((d: { id: string }) => d.id).sort();
    expect(await ids('')).toEqual(['k-v1', 's-c1', 's-c2', 's-v1']);
    expect(await ids('?area=C1')).toEqual(['k-v1', 's-c1', 's-v1']);
    expect(await ids('?area=V1&kind=sensor')).toEqual(['s-v1']);
    expect(await ids('?online=true')).toEqual(['k-v1']);
    expect(await ids('?online=false&area=P1')).toEqual(['s-c1', 's-c2', 's-v1']);
    const one = (await h.inject('GET', '/api/v1/devices?kind=speaker')).body[0];
    expect(Object.keys(one).sort()).toEqual(['area', 'attributes', 'enabled', 'id', 'kind', 'lastSeen', 'latest', 'location', 'model', 'name', 'online']);
  });

  it('DELETE removes the device (204), disconnects it from the broker, then 404', async () => {
    await addDevice('gone-1', 'C1');
    const r = await h.inject('DELETE', '/api/v1/devices/gone-1');
    expect(r.status).toBe(204);
    expect(r.text).toBe('');
    expect(h.broker.kicked).toEqual(['gone-1']);
    expect((await h.inject('GET', '/api/v1/devices/gone-1')).status).toBe(404);
    expect((await h.inject('DELETE', '/api/v1/devices/gone-1')).body.error.code).toBe('KENG_ERR_NOT_FOUND');
  });
});

describe('devices: roles and areas', () => {
  beforeEach(async () => {
    await addDevice('in-c1', 'V1');
    await addDevice('in-c2', 'C2');
  });

  it('a viewer lists and reads devices of their areas only; others are 404 (existence does not leak)', async () => {
    expect((await h.inject('GET', '/api/v1/devices', undefined, 'viewer-c1')).body.map((d: { id: string }) => d.id)).toEqual(['in-c1']);
    expect((await h.inject('GET', '/api/v1/devices?area=P1', undefined, 'viewer-c1')).body.map((d: { id: string }) => d.id)).toEqual(['in-c1']);
    expect((await h.inject('GET', '/api/v1/devices/in-c1', undefined, 'viewer-c1')).status).toBe(200);
    const other = await h.inject('GET', '/api/v1/devices/in-c2', undefined, 'viewer-c1');
    const missing = await h.inject('GET', '/api/v1/devices/no-such', undefined, 'viewer-c1');
    expect([other.status, other.body.error.code]).toEqual([404, 'KENG_ERR_NOT_FOUND']);
    expect(missing.status).toBe(404);
    expect((await h.inject('GET', '/api/v1/devices', undefined, 'viewer-none')).body).toEqual([]);
  });

  it('a viewer may not register or delete devices (403)', async () => {
    const r = await addDevice('v-new', 'V1', 'sensor', 'viewer-c1');
    expect([r.status, r.body.error.code]).toEqual([403, 'KENG_ERR_FORBIDDEN']);
    const d = await h.inject('DELETE', '/api/v1/devices/in-c1', undefined, 'viewer-c1');
    expect([d.status, d.body.error.code]).toEqual([403, 'KENG_ERR_FORBIDDEN']);
    expect(h.registry.getDevice('in-c1')).toBeDefined();
  });

  it('an operator manages devices within their areas only', async () => {
    expect((await addDevice('op-new', 'V1', 'speaker', 'operator-c1')).status).toBe(201);
    const outside = await addDevice('op-out', 'C2', 'speaker', 'operator-c1');
    expect([outside.status, outside.body.error.code]).toEqual([403, 'KENG_ERR_FORBIDDEN']);
    expect((await h.inject('DELETE', '/api/v1/devices/in-c2', undefined, 'operator-c1')).status).toBe(404);
    expect(h.registry.getDevice('in-c2')).toBeDefined();
    expect((await h.inject('DELETE', '/api/v1/devices/op-new', undefined, 'operator-c1')).status).toBe(204);
  });

  it('a service token reads everything in its province but changes nothing', async () => {
    expect((await h.inject('GET', '/api/v1/devices', undefined, 'service-p1')).body).toHaveLength(2);
    expect((await h.inject('GET', '/api/v1/devices/in-c2/telemetry', undefined, 'service-p1')).status).toBe(200);
    expect((await addDevice('svc', 'C1', 'sensor', 'service-p1')).status).toBe(403);
  });
});

describe('telemetry history', () => {
  const at = (iso: string) => Date.parse(iso);
  beforeEach(async () => {
    await addDevice('soil-1', 'V1');
    await addDevice('soil-2', 'C2');
    await h.store.writeBatch([
      { deviceId: 'soil-1', kind: 'sensor', ts: at('2025-11-30T10:00:00Z'), values: { soil_moisture: 30, temperature: 24 } },
      { deviceId: 'soil-1', kind: 'sensor', ts: at('2025-11-30T10:20:00Z'), values: { soil_moisture: 32 } },
      { deviceId: 'soil-1', kind: 'sensor', ts: at('2025-11-30T11:10:00Z'), values: { soil_moisture: 34, temperature: 26 } },
      { deviceId: 'soil-1', kind: 'sensor', ts: at('2025-11-28T10:00:00Z'), values: { soil_moisture: 99 } },
    ]);
  });

  it('raw points of the last 24 h by default, in time order, times in +07:00', async () => {
    const r = await h.inject('GET', '/api/v1/devices/soil-1/telemetry');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      deviceId: 'soil-1',
      points: [
        { ts: '2025-11-30T17:00:00.000+07:00', values: { soil_moisture: 30, temperature: 24 } },
        { ts: '2025-11-30T17:20:00.000+07:00', values: { soil_moisture: 32 } },
        { ts: '2025-11-30T18:10:00.000+07:00', values: { soil_moisture: 34, temperature: 26 } },
      ],
    });
    expect(h.store.queries.at(-1)).toEqual({ deviceId: 'soil-1', fields: [], from: T0 - 86_400_000, to: T0, limit: 10_001 });
  });

  it('fields, from and to (ISO with offset, "+" unencoded, or epoch ms)', async () => {
    const r = await h.inject('GET', '/api/v1/devices/soil-1/telemetry?fields=temperature,%20soil_moisture,temperature&from=2025-11-30T17:10:00%2B07:00&to=2025-11-30T11:30:00Z');
    expect(r.body.points).toEqual([
      { ts: '2025-11-30T17:20:00.000+07:00', values: { soil_moisture: 32 } },
      { ts: '2025-11-30T18:10:00.000+07:00', values: { soil_moisture: 34, temperature: 26 } },
    ]);
    expect(h.store.queries.at(-1)).toMatchObject({ fields: ['temperature', 'soil_moisture'], from: at('2025-11-30T10:10:00Z'), to: at('2025-11-30T11:30:00Z') });
    const plus = await h.inject('GET', '/api/v1/devices/soil-1/telemetry?from=2025-11-28T00:00:00+07:00&to=1764460800000');
    expect(plus.status).toBe(200);
    expect(h.store.queries.at(-1)).toMatchObject({ from: at('2025-11-27T17:00:00Z'), to: 1764460800000 });
    expect(plus.body.points).toEqual([{ ts: '2025-11-28T17:00:00.000+07:00', values: { soil_moisture: 99 } }]);
  });

  it('with every: one point per window, agg mean by default, or the given agg', async () => {
    let r = await h.inject('GET', '/api/v1/devices/soil-1/telemetry?fields=soil_moisture&every=1h');
    expect(r.body.points).toEqual([
      { ts: '2025-11-30T17:00:00.000+07:00', values: { soil_moisture: 31 } },
      { ts: '2025-11-30T18:00:00.000+07:00', values: { soil_moisture: 34 } },
    ]);
    expect(h.store.queries.at(-1)).toMatchObject({ everyMs: 3_600_000, agg: 'mean' });
    r = await h.inject('GET', '/api/v1/devices/soil-1/telemetry?fields=soil_moisture&every=1d&agg=count');
    expect(r.body.points).toEqual([{ ts: '2025-11-30T07:00:00.000+07:00', values: { soil_moisture: 3 } }]);
    expect(h.store.queries.at(-1)).toMatchObject({ everyMs: 86_400_000, agg: 'count' });
  });

  it('pages raw points beyond limit with nextFrom', async () => {
    const first = await h.inject('GET', '/api/v1/devices/soil-1/telemetry?limit=2');
    expect(first.body.points).toHaveLength(2);
    expect(first.body.nextFrom).toBe('2025-11-30T17:20:00.001+07:00');
    const next = await h.inject('GET', `/api/v1/devices/soil-1/telemetry?limit=2&from=${encodeURIComponent(first.body.nextFrom)}`);
    expect(next.body.points.map((p: { ts: string }) => p.ts)).toEqual(['2025-11-30T18:10:00.000+07:00']);
    expect(next.body.nextFrom).toBeUndefined();
  });

  it.each([
    ['from=yesterday', 'KENG_ERR_BAD_TIME'],
    ['to=2025-11-30T10:00:00', 'KENG_ERR_BAD_TIME'],
    ['from=1764500000000&to=1764400000000', 'KENG_ERR_VALIDATION'],
    ['every=5x', 'KENG_ERR_BAD_WINDOW'],
    ['every=500ms', 'KENG_ERR_BAD_WINDOW'],
    ['every=1s', 'KENG_ERR_WINDOW_TOO_LARGE'],
    ['every=1m&from=0', 'KENG_ERR_WINDOW_TOO_LARGE'],
    ['agg=max', 'KENG_ERR_VALIDATION'],
    ['every=1h&agg=median', 'KENG_ERR_VALIDATION'],
    ['fields=Soil-Moisture', 'KENG_ERR_VALIDATION'],
    ['limit=0', 'KENG_ERR_VALIDATION'],
    ['limit=10001', 'KENG_ERR_VALIDATION'],
  ])('?%s → 400 %s', async (q, code) => {
    const r = await h.inject('GET', `/api/v1/devices/soil-1/telemetry?${q}`);
    expect([r.status, r.body.error.code]).toEqual([400, code]);
  });

  it('unknown devices and devices outside the caller\'s areas: 404', async () => {
    expect((await h.inject('GET', '/api/v1/devices/nope/telemetry')).status).toBe(404);
    expect((await h.inject('GET', '/api/v1/devices/soil-2/telemetry', undefined, 'viewer-c1')).status).toBe(404);
    expect((await h.inject('GET', '/api/v1/devices/soil-1/telemetry', undefined, 'viewer-c1')).status).toBe(200);
  });

  it('a store outage: 503 KENG_ERR_STORE_UNAVAILABLE', async () => {
    h.store.failQueries = true;
    const r = await h.inject('GET', '/api/v1/devices/soil-1/telemetry');
    expect([r.status, r.body.error.code]).toEqual([503, 'KENG_ERR_STORE_UNAVAILABLE']);
  });
});
