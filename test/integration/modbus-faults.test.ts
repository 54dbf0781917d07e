/**
 * Faults, against real Modbus TCP servers (pymodbus, modbus_server.py) and a
 * whole Keng: a device that never answers, one that answers slowly, a unit
 * id that does not exist, exception answers, a gateway that drops the
 * connection, and one that goes away and comes back. The poller recovers,
 * presence follows the polls, and the other devices (on the same gateway and
 * on another) keep their interval.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { startPymodbus, type PyServer } from '../helpers/modbus.js';
import { parseMetrics, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';

const TIMEOUT_MS = 300;
let t: TestApp;
let gw: PyServer; // the gateway most devices sit behind
let other: PyServer; // another gateway
/** Times (ms) at which each device's readings were stored. */
const seen = new Map<string, number[]>();
const readings = new Map<string, Array<Record<string, unknown>>>();

const one = (field: string, address = 0) => ({ registers: [{ field, function: 'holding', address, type: 'uint16' }] });

async function add(id: string, server: PyServer, unitId: number, registerMap: unknown, pollIntervalSec = 1): Promise<void> {
  const r = await t.api('POST', '/api/v1/devices', {
    id, kind: 'sensor', name: id, area: 'va1', transport: { type: 'modbus-tcp', host: '127.0.0.1', port: server.port, unitId }, registerMap, pollIntervalSec,
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
}
const view = async (id: string) => (await t.api('GET', `/api/v1/devices/${id}`)).body as { online: boolean; lastSeen: string | null };
const metrics = async () => parseMetrics(await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text());
const count = (id: string, since = 0): number => (seen.get(id) ?? []).filter((x) => x >= since).length;
/** Gaps between a device's readings after `since`. */
const gaps = (id: string, since: number): number[] => {
  const ts = (seen.get(id) ?? []).filter((x) => x >= since);
  return ts.slice(1).map((x, i) => x - ts[i]!);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  gw = await startPymodbus({ tcp: 0, units: [1, 2, 3, 4, 5], data: { 1: { hr: { 0: [11] } }, 2: { hr: { 0: [22] } }, 4: { hr: { 0: [44] } }, 5: { hr: { 0: [55] } } } });
  other = await startPymodbus({ tcp: 0, units: [1], data: { 1: { hr: { 0: [77] } } } });
  await gw.send({ cmd: 'mode', unit: 2, mode: 'silent' });
  t = await startTestApp({ modbus: { requestTimeoutMs: TIMEOUT_MS, offlineAfterFailures: 2, maxBackoffSec: 4, reconnectMinMs: 200, reconnectMaxMs: 800 } });
  t.app.bus.on('telemetry', (e) => {
    (seen.get(e.deviceId) ?? seen.set(e.deviceId, []).get(e.deviceId)!).push(Date.now());
    (readings.get(e.deviceId) ?? readings.set(e.deviceId, []).get(e.deviceId)!).push(e.values);
  });
  await seedAreas(t, COMMUNE_TREE);
  await add('healthy', gw, 1, one('v'));
  await add('silent', gw, 2, one('v'));
  await add('ghost', gw, 9, one('v')); // no unit 9 behind the gateway: exception 11
  await add('bad-address', gw, 3, one('v', 5000)); // outside the device's registers: exception 2
  await add('partial', gw, 4, { registers: [{ field: 'ok', function: 'holding', address: 0, type: 'uint16' }, { field: 'missing', function: 'input', address: 5000, type: 'uint16' }] });
  await add('slow', gw, 5, one('v'));
  await add('elsewhere', other, 1, one('v'));
}, 60_000);
afterAll(async () => { await t?.stop(); await gw?.stop(); await other?.stop(); });

describe('Modbus faults', () => {
  it('a silent device, a missing unit id and exception answers: they back off and go offline; the others keep their interval', async () => {
    const since = Date.now() + 1500; // after the first polls have spread out
    await sleep(8000);
    // Healthy devices: a reading about every second, on the busy gateway and on the other one.
    for (const id of ['healthy', 'elsewhere', 'partial']) {
      const g = gaps(id, since);
      expect(g.length, `${id}: ${JSON.stringify(g)}`).toBeGreaterThanOrEqual(4);
      expect(Math.max(...g), `${id}: ${JSON.stringify(g)}`).toBeLessThan(1000 + 2 * TIMEOUT_MS + 400);
      expect((await view(id)).online).toBe(true);
    }
    // The failing ones never came online, and back off: far fewer requests than the healthy device's.
    for (const id of ['silent', 'ghost', 'bad-address']) {
      expect((await view(id)).online, id).toBe(false);
      expect(count(id), id).toBe(0);
    }
    const asked = (unit: number, address = 0) => gw.requests.filter((q) => q.unit === unit && q.address === address && q.at >= since).length;
    expect(asked(1)).toBeGreaterThanOrEqual(5);
    expect(asked(2)).toBeLessThanOrEqual(3);
    expect(asked(9)).toBeLessThanOrEqual(3);
    expect(asked(3, 5000)).toBeLessThanOrEqual(3);
    // A poll with one answered block and one exception keeps what it read.
    expect(readings.get('partial')?.at(-1)).toEqual({ ok: 44 });
    const m = await metrics();
    expect(m.get('keng_modbus_requests_total{result="timeout"}')).toBeGreaterThanOrEqual(2);
    expect(m.get('keng_modbus_requests_total{result="exception"}')).toBeGreaterThanOrEqual(4);
    expect(m.get('keng_modbus_polls_total{result="failed"}')).toBeGreaterThanOrEqual(6);
  }, 30_000);

  it('a slow device: offline while slower than the timeout (lastSeen stays at its last answer), online again once it answers in time', async () => {
    await waitFor(async () => (await view('slow')).online, 5000);
    await gw.send({ cmd: 'mode', unit: 5, mode: 'slow', delayMs: TIMEOUT_MS * 3 });
    await waitFor(async () => !(await view('slow')).online, 10_000, 100);
    const lastSeen = (await view('slow')).lastSeen;
    const lastReading = (seen.get('slow') ?? []).at(-1)!;
    expect(Math.abs(Date.parse(lastSeen!) - lastReading)).toBeLessThan(1000);
    await gw.send({ cmd: 'mode', unit: 5, mode: 'slow', delayMs: 50 });
    await waitFor(async () => (await view('slow')).online, 10_000, 100);
    expect(Date.parse((await view('slow')).lastSeen!)).toBeGreaterThan(Date.parse(lastSeen!));
  }, 30_000);

  it('a gateway that drops the connection: the next poll connects again', async () => {
    const before = await metrics();
    await gw.send({ cmd: 'drop' });
    const since = Date.now();
    await waitFor(() => count('healthy', since) >= 2, 8000, 50);
    const after = await metrics();
    expect(after.get('keng_modbus_connects_total{result="ok"}')! - (before.get('keng_modbus_connects_total{result="ok"}') ?? 0)).toBeGreaterThanOrEqual(1);
    expect(after.get('keng_modbus_disconnects_total')! - (before.get('keng_modbus_disconnects_total') ?? 0)).toBeGreaterThanOrEqual(1);
    expect((await view('healthy')).online).toBe(true);
  }, 20_000);

  it('a gateway that goes away and comes back: its devices go offline, then reconnect with back-off; the other gateway never notices', async () => {
    const down = Date.now();
    await gw.send({ cmd: 'down', ms: 3000 });
    await waitFor(async () => !(await view('healthy')).online, 6000, 100);
    expect((await view('elsewhere')).online).toBe(true);
    const back = down + 3000;
    await waitFor(() => count('healthy', back) >= 1, 10_000, 50);
    expect((await view('healthy')).online).toBe(true);
    // Back within the reconnect back-off (at most 800 ms) plus its own poll back-off (2 failures: 2 s).
    expect((seen.get('healthy') ?? []).find((x) => x >= back)! - back).toBeLessThan(4000);
    // The other gateway's device kept its pace all along.
    const g = gaps('elsewhere', down);
    expect(Math.max(...g), JSON.stringify(g)).toBeLessThan(1000 + 400);
    const m = await metrics();
    expect(m.get('keng_modbus_requests_total{result="not_connected"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('keng_modbus_connects_total{result="failed"}')).toBeGreaterThanOrEqual(1);
  }, 30_000);

  it('a gateway that stops answering without closing the connection: after three timeouts in a row it is connected again', async () => {
    const mute = await startPymodbus({ tcp: 0, units: [1] });
    try {
      await mute.send({ cmd: 'mode', unit: 1, mode: 'silent' });
      await add('mute', mute, 1, one('v'));
      await waitFor(() => mute.connections() >= 2, 15_000, 100);
      // Three requests, all unanswered, on the first connection; then a new one.
      expect(mute.requests.length).toBeGreaterThanOrEqual(3);
      await mute.send({ cmd: 'mode', unit: 1, mode: 'normal' });
      await waitFor(async () => (await view('mute')).online, 10_000, 100);
    } finally {
      await t.api('DELETE', '/api/v1/devices/mute');
      await mute.stop();
    }
  }, 40_000);

  it('disabling a device stops its polls and shows it offline; enabling it polls it again', async () => {
    expect((await t.api('PATCH', '/api/v1/devices/elsewhere', { enabled: false })).status).toBe(200);
    await waitFor(async () => !(await view('elsewhere')).online, 3000, 50);
    const n = other.requests.length;
    await sleep(2500);
    expect(other.requests.length - n).toBeLessThanOrEqual(1); // at most a poll that was already under way
    expect((await t.api('PATCH', '/api/v1/devices/elsewhere', { enabled: true })).status).toBe(200);
    await waitFor(async () => (await view('elsewhere')).online, 5000, 50);
  }, 20_000);
});
