/**
 * Modbus devices in the registry, over the real HTTP API of a whole Keng:
 * registered with a transport, a register map (shipped or inline) and a poll
 * interval; listed, shown, changed and deleted like any device, scoped by
 * area; the shipped maps listed. (Polling itself: modbus-poll-*.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';

let t: TestApp;
// A gateway address nothing listens on: the poller only ever fails on it, which these tests do not look at.
const TCP = { type: 'modbus-tcp', host: '127.0.0.1', port: 1, unitId: 1 } as const;
const RTU = { type: 'modbus-rtu', path: '/dev/ttyKENGTEST0', baudRate: 9600, parity: 'none', unitId: 3 } as const;

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, COMMUNE_TREE);
}, 60_000);
afterAll(async () => { await t?.stop(); });

const dev = (id: string, more: Record<string, unknown>) => ({ id, kind: 'sensor', name: `Cảm biến ${id}`, area: 'va1', ...more });

describe('Modbus devices over the API', () => {
  it('lists the shipped maps with their sources', async () => {
    const r = await t.api('GET', '/api/v1/modbus/maps');
    expect(r.status).toBe(200);
    const soil = r.body.find((m: { name: string }) => m.name === 'soil-3in1');
    expect(soil).toMatchObject({ title: expect.any(String), source: expect.stringContaining('dfrobot'), defaults: { unitId: 1, baudRate: 9600 } });
    expect(soil.registers[0]).toEqual({ field: 'soil_moisture', function: 'holding', address: 0, type: 'uint16', scale: 0.1, unit: '%', min: 0, max: 100 });
  });

  it('registers a sensor behind a TCP gateway with a shipped map, and shows it back', async () => {
    const r = await t.api('POST', '/api/v1/devices', dev('soil-1', { transport: TCP, registerMap: 'soil-3in1', pollIntervalSec: 30 }));
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ id: 'soil-1', transport: TCP, registerMap: 'soil-3in1', pollIntervalSec: 30, secret: expect.any(String) });
    expect((await t.api('GET', '/api/v1/devices/soil-1')).body).toMatchObject({ transport: TCP, registerMap: 'soil-3in1', pollIntervalSec: 30, online: false });
    const list = (await t.api('GET', '/api/v1/devices?area=ca')).body as Array<{ id: string; transport?: unknown }>;
    expect(list.find((d) => d.id === 'soil-1')?.transport).toEqual(TCP);
  });

  it('registers a serial-line sensor with an inline map; pollIntervalSec defaults to 60', async () => {
    const registerMap = { registers: [
      { field: 'level', function: 'input', address: 10, type: 'float32', wordOrder: 'little', unit: 'm', min: 0, max: 20 },
      { field: 'pump_on', function: 'coil', address: 0, type: 'bool' },
    ] };
    const r = await t.api('POST', '/api/v1/devices', dev('level-1', { transport: RTU, registerMap }));
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ transport: RTU, registerMap, pollIntervalSec: 60 });
  });

  it('an MQTT device has no Modbus fields', async () => {
    const r = await t.api('POST', '/api/v1/devices', dev('mqtt-1', {}));
    expect(r.status).toBe(201);
    expect(r.body.transport).toBeUndefined();
    expect(r.body.registerMap).toBeUndefined();
  });

  it('refuses bad Modbus settings with the field at fault', async () => {
    const bad = async (more: Record<string, unknown>, status: number, field?: string): Promise<void> => {
      const r = await t.api('POST', '/api/v1/devices', dev(`bad-${Math.random().toString(36).slice(2, 8)}`, more));
      expect(r.status, JSON.stringify(r.body)).toBe(status);
      if (field) expect(JSON.stringify(r.body.error.details)).toContain(field);
    };
    await bad({ transport: TCP }, 400, 'registerMap');
    await bad({ registerMap: 'soil-3in1' }, 400, 'transport');
    await bad({ transport: { ...TCP, port: 70000 }, registerMap: 'soil-3in1' }, 400, 'port');
    await bad({ transport: { ...RTU, parity: 'mark' }, registerMap: 'soil-3in1' }, 400, 'parity');
    await bad({ transport: { ...RTU, path: '/etc/passwd', unitId: 9 }, registerMap: 'soil-3in1' }, 400, 'transport.path'); // modbus.serialPathPrefixes
    await bad({ transport: TCP, registerMap: { registers: [{ field: 'x', function: 'coil', address: 0, type: 'uint16' }] } }, 400, 'registerMap.registers[0].type');
    await bad({ transport: TCP, registerMap: { registers: [{ field: 'x', function: 'holding', address: 0, type: 'uint16', colour: 1 }] } }, 400);
    await bad({ transport: { ...TCP, unitId: 7 }, registerMap: 'no-such-map' }, 422);
    await bad({ transport: { ...TCP, unitId: 8 }, registerMap: 'soil-3in1', pollIntervalSec: 0 }, 400);
    await bad({ transport: { ...TCP, unitId: 9 }, registerMap: 'soil-3in1', kind: 'speaker' }, 422);
    // Unit 1 on that gateway is soil-1 already; a serial line has one baud rate and parity.
    await bad({ transport: TCP, registerMap: 'soil-3in1' }, 409);
    await bad({ transport: { ...RTU, unitId: 4, baudRate: 4800 }, registerMap: 'soil-3in1' }, 409);
    expect((await t.api('POST', '/api/v1/devices', dev('level-2', { transport: { ...RTU, unitId: 4 }, registerMap: 'soil-3in1' }))).status).toBe(201);
    // Nothing of a refused registration stays behind.
    expect(((await t.api('GET', '/api/v1/devices')).body as Array<{ id: string }>).filter((d) => d.id.startsWith('bad-'))).toEqual([]);
  });

  it('PATCH changes the Modbus settings of a Modbus device only', async () => {
    const r = await t.api('PATCH', '/api/v1/devices/soil-1', { pollIntervalSec: 5, registerMap: 'soil-7in1-npk', name: 'Ruộng 1' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ name: 'Ruộng 1', transport: TCP, registerMap: 'soil-7in1-npk', pollIntervalSec: 5 });
    expect((await t.api('PATCH', '/api/v1/devices/mqtt-1', { pollIntervalSec: 5 })).status).toBe(422);
    expect((await t.api('PATCH', '/api/v1/devices/soil-1', { registerMap: 'nope' })).status).toBe(422);
    expect((await t.api('PATCH', '/api/v1/devices/soil-1', { transport: { ...RTU, unitId: 4 } })).status).toBe(409);
    // A refused Modbus change leaves the rest of the change unmade too.
    expect((await t.api('PATCH', '/api/v1/devices/soil-1', { name: 'Tên khác', registerMap: 'nope' })).status).toBe(422);
    expect((await t.api('GET', '/api/v1/devices/soil-1')).body.name).toBe('Ruộng 1');
  });

  it('delete removes the Modbus settings with the device; the id can be registered again', async () => {
    expect((await t.api('DELETE', '/api/v1/devices/level-2')).status).toBe(204);
    const again = await t.api('POST', '/api/v1/devices', dev('level-2', { transport: { ...RTU, unitId: 4 }, registerMap: 'rain-gauge-xunchip' }));
    expect(again.status).toBe(201);
    expect(again.body.registerMap).toBe('rain-gauge-xunchip');
  });

  it('the OpenAPI document describes the Modbus fields of a device', async () => {
    const doc = await (await fetch(`${t.httpUrl}/docs/json`)).json() as any;
    const body = doc.paths['/api/v1/devices'].post.requestBody.content['application/json'].schema;
    expect(Object.keys(body.properties)).toEqual(expect.arrayContaining(['transport', 'registerMap', 'pollIntervalSec']));
    expect(doc.paths['/api/v1/modbus/maps'].get).toBeDefined();
    // The write's answers name their codes, the cluster's unknown outcome among them (docs/cluster.md).
    const written = doc.paths['/api/v1/devices/{id}/modbus/write'].post.responses;
    expect(written['504'].description).toContain('KENG_ERR_MODBUS_OUTCOME_UNKNOWN');
    expect(written['503'].description).toContain('KENG_ERR_MODBUS_UNREACHABLE');
  });
});
