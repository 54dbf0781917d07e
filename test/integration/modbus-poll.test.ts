/**
 * Polling against a real Modbus TCP server (Debian's python3-pymodbus,
 * test/fixtures/modbus/modbus_server.py) through a whole Keng: every data
 * type and word order decoded exactly from known registers, one request per
 * contiguous block, and the readings on the MQTT telemetry path (history,
 * latest values, live-feed events, rejection counters). Also modbus-serial's
 * own ServerTCP as a second, independent server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TelemetryEvent } from '../../src/core/events.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { floatWords, startPymodbus, startSerialServerTcp, words32, type PyServer } from '../helpers/modbus.js';
import { parseMetrics, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';

/** One register of every type and word order, hand-computed; a gap at 15..19 and the other three tables. */
const HOLDING = [
  0xff9b, // 0 int16 -101 × 0.1
  0xffff, // 1 uint16 65535
  ...words32(-2, 'big'), // 2-3 int32 big
  ...words32(-100_000, 'little'), // 4-5 int32 little
  ...words32(4_000_000_000, 'big'), // 6-7 uint32 big
  ...words32(100_309, 'little'), // 8-9 uint32 little
  ...floatWords(25.5, 'big'), // 10-11
  ...floatWords(-2.5, 'little'), // 12-13
  1, // 14 bool
];
const MAP = { registers: [
  { field: 'i16', function: 'holding', address: 0, type: 'int16', scale: 0.1, unit: '°C' },
  { field: 'u16', function: 'holding', address: 1, type: 'uint16' },
  { field: 'i32b', function: 'holding', address: 2, type: 'int32', wordOrder: 'big' },
  { field: 'i32l', function: 'holding', address: 4, type: 'int32', wordOrder: 'little' },
  { field: 'u32b', function: 'holding', address: 6, type: 'uint32' },
  { field: 'u32l', function: 'holding', address: 8, type: 'uint32', wordOrder: 'little' },
  { field: 'f32b', function: 'holding', address: 10, type: 'float32', wordOrder: 'big' },
  { field: 'f32l', function: 'holding', address: 12, type: 'float32', wordOrder: 'little' },
  { field: 'hbool', function: 'holding', address: 14, type: 'bool' },
  { field: 'after_gap', function: 'holding', address: 20, type: 'uint16', scale: 0.01, offset: 1 },
  { field: 'pi', function: 'input', address: 0, type: 'float32' },
  { field: 'i16min', function: 'input', address: 2, type: 'int16' },
  { field: 'c0', function: 'coil', address: 0, type: 'bool' },
  { field: 'c1', function: 'coil', address: 1, type: 'bool' },
  { field: 'c2', function: 'coil', address: 2, type: 'bool' },
  { field: 'd5', function: 'discrete', address: 5, type: 'bool' },
  { field: 'ranged', function: 'input', address: 10, type: 'uint16', min: 0, max: 100 },
] };
const EXPECTED = {
  i16: -10.1, u16: 65535, i32b: -2, i32l: -100_000, u32b: 4_000_000_000, u32l: 100_309, f32b: 25.5, f32l: -2.5, hbool: true,
  after_gap: 2.23, pi: 3.1415927410125732, i16min: -32768, c0: true, c1: false, c2: true, d5: true,
};

let t: TestApp;
let py: PyServer;
const events: TelemetryEvent[] = [];
const live: TelemetryEvent[] = [];

