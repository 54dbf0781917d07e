/**
 * Play-now broadcasts through the API: every kind of bad body is refused clearly, an offline speaker is
 * tracked as `offline` (held until it reconnects), stop works, and roles are enforced.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

let t: TestApp;
const VIEWER = 'viewer-token-for-commune-c1-0001';
const SERVICE = 'service-token-for-province-p1-01';
const STREAM = { streamUrl: 'http://127.0.0.1:9/radio' };

beforeAll(async () => {
  t = await startTestApp({ broadcast: { streamHosts: ['127.0.0.1'] } }); // STREAM is on loopback: allowed explicitly
  t.app.authenticator.add({
    authenticate: (b) => (b === VIEWER ? { kind: 'token', id: 'v', role: 'viewer', areas: ['c1'] }
      : b === SERVICE ? { kind: 'token', id: 's', role: 'service', areas: ['p1'] } : null),
  });
  await seedAreas(t, [{ code: 'p1', name: 'Tỉnh', level: 'province' }, { code: 'c1', name: 'Xã', level: 'commune', parent: 'p1' }]);
  await seedDevices(t, [{ id: 'spk-1', kind: 'speaker', name: 'Loa thôn 1', area: 'c1' }, { id: 'soil-1', kind: 'sensor', name: 'Đất', area: 'c1' }]);
});
afterAll(async () => { await t?.stop(); });

describe('POST /api/v1/broadcasts refuses bad bodies clearly', () => {
  const cases: Array<[string, unknown, number, string, RegExp]> = [
    ['unknown area', { target: { areas: ['nope'] }, content: STREAM, durationSec: 60 }, 422, 'KENG_ERR_UNPROCESSABLE', /area "nope" does not exist/],
    ['unknown device', { target: { devices: ['ghost'] }, content: STREAM, durationSec: 60 }, 422, 'KENG_ERR_UNPROCESSABLE', /device "ghost" does not exist/],
    ['a sensor as target', { target: { devices: ['soil-1'] }, content: STREAM, durationSec: 60 }, 422, 'KENG_ERR_UNPROCESSABLE', /not a speaker/],
    ['unknown media', { target: { areas: ['c1'] }, content: { mediaId: 'nomedia' } }, 422, 'KENG_ERR_UNPROCESSABLE', /media "nomedia"/],
    ['two contents', { target: { areas: ['c1'] }, content: { mediaId: 'a', streamUrl: 'http://x' } }, 400, 'KENG_ERR_VALIDATION', /exactly one of/],
    ['non-http stream', { target: { areas: ['c1'] }, content: { streamUrl: 'ftp://x/y' }, durationSec: 60 }, 400, 'KENG_ERR_VALIDATION', /http/],
    ['volume out of range', { target: { areas: ['c1'] }, content: STREAM, durationSec: 60, volume: 150 }, 400, 'KENG_ERR_VALIDATION', /volume/],
    ['empty target', { target: {}, content: STREAM, durationSec: 60 }, 400, 'KENG_ERR_VALIDATION', /at least one area or device/],
    ['emergency outside alerts', { target: { areas: ['c1'] }, content: STREAM, durationSec: 60, priority: 'emergency' }, 400, 'KENG_ERR_VALIDATION', /reserved for alerts/],
  ];
  for (const [name, body, status, code, msg] of cases) {
    it(`${name} → ${status} ${code}`, async () => {
      const r = await t.api('POST', '/api/v1/broadcasts', body);
      expect(r.status).toBe(status);
      expect(r.body.error.code).toBe(code);
      expect(r.body.error.message).toMatch(msg);
    });
  }
});

describe('play now, offline speaker, stop, roles', () => {
  it('tracks an offline speaker as offline, then stops the broadcast', async () => {
    const r = await t.api('POST', '/api/v1/broadcasts', { target: { areas: ['c1'] }, content: STREAM, durationSec: 60, volume: 40 });
    expect(r.status).toBe(201);
    const id = r.body.id as string;
    const b = await t.api('GET', `/api/v1/broadcasts/${id}`);
    expect(b.status).toBe(200);
    expect(b.body.priority).toBe('normal');
    expect(b.body.startedAt).toMatch(/\+07:00$/);
    expect(b.body.targets).toEqual([expect.objectContaining({ deviceId: 'spk-1', state: 'offline' })]);
    const s = await t.api('POST', `/api/v1/broadcasts/${id}/stop`);
    expect(s.status).toBeLessThan(300);
    const after = await t.api('GET', `/api/v1/broadcasts/${id}`);
    expect(after.body.targets[0].state).toBe('stopped');
    expect((await t.api('POST', '/api/v1/broadcasts/nonexistent/stop')).status).toBe(404);
  });

  it('a viewer may not broadcast; a service token reads but does not write', async () => {
    expect((await t.api('POST', '/api/v1/broadcasts', { target: { areas: ['c1'] }, content: STREAM, durationSec: 60 }, VIEWER)).status).toBe(403);
    expect((await t.api('GET', '/api/v1/broadcasts', undefined, VIEWER)).status).toBe(403);
    expect((await t.api('POST', '/api/v1/broadcasts', { target: { areas: ['c1'] }, content: STREAM, durationSec: 60 }, SERVICE)).status).toBe(403);
    const list = await t.api('GET', '/api/v1/broadcasts', undefined, SERVICE);
    expect(list.status).toBe(200);
    expect(list.body.length).toBeGreaterThan(0);
  });
});
