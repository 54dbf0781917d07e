/**
 * Writes to Modbus devices (POST /api/v1/devices/{id}/modbus/write) against
 * real servers (pymodbus over TCP, modbus-serial's ServerTCP): a holding
 * register (function 6), a 32-bit value (16) and a coil (5), encoded as the
 * map reads them and confirmed by the device's echo; only for operators of
 * the device's area and admins; audited, failures included; a device that
 * does not answer, refuses, or cannot be reached gets a clear error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { startPymodbus, startSerialServerTcp, words32, type PyServer } from '../helpers/modbus.js';
import { waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';

const PASSWORD = 'mot-hai-ba-bon-nam-sau';
let t: TestApp;
let py: PyServer;
const tokens: Record<string, string> = {};

const MAP = { registers: [
  { field: 'setpoint', function: 'holding', address: 0, type: 'uint16', scale: 0.1, unit: '°C', min: 0, max: 60 },
  { field: 'counter', function: 'holding', address: 2, type: 'int32', wordOrder: 'little' },
  { field: 'pump', function: 'coil', address: 4, type: 'bool' },
  { field: 'level', function: 'input', address: 0, type: 'uint16' },
  { field: 'far', function: 'holding', address: 4000, type: 'uint16' }, // outside the server's registers: exception 2
] };

async function login(username: string): Promise<string> {
  const r = await fetch(`${t.httpUrl}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: PASSWORD }) });
  expect(r.status).toBe(200);
  return ((await r.json()) as { token: string }).token;
}
const write = (id: string, body: unknown, token?: string) => t.api('POST', `/api/v1/devices/${id}/modbus/write`, body, token);
const tcp = (port: number | null, unitId = 1) => ({ type: 'modbus-tcp', host: '127.0.0.1', port, unitId });

beforeAll(async () => {
  py = await startPymodbus({ tcp: 0, units: [1, 2], data: { 1: { hr: { 0: [200] }, ir: { 0: [5] } } } });
  await py.send({ cmd: 'mode', unit: 2, mode: 'silent' });
  t = await startTestApp({ modbus: { requestTimeoutMs: 300, offlineAfterFailures: 2, maxBackoffSec: 2, reconnectMinMs: 100, reconnectMaxMs: 300 } });
  await seedAreas(t, COMMUNE_TREE);
  const add = async (id: string, transport: unknown, area = 'va1'): Promise<void> => {
    const r = await t.api('POST', '/api/v1/devices', { id, kind: 'sensor', name: id, area, transport, registerMap: MAP, pollIntervalSec: 1 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  };
  await add('pump-a', tcp(py.port));
  await add('silent-a', tcp(py.port, 2));
  await add('nowhere-a', tcp(1)); // nothing listens on port 1
  await add('pump-b', tcp(py.port, 3), 'cb');
  expect((await t.api('POST', '/api/v1/devices', { id: 'mqtt-a', kind: 'sensor', name: 'mqtt', area: 'va1' })).status).toBe(201);
  for (const [username, role, areas] of [['op-a', 'operator', ['ca']], ['viewer-a', 'viewer', ['ca']], ['op-b', 'operator', ['cb']]] as const) {
    expect((await t.api('POST', '/api/v1/users', { username, password: PASSWORD, role, areas })).status).toBe(201);
    tokens[username] = await login(username);
  }
}, 60_000);
afterAll(async () => { await t?.stop(); await py?.stop(); });

describe('Modbus writes', () => {
  it('an operator of the area sets a holding register: function 6, scaled, confirmed by the device, seen by the next poll', async () => {
    // The audit entry's `before` is the latest polled value: wait for the first poll (slow on a loaded machine).
    await waitFor(async () => (await t.api('GET', '/api/v1/devices/pump-a')).body.latest?.setpoint?.value === 20, 10_000, 100);
    const r = await write('pump-a', { field: 'setpoint', value: 25.5 }, tokens['op-a']);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({ deviceId: 'pump-a', field: 'setpoint', value: 25.5, function: 'holding', address: 0, sent: [255], confirmation: { address: 0, value: 255 } });
    expect(py.requests.filter((q) => q.fc === 6)).toEqual([expect.objectContaining({ unit: 1, address: 0, values: [255] })]);
    await waitFor(async () => (await t.api('GET', '/api/v1/devices/pump-a')).body.latest.setpoint?.value === 25.5, 5000, 100);
  });

  it('a 32-bit value goes out with function 16 in the map\'s word order; a coil with function 5', async () => {
    const r = await write('pump-a', { field: 'counter', value: -100_000 });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ function: 'holding', address: 2, sent: words32(-100_000, 'little'), confirmation: { address: 2, length: 2 } });
    expect(py.requests.filter((q) => q.fc === 16).at(-1)).toMatchObject({ address: 2, values: words32(-100_000, 'little') });
    const c = await write('pump-a', { field: 'pump', value: true }, tokens['op-a']);
    expect(c.status, JSON.stringify(c.body)).toBe(200);
    expect(c.body).toMatchObject({ function: 'coil', address: 4, sent: true, confirmation: { address: 4, state: true } });
    await waitFor(async () => (await t.api('GET', '/api/v1/devices/pump-a')).body.latest.pump?.value === true, 5000, 100);
    await waitFor(async () => (await t.api('GET', '/api/v1/devices/pump-a')).body.latest.counter?.value === -100_000, 5000, 100);
  });

  it('only operators of the device\'s area and admins may write', async () => {
    expect((await write('pump-a', { field: 'pump', value: false }, tokens['viewer-a'])).status).toBe(403);
    expect((await write('pump-a', { field: 'pump', value: false }, tokens['op-b'])).status).toBe(404);
    expect((await write('pump-b', { field: 'pump', value: false }, tokens['op-a'])).status).toBe(404);
  });

  it('refuses, before sending anything, what cannot be written', async () => {
    const n = py.requests.filter((q) => [5, 6, 16].includes(q.fc)).length;
    const expectRefused = async (id: string, body: unknown, status: number, code: string): Promise<void> => {
      const r = await write(id, body);
      expect(r.status, JSON.stringify(r.body)).toBe(status);
      expect(r.body.error.code).toBe(code);
    };
    await expectRefused('pump-a', { field: 'level', value: 1 }, 422, 'KENG_ERR_UNPROCESSABLE'); // an input register is read-only
    await expectRefused('pump-a', { field: 'nope', value: 1 }, 422, 'KENG_ERR_UNPROCESSABLE');
    await expectRefused('pump-a', { field: 'setpoint', value: 61 }, 400, 'KENG_ERR_VALIDATION'); // above the map's max
    await expectRefused('pump-a', { field: 'setpoint', value: 25.55 }, 400, 'KENG_ERR_VALIDATION'); // not a step of 0.1
    await expectRefused('pump-a', { field: 'pump', value: 1 }, 400, 'KENG_ERR_VALIDATION'); // a coil takes true or false
    await expectRefused('pump-a', { field: 'pump', value: true, extra: 1 }, 400, 'KENG_ERR_VALIDATION');
    await expectRefused('mqtt-a', { field: 'pump', value: true }, 422, 'KENG_ERR_UNPROCESSABLE');
    expect((await t.api('PATCH', '/api/v1/devices/pump-b', { enabled: false })).status).toBe(200);
    await expectRefused('pump-b', { field: 'pump', value: true }, 409, 'KENG_ERR_CONFLICT');
    expect(py.requests.filter((q) => [5, 6, 16].includes(q.fc)).length).toBe(n);
  });

  it('says plainly when the device does not answer, refuses, or cannot be reached', async () => {
    const timeout = await write('silent-a', { field: 'pump', value: true });
    expect(timeout.status).toBe(504);
    expect(timeout.body.error.code).toBe('KENG_ERR_MODBUS_TIMEOUT');
    const refused = await write('pump-a', { field: 'far', value: 1 });
    expect(refused.status).toBe(502);
    expect(refused.body.error).toMatchObject({ code: 'KENG_ERR_MODBUS_EXCEPTION', details: { exceptionCode: 2, meaning: 'illegal data address' } });
    const nowhere = await write('nowhere-a', { field: 'pump', value: true });
    expect(nowhere.status).toBe(503);
    expect(nowhere.body.error.code).toBe('KENG_ERR_MODBUS_UNREACHABLE');
  });

  it('every write that was sent is in the audit log, with who, what and the outcome', async () => {
    const r = await t.api('GET', '/api/v1/audit?action=device.modbus_write&limit=50');
    expect(r.status).toBe(200);
    const entries = (r.body.entries as Array<{ actor: string; target: string; before: unknown; after: Record<string, unknown> }>).reverse();
    expect(entries.map((e) => [e.target, e.after.field, e.after.error ?? 'ok'])).toEqual([
      ['device:pump-a', 'setpoint', 'ok'], ['device:pump-a', 'counter', 'ok'], ['device:pump-a', 'pump', 'ok'],
      ['device:silent-a', 'pump', 'KENG_ERR_MODBUS_TIMEOUT'], ['device:pump-a', 'far', 'KENG_ERR_MODBUS_EXCEPTION'],
      ['device:nowhere-a', 'pump', 'KENG_ERR_MODBUS_UNREACHABLE'],
    ]);
    expect(entries[0]).toMatchObject({ actor: 'user:op-a', before: { field: 'setpoint', value: 20 }, after: { value: 25.5, confirmation: { address: 0, value: 255 } } });
  });

  it('writes to modbus-serial\'s ServerTCP as well (functions 6 and 5)', async () => {
    const srv = await startSerialServerTcp({ hr: { 0: [0], 1: [0], 2: [0], 3: [0] }, ir: { 0: [0] }, co: { 4: [false] }, di: {} }, [7]);
    try {
      const r = await t.api('POST', '/api/v1/devices', { id: 'other-impl', kind: 'sensor', name: 'x', area: 'va1', transport: tcp(srv.port, 7), registerMap: MAP, pollIntervalSec: 60 });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect((await write('other-impl', { field: 'setpoint', value: 30 })).body).toMatchObject({ confirmation: { address: 0, value: 300 } });
      expect((await write('other-impl', { field: 'pump', value: true })).body).toMatchObject({ confirmation: { address: 4, state: true } });
      expect(srv.writes).toEqual([{ addr: 0, value: 300, unit: 7 }, { addr: 4, value: true, unit: 7 }]);
    } finally {
      await t.api('DELETE', '/api/v1/devices/other-impl');
      await srv.stop();
    }
  });
});
