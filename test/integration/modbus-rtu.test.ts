/**
 * Modbus RTU framing over a serial line: a pseudo-terminal pair made by
 * socat stands for the RS485 adapter and its cable; Keng opens one end with
 * modbus-serial (serialport), a pymodbus RTU server (modbus_server.py
 * --rtu, python3-serial-asyncio) answers on the other. Several sensors share
 * the line (one request at a time, CRC-checked frames); a silent one costs
 * the line its timeout and backs off, and a late answer is not taken for the
 * next request's. Fails, never skips, when socat or pymodbus' serial support
 * is missing.
 *
 * Not covered by a pty: electrical RS485 behaviour (line turnaround, bus
 * termination, noise), real baud-rate timing (a pty moves bytes at once,
 * whatever the baud rate) and parity bits (a pty carries no parity).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TelemetryEvent } from '../../src/core/events.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { canMakePty, floatWords, ptyPair, startPymodbus, type PyServer } from '../helpers/modbus.js';
import { waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';

let t: TestApp;
let py: PyServer;
let pty: Awaited<ReturnType<typeof ptyPair>>;
const got = new Map<string, TelemetryEvent[]>();

beforeAll(async () => {
  expect(canMakePty(), 'socat must be installed (scripts/system-deps.txt)').toBe(true);
  pty = await ptyPair();
  py = await startPymodbus({
    rtu: pty.b, baud: 9600, parity: 'N', units: [1, 2, 3],
    data: {
      1: { hr: { 0: [0x0292, 0xff9b, 0x03e8] } }, // DFRobot SEN0601's documented frame
      2: { ir: { 0: floatWords(12.25, 'little') }, co: { 3: [true] } },
      3: { hr: { 0: [7] } },
    },
  });
  // The pty's link lives in the temporary directory, which a real installation would never allow.
  t = await startTestApp({ modbus: { requestTimeoutMs: 400, offlineAfterFailures: 2, maxBackoffSec: 4, reconnectMinMs: 200, reconnectMaxMs: 1000, serialPathPrefixes: [path.dirname(pty.a)] } });
  t.app.bus.on('telemetry', (e) => { (got.get(e.deviceId) ?? got.set(e.deviceId, []).get(e.deviceId)!).push(e); });
  await seedAreas(t, COMMUNE_TREE);
  const line = { type: 'modbus-rtu', path: pty.a, baudRate: 9600, parity: 'none' };
  const add = async (id: string, unitId: number, registerMap: unknown): Promise<void> => {
    const r = await t.api('POST', '/api/v1/devices', { id, kind: 'sensor', name: id, area: 'va1', transport: { ...line, unitId }, registerMap, pollIntervalSec: 1 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  };
  await add('soil-rtu', 1, 'soil-3in1');
  await add('level-rtu', 2, { registers: [
    { field: 'level', function: 'input', address: 0, type: 'float32', wordOrder: 'little', unit: 'm' },
    { field: 'pump', function: 'coil', address: 3, type: 'bool' },
  ] });
  await add('other-rtu', 3, { registers: [{ field: 'v', function: 'holding', address: 0, type: 'uint16' }] });
}, 60_000);
afterAll(async () => { await t?.stop(); await py?.stop(); await pty?.stop(); });

const online = async (id: string): Promise<boolean> => (await t.api('GET', `/api/v1/devices/${id}`)).body.online;

describe('Modbus RTU over a pty pair (socat) against pymodbus', () => {
  it('reads several sensors on one line, each frame CRC-checked and decoded', async () => {
    const soil = await waitFor(() => got.get('soil-rtu')?.[0], 10_000);
    expect(soil.values).toEqual({ soil_moisture: 65.8, temperature: -10.1, soil_ec: 1000 });
    const level = await waitFor(() => got.get('level-rtu')?.[0], 10_000);
    expect(level.values).toEqual({ level: 12.25, pump: true });
    expect((await waitFor(() => got.get('other-rtu')?.[0], 10_000)).values).toEqual({ v: 7 });
    // One request per block, to the right unit, function and address.
    const asked = new Set(py.requests.map((q) => `${q.unit}:${q.fc}:${q.address}:${q.count}`));
    expect([...asked].sort()).toEqual(['1:3:0:3', '2:1:3:1', '2:4:0:2', '3:3:0:1']);
    expect(await online('soil-rtu')).toBe(true);
  }, 20_000);

  it('a silent sensor times out and backs off; the others keep their pace and no late answer is taken for another\'s', async () => {
    await py.send({ cmd: 'mode', unit: 3, mode: 'slow', delayMs: 600 }); // answers, but after the 400 ms timeout: a late frame on the line
    const slowFrom = Date.now();
    await waitFor(async () => !(await online('other-rtu')), 10_000, 100);
    const since = Date.now();
    await new Promise((r) => setTimeout(r, 4000));
    const soil = (got.get('soil-rtu') ?? []).filter((e) => e.ts >= since);
    expect(soil.length).toBeGreaterThanOrEqual(3);
    // Every reading after the late answers is still soil-3in1's own, exactly.
    for (const e of soil) expect(e.values).toEqual({ soil_moisture: 65.8, temperature: -10.1, soil_ec: 1000 });
    for (const e of (got.get('level-rtu') ?? []).filter((x) => x.ts >= since)) expect(e.values).toEqual({ level: 12.25, pump: true });
    // Serialised: after a request to the slow sensor, nothing goes out on the line before its timeout has run.
    const onLine = py.requests.filter((q) => q.at >= slowFrom);
    const slowAsks = onLine.map((q, i) => [q, onLine[i + 1]] as const).filter(([q, next]) => q.unit === 3 && next);
    expect(slowAsks.length).toBeGreaterThanOrEqual(1);
    for (const [q, next] of slowAsks) expect(next!.at - q.at).toBeGreaterThanOrEqual(400 - 20);
    // Nothing garbled was decoded as a reading: no frame errors counted.
    expect(await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text()).not.toMatch(/keng_modbus_requests_total\{result="error"\} [1-9]/);
    await py.send({ cmd: 'mode', unit: 3, mode: 'normal' });
    await waitFor(async () => online('other-rtu'), 10_000, 100);
  }, 30_000);
});
