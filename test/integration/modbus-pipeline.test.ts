/**
 * A Modbus sensor's readings are telemetry of that device exactly like an
 * MQTT sensor's: with the InfluxDB store (a real influxd), a pymodbus sensor
 * and an MQTT sensor side by side end up in the same measurement with the
 * same tags, in the history API, in latest values, and on the socket.io live
 * feed (telemetry and status events).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io as ioc, type Socket } from 'socket.io-client';
import type { MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { influxdForFile } from '../helpers/influxd.js';
import { startPymodbus, type PyServer } from '../helpers/modbus.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';

const fx = influxdForFile('keng-modbus-influx-');
const DB = 'modbus_pipeline';
let t: TestApp;
let py: PyServer;
let mqtt: MqttClient;
let live: Socket;
const liveTelemetry: Array<{ deviceId: string; values: Record<string, unknown> }> = [];
const liveStatus: Array<{ deviceId: string; online: boolean }> = [];

beforeAll(async () => {
  py = await startPymodbus({ tcp: 0, units: [1], data: { 1: { hr: { 0: [0x0292, 0xff9b, 0x03e8] } } } });
  t = await startTestApp({
    telemetry: { store: 'influxdb' },
    influx: { url: fx.influxd.url, api: 'v1', database: DB, retryMinMs: 100, retryMaxMs: 1000 },
    modbus: { requestTimeoutMs: 500, offlineAfterFailures: 2, maxBackoffSec: 2 },
  });
  await seedAreas(t, COMMUNE_TREE);
  live = ioc(t.httpUrl, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token: t.adminToken } });
  live.on('telemetry', (m) => liveTelemetry.push(m));
  live.on('status', (m) => liveStatus.push(m));
  await new Promise<void>((resolve, reject) => { live.once('connect', () => resolve()); live.once('connect_error', reject); });
  expect(await live.timeout(5000).emitWithAck('subscribe', { areas: ['ca'] })).toMatchObject({ ok: true });
  const mq = await t.api('POST', '/api/v1/devices', { id: 'soil-mqtt', kind: 'sensor', name: 'MQTT', area: 'va1' });
  expect(mq.status).toBe(201);
  mqtt = await connectDevice(t.mqttUrl, 'soil-mqtt', mq.body.secret);
  const mb = await t.api('POST', '/api/v1/devices', {
    id: 'soil-modbus', kind: 'sensor', name: 'Modbus', area: 'va1', transport: { type: 'modbus-tcp', host: '127.0.0.1', port: py.port, unitId: 1 },
    registerMap: 'soil-3in1', pollIntervalSec: 1,
  });
  expect(mb.status, JSON.stringify(mb.body)).toBe(201);
}, 90_000);
afterAll(async () => {
  live?.disconnect();
  if (mqtt) await end(mqtt);
  await t?.stop();
  await py?.stop();
});

describe('Modbus readings take the MQTT telemetry path', () => {
  it('both sensors\' readings are in InfluxDB, in one measurement with the same tags', async () => {
    await publish(mqtt, 'v1/devices/soil-mqtt/telemetry', JSON.stringify({ soil_moisture: 31.5, temperature: 24.1, soil_ec: 800 }));
    const rows = await waitFor(async () => {
      const r = await fx.influxd.query('SELECT "soil_moisture", "temperature", "soil_ec" FROM "telemetry" GROUP BY *', DB);
      const series = (r.results?.[0]?.series ?? []) as unknown as Array<{ tags: Record<string, string>; values: unknown[][] }>;
      return series.length === 2 ? series : undefined;
    }, 20_000, 200);
    const byDevice = Object.fromEntries(rows.map((s) => [s.tags.device_id, s]));
    expect(Object.keys(byDevice).sort()).toEqual(['soil-modbus', 'soil-mqtt']);
    expect(Object.keys(byDevice['soil-modbus']!.tags).sort()).toEqual(Object.keys(byDevice['soil-mqtt']!.tags).sort());
    expect(byDevice['soil-modbus']!.tags).toMatchObject({ area: 'va1', kind: 'sensor' });
    expect(byDevice['soil-modbus']!.values[0]!.slice(1)).toEqual([65.8, -10.1, 1000]);
    expect(byDevice['soil-mqtt']!.values[0]!.slice(1)).toEqual([31.5, 24.1, 800]);
  }, 30_000);

  it('the history API and latest values read them back like the MQTT sensor\'s', async () => {
    const [mb, mq] = await Promise.all(['soil-modbus', 'soil-mqtt'].map((id) => t.api('GET', `/api/v1/devices/${id}/telemetry?fields=soil_moisture,temperature,soil_ec`)));
    expect(mb!.status).toBe(200);
    expect(mb!.body.points[0].values).toEqual({ soil_moisture: 65.8, temperature: -10.1, soil_ec: 1000 });
    expect(mq!.body.points[0].values).toEqual({ soil_moisture: 31.5, temperature: 24.1, soil_ec: 800 });
    const latest = (await t.api('GET', '/api/v1/devices/soil-modbus')).body.latest;
    expect(latest.soil_ec.value).toBe(1000);
  });

  it('the live feed carries the Modbus sensor\'s readings and its presence, as for the MQTT sensor', async () => {
    await waitFor(() => liveTelemetry.some((m) => m.deviceId === 'soil-mqtt') && liveTelemetry.some((m) => m.deviceId === 'soil-modbus'), 10_000);
    const m = liveTelemetry.find((x) => x.deviceId === 'soil-modbus')!;
    const q = liveTelemetry.find((x) => x.deviceId === 'soil-mqtt')!;
    expect(Object.keys(m).sort()).toEqual(Object.keys(q).sort());
    expect(m.values).toEqual({ soil_moisture: 65.8, temperature: -10.1, soil_ec: 1000 });
    await waitFor(() => liveStatus.find((s) => s.deviceId === 'soil-modbus' && s.online), 10_000);
    await py.send({ cmd: 'mode', unit: 1, mode: 'silent' });
    await waitFor(() => liveStatus.find((s) => s.deviceId === 'soil-modbus' && !s.online), 15_000, 100);
  }, 30_000);
});