beforeAll(async () => {
  py = await startPymodbus({
    tcp: 0, units: [1],
    data: { 1: { hr: { 0: HOLDING, 20: [123] }, ir: { 0: floatWords(3.1415927410125732), 2: [0x8000], 10: [250] }, co: { 0: [true, false, true] }, di: { 5: [true] } } },
  });
  t = await startTestApp({ modbus: { requestTimeoutMs: 1000, offlineAfterFailures: 2, maxBackoffSec: 2, reconnectMinMs: 100, reconnectMaxMs: 500 } });
  t.app.bus.on('telemetry', (e) => { if (e.deviceId === 'all-types') events.push(e); });
  t.app.bus.on('telemetry.accepted', (e) => { if (e.deviceId === 'all-types') live.push(e); });
  await seedAreas(t, COMMUNE_TREE);
  const r = await t.api('POST', '/api/v1/devices', {
    id: 'all-types', kind: 'sensor', name: 'Mọi kiểu', area: 'va1',
    transport: { type: 'modbus-tcp', host: '127.0.0.1', port: py.port, unitId: 1 }, registerMap: MAP, pollIntervalSec: 1,
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
}, 60_000);
afterAll(async () => { await t?.stop(); await py?.stop(); });

describe('polling a pymodbus TCP server', () => {
  it('decodes every type and word order exactly, and stores them as the device\'s telemetry', async () => {
    const e = await waitFor(() => events[0], 10_000);
    expect(e.values).toEqual(EXPECTED); // `ranged` (250 > max 100) is refused, the rest kept
    expect(e).toMatchObject({ deviceId: 'all-types', area: 'va1', kind: 'sensor' });
    expect(live[0]?.values).toEqual(EXPECTED); // the live feed's early event
    const view = (await t.api('GET', '/api/v1/devices/all-types')).body;
    expect(view.online).toBe(true);
    expect(view.lastSeen).not.toBeNull();
    expect(Object.fromEntries(Object.entries(view.latest as Record<string, { value: unknown }>).map(([k, v]) => [k, v.value]))).toEqual(EXPECTED);
    const hist = await t.api('GET', '/api/v1/devices/all-types/telemetry?fields=i32l,f32b,u32b,hbool');
    expect(hist.status).toBe(200);
    expect(hist.body.points[0].values).toEqual({ i32l: -100_000, f32b: 25.5, u32b: 4_000_000_000, hbool: true });
  });

  it('asks for each contiguous block once per poll: 6 requests for 4 tables and two gaps', async () => {
    await waitFor(() => events.length >= 2, 10_000);
    const ONE_POLL = [[3, 0, 15], [3, 20, 1], [4, 0, 3], [4, 10, 1], [1, 0, 3], [2, 5, 1]];
    const seen = py.requests.map((q) => [q.fc, q.address, q.count]);
    const whole = seen.slice(0, seen.length - (seen.length % 6));
    expect(whole.length).toBeGreaterThanOrEqual(12);
    // Poll after poll, the same six requests in the same order, and nothing else.
    whole.forEach((q, i) => expect(q).toEqual(ONE_POLL[i % 6]));
    expect(py.requests.every((q) => q.unit === 1)).toBe(true);
  });

  it('follows changed registers on the next poll; an out-of-range reading is counted by reason', async () => {
    await py.send({ cmd: 'set', unit: 1, table: 'hr', address: 0, values: [0x00fa] });
    await py.send({ cmd: 'set', unit: 1, table: 'ir', address: 10, values: [42] });
    const e = await waitFor(() => events.find((x) => x.values.i16 === 25), 10_000);
    expect(e.values.ranged).toBe(42);
    const metrics = parseMetrics(await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text());
    expect(metrics.get('keng_rejected_total{reason="out_of_range"}')).toBeGreaterThanOrEqual(1);
    expect(metrics.get('keng_modbus_polls_total{result="ok"}')).toBeGreaterThanOrEqual(2);
    expect(metrics.get('keng_modbus_requests_total{result="ok"}')).toBeGreaterThanOrEqual(12);
    expect(metrics.get('keng_modbus_devices')).toBe(1);
  });
});

describe('polling modbus-serial\'s ServerTCP', () => {
  it('decodes the same registers served by another implementation', async () => {
    const hr: Record<number, number[]> = {};
    HOLDING.forEach((w, i) => { hr[i] = [w]; });
    hr[20] = [123];
    const ir: Record<number, number[]> = { 0: [floatWords(3.1415927410125732)[0]], 1: [floatWords(3.1415927410125732)[1]], 2: [0x8000], 10: [7] };
    const srv = await startSerialServerTcp({ hr, ir, co: { 0: [true], 1: [false], 2: [true] }, di: { 5: [true] } }, [4]);
    try {
      const got: TelemetryEvent[] = [];
      const off = t.app.bus.on('telemetry', (e) => { if (e.deviceId === 'other-server') got.push(e); });
      const r = await t.api('POST', '/api/v1/devices', {
        id: 'other-server', kind: 'sensor', name: 'ServerTCP', area: 'va1',
        transport: { type: 'modbus-tcp', host: '127.0.0.1', port: srv.port, unitId: 4 }, registerMap: MAP, pollIntervalSec: 1,
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const e = await waitFor(() => got[0], 10_000);
      off();
      expect(e.values).toEqual({ ...EXPECTED, ranged: 7 });
    } finally {
      await t.api('DELETE', '/api/v1/devices/other-server');
      await srv.stop();
    }
  });
});
