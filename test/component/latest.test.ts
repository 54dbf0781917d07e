/** IOC snapshot: GET /api/v1/telemetry/latest (JSON and GeoJSON), scoped to the caller's areas. */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, publish, end } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

let t: TestApp;
const IOC_TOKEN = 'ioc-service-token-for-province-p1';

beforeAll(async () => {
  t = await startTestApp();
  // A service principal scoped to province p1 (the accounts module issues real ones; here the chain gets a fixed one).
  t.app.authenticator.add({ authenticate: (b) => (b === IOC_TOKEN ? { kind: 'token', id: 'ioc', role: 'service', areas: ['p1'] } : null) });
  await seedAreas(t, [
    { code: 'p1', name: 'Tỉnh 1', level: 'province' }, { code: 'c1', name: 'Xã 1', level: 'commune', parent: 'p1' },
    { code: 'p2', name: 'Tỉnh 2', level: 'province' },
  ]);
  const creds = await seedDevices(t, [
    { id: 'rain-1', kind: 'sensor', name: 'Mưa 1', area: 'c1', location: { lat: 21.03, lon: 105.85 } },
    { id: 'spk-1', kind: 'speaker', name: 'Loa 1', area: 'c1' },
    { id: 'far-1', kind: 'sensor', name: 'Xa', area: 'p2', location: { lat: 10, lon: 106 } },
  ]);
  const c = await connectDevice(t.mqttUrl, 'rain-1', creds['rain-1']!.secret);
  await publish(c, 'v1/devices/rain-1/telemetry', JSON.stringify({ rain_mm: 4.5 }));
  await end(c);
});
afterAll(async () => { await t?.stop(); });

describe('GET /api/v1/telemetry/latest', () => {
  it('lists every device in scope with online, lastSeen, location and latest', async () => {
    const r = await t.api('GET', '/api/v1/telemetry/latest', undefined, IOC_TOKEN);
    expect(r.status).toBe(200);
    expect(r.body.count).toBe(2);
    const ids = r.body.devices.map((d: any) => d.id).sort();
    expect(ids).toEqual(['rain-1', 'spk-1']); // far-1 (province p2) is outside the token's scope
    const rain = r.body.devices.find((d: any) => d.id === 'rain-1');
    expect(rain.latest.rain_mm.value).toBe(4.5);
    expect(rain.location).toEqual({ lat: 21.03, lon: 105.85 });
    expect(typeof rain.lastSeen).toBe('string');
    expect(r.body.generatedAt).toMatch(/\+07:00$/);
  });

  it('filters by kind and answers GeoJSON for maps', async () => {
    const k = await t.api('GET', '/api/v1/telemetry/latest?kind=speaker', undefined, IOC_TOKEN);
    expect(k.body.devices.map((d: any) => d.id)).toEqual(['spk-1']);
    const res = await fetch(`${t.httpUrl}/api/v1/telemetry/latest?format=geojson`, { headers: { authorization: `Bearer ${IOC_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/geo\+json/);
    const g: any = await res.json();
    expect(g.type).toBe('FeatureCollection');
    const rain = g.features.find((f: any) => f.id === 'rain-1');
    expect(rain.geometry).toEqual({ type: 'Point', coordinates: [105.85, 21.03] });
    expect(rain.properties.latest.rain_mm.value).toBe(4.5);
    expect(g.features.find((f: any) => f.id === 'spk-1').geometry).toBeNull();
  });

  it('hides areas outside the scope (404) and refuses missing tokens (401)', async () => {
    expect((await t.api('GET', '/api/v1/telemetry/latest?area=p2', undefined, IOC_TOKEN)).status).toBe(404);
    const admin = await t.api('GET', '/api/v1/telemetry/latest?area=p2');
    expect(admin.body.devices.map((d: any) => d.id)).toEqual(['far-1']);
    expect((await fetch(`${t.httpUrl}/api/v1/telemetry/latest`)).status).toBe(401);
  });
});
