/**
 * What must not leak about devices, tried through the real interfaces
 * (HTTP, MQTT over TCP):
 *   - an operator of commune B who registers a device under the id of a
 *     deleted device of commune A never reads A's readings through it (the
 *     history starts after the deletion; new readings show);
 *   - a disabled device with a wrong secret gets the CONNACK of an unknown
 *     device (4); only its right secret learns that it is disabled (5);
 *   - an id taken in another commune gets the same 409 as one taken in one's
 *     own, naming nothing of the other device.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, connectRefused, end, publish, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';

const PASSWORD = 'mot-hai-ba-bon-nam-sau';
let t: TestApp;
const tok: Record<string, string> = {};

async function login(username: string): Promise<string> {
  const r = await fetch(`${t.httpUrl}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: PASSWORD }),
  });
  return ((await r.json()) as { token: string }).token;
}

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, COMMUNE_TREE);
  for (const [username, areas] of [['can-bo-a', ['ca']], ['can-bo-b', ['cb']]] as const) {
    expect((await t.api('POST', '/api/v1/users', { username, password: PASSWORD, role: 'operator', areas })).status).toBe(201);
    tok[username] = await login(username);
  }
});
afterAll(async () => { await t?.stop(); });

describe('a deleted device\'s id registered again', () => {
  it('shows none of the deleted device\'s readings, only its own', async () => {
    const created = await t.api('POST', '/api/v1/devices', { id: 'dat-01', kind: 'sensor', name: 'Ruộng ông Ba', area: 'va1' }, tok['can-bo-a']);
    expect(created.status).toBe(201);
    const old = await connectDevice(t.mqttUrl, 'dat-01', created.body.secret);
    const before = Date.now();
    await publish(old, 'v1/devices/dat-01/telemetry', JSON.stringify([
      { ts: before - 3600_000, values: { soil_moisture: 11.5 } }, { ts: before - 60_000, values: { soil_moisture: 12.5 } },
    ]));
    await end(old);
    expect((await t.api('GET', '/api/v1/devices/dat-01/telemetry', undefined, tok['can-bo-a'])).body.points).toHaveLength(2);
    expect((await t.api('DELETE', '/api/v1/devices/dat-01', undefined, tok['can-bo-a'])).status).toBe(204);

    const again = await t.api('POST', '/api/v1/devices', { id: 'dat-01', kind: 'sensor', name: 'Thiết bị mới', area: 'cb' }, tok['can-bo-b']);
    expect(again.status).toBe(201);
    const history = async (q = ''): Promise<any[]> => (await t.api('GET', `/api/v1/devices/dat-01/telemetry${q}`, undefined, tok['can-bo-b'])).body.points;
    expect(await history()).toEqual([]);
    expect(await history(`?from=${new Date(before - 7 * 86_400_000).toISOString()}`)).toEqual([]);
    expect(await history(`?from=${new Date(before - 7 * 86_400_000).toISOString()}&every=1h&agg=max`)).toEqual([]);
    expect((await t.api('GET', '/api/v1/devices/dat-01', undefined, tok['can-bo-b'])).body.latest).toEqual({});

    const fresh = await connectDevice(t.mqttUrl, 'dat-01', again.body.secret);
    await publish(fresh, 'v1/devices/dat-01/telemetry', JSON.stringify({ soil_moisture: 40 }));
    await end(fresh);
    const points = await waitFor(async () => { const p = await history(); return p.length ? p : undefined; });
    expect(points.map((p) => p.values.soil_moisture)).toEqual([40]);
  });
});

describe('what a refusal says', () => {
  it('a disabled device with a wrong secret is refused like an unknown one; its right secret learns it is disabled', async () => {
    const d = await t.api('POST', '/api/v1/devices', { id: 'loa-tat', kind: 'speaker', name: 'Loa tạm tắt', area: 'va1' }, tok['can-bo-a']);
    expect((await t.api('PATCH', '/api/v1/devices/loa-tat', { enabled: false }, tok['can-bo-a'])).status).toBe(200);
    expect(await connectRefused(t.mqttUrl, 'khong-co-thiet-bi', 'sai-mat-khau')).toBe(4);
    expect(await connectRefused(t.mqttUrl, 'loa-tat', 'sai-mat-khau')).toBe(4);
    expect(await connectRefused(t.mqttUrl, d.body.accessToken.replace(/.$/, (c: string) => (c === 'A' ? 'B' : 'A')))).toBe(4);
    expect(await connectRefused(t.mqttUrl, 'loa-tat', d.body.secret)).toBe(5);
    expect(await connectRefused(t.mqttUrl, d.body.accessToken)).toBe(5);
  });

  it('an id taken in another commune gets the same 409 as one taken in one\'s own', async () => {
    await t.api('POST', '/api/v1/devices', { id: 'gio-01', kind: 'sensor', name: 'Trạm gió Xã A', area: 'ca' }, tok['can-bo-a']);
    await t.api('POST', '/api/v1/devices', { id: 'gio-02', kind: 'sensor', name: 'Trạm gió Xã B', area: 'cb' }, tok['can-bo-b']);
    const inOwn = await t.api('POST', '/api/v1/devices', { id: 'gio-02', kind: 'sensor', name: 'x', area: 'cb' }, tok['can-bo-b']);
    const inOther = await t.api('POST', '/api/v1/devices', { id: 'gio-01', kind: 'sensor', name: 'x', area: 'cb' }, tok['can-bo-b']);
    expect(inOwn.status).toBe(409);
    expect(inOther.status).toBe(409);
    expect(inOther.body.error.code).toBe(inOwn.body.error.code);
    expect(inOther.body.error.message.replace('gio-01', 'ID')).toBe(inOwn.body.error.message.replace('gio-02', 'ID'));
    expect(JSON.stringify(inOther.body)).not.toMatch(/Xã A|"ca"|Trạm gió/);
  });
});
