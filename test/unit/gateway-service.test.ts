/**
 * The gateway module (src/gateway/gateways.ts) on a real state store and
 * device registry: creation and refusal rules, the refused-names list, races
 * for a new name, RPC id mapping per gateway, presence, restart.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventBus, Metrics, createLogger } from '../../src/core/index.js';
import { DeviceRegistry } from '../../src/devices/index.js';
import type { DeviceIdentity } from '../../src/devices/types.js';
import { Gateways, subDeviceId } from '../../src/gateway/index.js';
import { stateSqlitePort } from '../../src/storage/state/index.js';
import { fakeClock, tempStateDb, type TempDb } from './auth-db.js';

const gw1: DeviceIdentity = { deviceId: 'gw-1', kind: 'gateway', area: 'a1', viaToken: true };
const gw2: DeviceIdentity = { deviceId: 'gw-2', kind: 'gateway', area: 'a2', viaToken: true };

describe('Gateways', () => {
  let db: TempDb;
  let registry: DeviceRegistry;
  let gateways: Gateways;
  const bus = new EventBus();
  const clock = fakeClock();
  const logger = createLogger('silent');
  const make = (): Gateways => new Gateways({ db: stateSqlitePort(db.state), registry, bus, logger, metrics: new Metrics(), clock });

  beforeEach(async () => {
    db = await tempStateDb();
    registry = new DeviceRegistry({ db: db.state, bus, logger, metrics: new Metrics(), clock });
    await registry.start();
    await registry.createArea({ code: 'p', name: 'P', level: 'province' });
    await registry.createArea({ code: 'a1', name: 'A1', level: 'commune', parent: 'p' });
    await registry.createArea({ code: 'a2', name: 'A2', level: 'commune', parent: 'p' });
    await registry.createDevice({ id: 'gw-1', kind: 'gateway', name: 'gw 1', area: 'a1' });
    await registry.createDevice({ id: 'gw-2', kind: 'gateway', name: 'gw 2', area: 'a2' });
    gateways = make();
    await gateways.start();
  });

  afterEach(async () => {
    await gateways.stop();
    await registry.stop();
    await db.close();
  });

  it('refuses names when the gateway may not create, and lists them (bounded, most recent first)', async () => {
    expect(await gateways.resolve(gw1, 'X', undefined, 1)).toEqual({ ok: false, reason: 'not_allowed' });
    expect(await gateways.resolve(gw1, 'X', undefined, 2)).toEqual({ ok: false, reason: 'not_allowed' });
    expect(gateways.refused('gw-1')).toEqual([{ name: 'X', reason: 'not_allowed', count: 2, firstAt: 1, lastAt: 2 }]);
    for (let i = 0; i < 105; i++) await gateways.resolve(gw1, `n${i}`, undefined, 10 + i);
    const list = gateways.refused('gw-1');
    expect(list).toHaveLength(100);
    expect(list[0]!.name).toBe('n104');
    expect(list.some((r) => r.name === 'X')).toBe(false); // the least recently seen went first
    expect(registry.getDevice(subDeviceId('X'))).toBeUndefined();
  });

  it('creates on first sight in the gateway\'s area; a name belongs to one gateway, also in a race', async () => {
    await gateways.setMayCreate('gw-1', true);
    await gateways.setMayCreate('gw-2', true);
    const [a, b] = await Promise.all([gateways.resolve(gw1, 'Bơm', 'pump', 1), gateways.resolve(gw2, 'Bơm', undefined, 1)]);
    const id = subDeviceId('Bơm');
    expect(a).toEqual({ ok: true, deviceId: id });
    expect(b).toEqual({ ok: false, reason: 'other_gateway' });
    expect(registry.getDevice(id)).toMatchObject({ kind: 'sensor', area: 'a1', name: 'Bơm', model: 'pump' });
    expect(gateways.gatewayOf(id)).toEqual({ id: 'gw-1', name: 'Bơm' });
    // A name whose id is another device's is never taken over.
    await registry.createDevice({ id: subDeviceId('Van'), kind: 'sensor', name: 'direct', area: 'a1' });
    expect(await gateways.resolve(gw1, 'Van', undefined, 2)).toEqual({ ok: false, reason: 'id_taken' });
    // Disabled: refused; deleted: the name is free again.
    await registry.updateDevice(id, { enabled: false });
    expect(await gateways.resolve(gw1, 'Bơm', undefined, 3)).toEqual({ ok: false, reason: 'disabled' });
    await registry.deleteDevice(id);
    expect(gateways.gatewayOf(id)).toBeUndefined();
    expect(await gateways.resolve(gw2, 'Bơm', undefined, 4)).toEqual({ ok: true, deviceId: id });
    expect(registry.getDevice(id)?.area).toBe('a2');
  });

  it('maps RPC to a sub-device onto its gateway with integer ids only that gateway can answer', async () => {
    await gateways.setMayCreate('gw-1', true);
    await gateways.resolve(gw1, 'Bơm', undefined, 1);
    const id = subDeviceId('Bơm');
    const payload = JSON.stringify({ method: 'setPump', params: { on: true }, expiresAt: 5 });
    const out = gateways.toGateway(`v1/devices/${id}/rpc/request/req-1`, payload)!;
    expect(out.topic).toBe('v1/devices/gw-1/gateway/rpc');
    expect(JSON.parse(out.payload)).toEqual({ device: 'Bơm', data: { id: 1, method: 'setPump', params: { on: true } } });
    expect(JSON.parse(gateways.toGateway(`v1/devices/${id}/rpc/request/req-1`, payload)!.payload).data.id).toBe(1); // a resend keeps its id
    expect(JSON.parse(gateways.toGateway(`v1/devices/${id}/rpc/request/req-2`, payload)!.payload).data.id).toBe(2);
    expect(gateways.rpcAnswer('gw-1', 'Bơm', 1)).toEqual({ deviceId: id, requestId: 'req-1' });
    expect(gateways.rpcAnswer('gw-2', 'Bơm', 1)).toBeUndefined();
    expect(gateways.rpcAnswer('gw-1', 'Other', 1)).toBeUndefined();
    expect(gateways.toGateway('v1/devices/gw-1/rpc/request/r', payload)).toBeNull(); // the gateway's own commands
  });

  it('presence: connected through the gateway, offline with it; settings and links survive a restart', async () => {
    await gateways.setMayCreate('gw-1', true);
    await gateways.resolve(gw1, 'A', undefined, 1);
    await gateways.resolve(gw1, 'B', undefined, 1);
    const [a, b] = [subDeviceId('A'), subDeviceId('B')];
    gateways.connected('gw-1', a, 10);
    gateways.connected('gw-1', b, 10);
    expect([registry.isOnline(a), gateways.subConnected(a)]).toEqual([true, 'gw-1']);
    gateways.disconnected('gw-2', 'A', 11); // not its sub-device: nothing
    expect(registry.isOnline(a)).toBe(true);
    gateways.disconnected('gw-1', 'A', 12);
    expect(registry.isOnline(a)).toBe(false);
    registry.setOnline('gw-1', true, 13);
    registry.setOnline('gw-1', false, 14);
    expect(registry.isOnline(b)).toBe(false);
    expect(gateways.subConnected(b)).toBeUndefined();

    await gateways.stop();
    gateways = make();
    await gateways.start();
    expect(gateways.mayCreate('gw-1')).toBe(true);
    expect(gateways.mayCreate('gw-2')).toBe(false);
    expect(await gateways.resolve(gw2, 'A', undefined, 20)).toEqual({ ok: false, reason: 'other_gateway' });
  });
});
