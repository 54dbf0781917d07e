/**
 * The API through the whole running app (startTestApp: real registry, state
 * store, embedded telemetry store, broker and ingest on ephemeral ports):
 * register over HTTP, send readings over MQTT, read them back over HTTP.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';

let t: TestApp;
beforeAll(async () => { t = await startTestApp(); });
afterAll(async () => { await t?.stop(); });

describe('API on the running app', () => {
  it('health and readiness without a token (details and metrics with one); 401 on /api/v1 without one', async () => {
    const admin = { headers: { authorization: `Bearer ${t.adminToken}` } };
    expect((await fetch(`${t.httpUrl}/healthz`)).status).toBe(200);
    const plain = await fetch(`${t.httpUrl}/readyz`);
    expect([plain.status, await plain.json()]).toEqual([200, { status: 'ready' }]);
    const ready = await fetch(`${t.httpUrl}/readyz`, admin);
    const body = await ready.json() as { status: string; checks: Record<string, { ok: boolean }> };
    expect(ready.status).toBe(200);
    expect(body.status).toBe('ready');
    expect(Object.keys(body.checks).sort()).toEqual(['broker', 'media', 'state', 'stateWindow', 'telemetry']);
    expect((await fetch(`${t.httpUrl}/metrics`)).status).toBe(401);
    expect(await (await fetch(`${t.httpUrl}/metrics`, admin)).text()).toContain('keng_mqtt_connections');
    const r = await t.api('GET', '/api/v1/devices', undefined, 'not-the-admin-token');
    expect([r.status, r.body.error.code]).toEqual([401, 'KENG_ERR_UNAUTHENTICATED']);
  });

  it('GET /api/v1/cluster/nodes in embedded mode: the one node, no lease (no table, no timer)', async () => {
    const r = await t.api('GET', '/api/v1/cluster/nodes');
    expect(r.status).toBe(200);
    expect(r.body.mode).toBe('embedded');
    expect(r.body.nodes).toHaveLength(1);
    expect(r.body.nodes[0]).toMatchObject({ state: 'alive', self: true, renewedAt: null, leaseUntil: null, sweptAt: null, stoppedAt: null, devices: 0 });
    expect(r.body.nodes[0].startedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text()).not.toContain('keng_cluster_lease_renewals_total');
  });

  it('areas and devices round-trip through the real registry', async () => {
    expect((await t.api('POST', '/api/v1/areas', { code: '79', name: 'TP Hồ Chí Minh', level: 'province' })).status).toBe(201);
    expect((await t.api('POST', '/api/v1/areas', { code: '26734', name: 'Xã Bình Chánh', level: 'commune', parent: '79' })).status).toBe(201);
    const dup = await t.api('POST', '/api/v1/areas', { code: '79', name: 'again', level: 'province' });
    expect([dup.status, dup.body.error.code]).toEqual([409, 'KENG_ERR_AREA_EXISTS']);
    const hier = await t.api('POST', '/api/v1/areas', { code: 'v-bad', name: 'x', level: 'village', parent: '79' });
    expect([hier.status, hier.body.error.code]).toEqual([409, 'KENG_ERR_AREA_HIERARCHY']);
    const orphan = await t.api('POST', '/api/v1/areas', { code: 'c-orphan', name: 'x', level: 'commune', parent: 'no-such' });
    expect([orphan.status, orphan.body.error.code]).toEqual([409, 'KENG_ERR_AREA_HIERARCHY']);
    const noArea = await t.api('POST', '/api/v1/devices', { id: 'lost-1', kind: 'sensor', name: 'x', area: 'no-such' });
    expect([noArea.status, noArea.body.error.code]).toEqual([422, 'KENG_ERR_UNPROCESSABLE']);
    const areas = await t.api('GET', '/api/v1/areas');
    expect(areas.body.map((a: { code: string }) => a.code).sort()).toEqual(['26734', '79']);
    expect(areas.body.find((a: { code: string }) => a.code === '79').createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+07:00$/);

    const created = await t.api('POST', '/api/v1/devices', { id: 'loa-01', kind: 'speaker', name: 'Cụm loa 1', area: '26734' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ id: 'loa-01', kind: 'speaker', area: '26734', online: false, lastSeen: null });
    expect(typeof created.body.secret).toBe('string');
    expect(typeof created.body.accessToken).toBe('string');
    const dupDevice = await t.api('POST', '/api/v1/devices', { id: 'loa-01', kind: 'speaker', name: 'again', area: '26734' });
    expect([dupDevice.status, dupDevice.body.error.code]).toEqual([409, 'KENG_ERR_DEVICE_EXISTS']);

    const list = await t.api('GET', '/api/v1/devices?area=79&kind=speaker');
    expect(list.body.map((d: { id: string }) => d.id)).toEqual(['loa-01']);
    const got = await t.api('GET', '/api/v1/devices/loa-01');
    expect(Object.keys(got.body).sort()).toEqual(['area', 'attributes', 'enabled', 'id', 'kind', 'lastSeen', 'latest', 'location', 'model', 'name', 'online']);

    expect((await t.api('DELETE', '/api/v1/devices/loa-01')).status).toBe(204);
    expect((await t.api('GET', '/api/v1/devices/loa-01')).status).toBe(404);
  });

  it('readings sent over MQTT show up as latest values and history', async () => {
    expect((await t.api('POST', '/api/v1/areas', { code: '86', name: 'Vĩnh Long', level: 'province' })).status).toBe(201);
    const reg = await t.api('POST', '/api/v1/devices', { id: 'soil-42', kind: 'sensor', name: 'Ruộng 42', area: '86', location: { lat: 10.2, lon: 105.9 } });
    expect(reg.status).toBe(201);
    const client = await connectDevice(t.mqttUrl, 'soil-42', reg.body.secret);
    const ts0 = Date.now() - 60_000;
    try {
      await publish(client, 'v1/devices/soil-42/telemetry', JSON.stringify([
        { ts: ts0, values: { soil_moisture: 30 } },
        { ts: ts0 + 10_000, values: { soil_moisture: 34, temperature: 25.5 } },
      ]), 1);
      const view = await waitFor(async () => {
        const r = await t.api('GET', '/api/v1/devices/soil-42');
        return r.body.online && r.body.latest.temperature ? r.body : undefined;
      });
      expect(view.latest.soil_moisture.value).toBe(34);
      expect(view.latest.soil_moisture.ts).toMatch(/\+07:00$/);
      expect(Date.parse(view.latest.soil_moisture.ts)).toBe(ts0 + 10_000);
      expect(view.lastSeen).toMatch(/\+07:00$/);

      const raw = await waitFor(async () => {
        const r = await t.api('GET', '/api/v1/devices/soil-42/telemetry?fields=soil_moisture');
        return r.body.points?.length === 2 ? r.body : undefined;
      });
      expect(raw.deviceId).toBe('soil-42');
      expect(raw.points.map((p: { ts: string }) => Date.parse(p.ts))).toEqual([ts0, ts0 + 10_000]);
      expect(raw.points.map((p: { values: Record<string, number> }) => p.values)).toEqual([{ soil_moisture: 30 }, { soil_moisture: 34 }]);

      const from = encodeURIComponent(new Date(ts0 - 3_600_000).toISOString());
      const agg = await t.api('GET', `/api/v1/devices/soil-42/telemetry?fields=soil_moisture&every=1d&agg=max&from=${from}`);
      expect(agg.status).toBe(200);
      expect(agg.body.points.flatMap((p: { values: Record<string, number> }) => Object.values(p.values))).toContain(34);
    } finally {
      await end(client);
    }
  });

  it('OpenAPI lists the API routes', async () => {
    const doc = await (await fetch(`${t.httpUrl}/docs/json`)).json() as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/api/v1/areas', '/api/v1/devices', '/api/v1/devices/{id}', '/api/v1/devices/{id}/telemetry', '/readyz']));
  });
});

describe('admin token file on first start', () => {
  it('without KENG_ADMIN_TOKEN a token is generated into <data>/admin-token (0600) and works', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-api-token-'));
    const app = await startTestApp({ adminToken: undefined }, { dataDir });
    try {
      const file = path.join(dataDir, 'admin-token');
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const token = readFileSync(file, 'utf8').trim();
      expect((await app.api('GET', '/api/v1/areas', undefined, token)).status).toBe(200);
      expect((await app.api('GET', '/api/v1/areas')).status).toBe(401); // the helper's default token is not configured here
    } finally {
      await app.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
