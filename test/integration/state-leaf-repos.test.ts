/**
 * The Modbus, shared-attribute and gateway repositories on the state store's
 * `Db` port, on both dialects (embedded SQLite state.db, and a real
 * PostgreSQL as in cluster mode): what they store and read back, the checks
 * made inside their write transactions, and, on PostgreSQL, two nodes (two
 * pools on one database) racing for the same line, owner or name, and one
 * node's in-memory values catching up with the other's changes.
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SharedAttributesRepo } from '../../src/attributes/repo.js';
import { SharedAttributes } from '../../src/attributes/service.js';
import { EventBus, Metrics, createLogger } from '../../src/core/index.js';
import type { Area, Device } from '../../src/devices/types.js';
import { GatewayRepo } from '../../src/gateway/repo.js';
import { Gateways } from '../../src/gateway/gateways.js';
import { MapCatalog, ModbusDevices, type ModbusSettings } from '../../src/modbus/index.js';
import { ModbusRepo } from '../../src/modbus/repo.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { openState, stopStatePostgres, STATE_DIALECTS, type StateHarness } from '../helpers/state-dialects.js';

afterAll(stopStatePostgres, 60_000);

const logger = createLogger('silent');
const clock = { now: () => 1_700_000_000_000 };

const AREAS: Area[] = [
  { code: 'p', name: 'P', level: 'province', parent: null } as Area,
  { code: 'c', name: 'C', level: 'commune', parent: 'p' } as Area,
  { code: 'v', name: 'V', level: 'village', parent: 'c' } as Area,
];
const DEVICES = ['s1', 's2', 's3', 'gw-1', 'gw-2', 'sub-a', 'sub-b'];

/** The devices and areas the embedded store's foreign keys need (PostgreSQL has no such tables yet). */
function seed(h: StateHarness): void {
  if (!h.sqlite) return;
  const area = h.sqlite.prepare('INSERT INTO areas (code, name, level, parent, created_at) VALUES (?, ?, ?, ?, 0)');
  for (const a of AREAS) area.run(a.code, a.name, a.level, a.parent);
  const dev = h.sqlite.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at)
    VALUES (?, ?, ?, 'v', 'x', ?, 'x', 0)`);
  for (const id of DEVICES) dev.run(id, id.startsWith('gw') ? 'gateway' : 'sensor', id, `lookup-${id}`);
}

const tcp = (deviceId: string, unitId: number, pollIntervalSec = 30): ModbusSettings => ({
  deviceId, transport: { type: 'modbus-tcp', host: '10.0.0.5', port: 502, unitId }, registerMap: 'soil-3in1', pollIntervalSec,
});

/** A second node on the same PostgreSQL database (its own pool). */
function otherNode(h: StateHarness): Db<unknown> {
  if (!h.url) throw new Error('PostgreSQL only');
  return openPgDb(h.url);
}

/** The fields a device registry gives these modules, for devices in area 'v'. */
function fakeRegistry() {
  const devices = new Map<string, Device>(DEVICES.map((id) => [id, { id, kind: id.startsWith('gw') ? 'gateway' : 'sensor', name: id, area: 'v', enabled: true } as Device]));
  return {
    devices,
    getDevice: (id: string) => devices.get(id),
    getArea: (code: string) => AREAS.find((a) => a.code === code),
    listDevices: (q?: { area?: string }) => [...devices.values()].filter(() => !q?.area || ['p', 'c', 'v'].indexOf(q.area) >= 0),
    createDevice: async (d: { id: string; name: string; area: string }) => {
      const dev = { ...d, kind: 'sensor', enabled: true } as Device;
      devices.set(d.id, dev);
      return { device: dev, credentials: { secret: 's', accessToken: 't' } };
    },
    deleteDevice: (id: string) => devices.delete(id),
    setOnline: () => undefined,
    touch: () => undefined,
  };
}

describe.each(STATE_DIALECTS)('Modbus settings on %s', (dialect) => {
  let h: StateHarness;
  beforeEach(async () => { h = await openState(dialect); seed(h); }, 120_000);
  afterEach(async () => { await h.close(); });

  it('stores, replaces and reads back settings; lists a line without the device itself', async () => {
    const repo = new ModbusRepo(h.db);
    await repo.putChecked(tcp('s2', 2), 1, () => undefined);
    await repo.putChecked(tcp('s1', 1), 1, () => undefined);
    const inline: ModbusSettings = {
      deviceId: 's3', pollIntervalSec: 5,
      transport: { type: 'modbus-rtu', path: '/dev/ttyUSB0', baudRate: 9600, parity: 'even', unitId: 7 },
      registerMap: { registers: [{ field: 'ec', function: 'input', address: 3, type: 'uint16', scale: 0.1 }] } as ModbusSettings['registerMap'],
    };
    await repo.putChecked(inline, 2, () => undefined);
    expect(await repo.get('s3')).toEqual(inline);
    expect((await repo.all()).map((s) => s.deviceId)).toEqual(['s1', 's2', 's3']);
    expect((await repo.othersOnLine('tcp:10.0.0.5:502', 's1')).map((s) => s.deviceId)).toEqual(['s2']);
    await repo.putChecked(tcp('s1', 9, 120), 3, () => undefined);
    expect(await repo.get('s1')).toEqual(tcp('s1', 9, 120));
    expect(await repo.get('nobody')).toBeUndefined();
    await repo.remove('s1');
    expect((await repo.all()).map((s) => s.deviceId)).toEqual(['s2', 's3']);
  });

  it('a refused line check stores nothing; an unreadable row is skipped and reported', async () => {
    const repo = new ModbusRepo(h.db, (id) => bad.push(id));
    const bad: string[] = [];
    await repo.putChecked(tcp('s1', 1), 1, () => undefined);
    let seen: string[] = [];
    await expect(repo.putChecked(tcp('s2', 1), 1, (others) => { seen = others.map((o) => o.deviceId); throw new Error('taken'); })).rejects.toThrow('taken');
    expect(seen).toEqual(['s1']);
    expect(await repo.get('s2')).toBeUndefined();
    await sql`UPDATE modbus_devices SET register_map_json = ${'{not json'} WHERE device_id = 's1'`.execute(h.db.kysely);
    expect(await repo.all()).toEqual([]);
    expect(bad).toEqual(['s1']);
  });

  it('two registrations of one unit id on one line: the second is refused (409), also from two nodes at once', async () => {
    const reg = fakeRegistry();
    const make = (db: Db<unknown>) => new ModbusDevices({ db, registry: reg as never, catalog: MapCatalog.shipped(), clock });
    const a = make(h.db);
    await a.save(tcp('s1', 1));
    await expect(a.save(tcp('s2', 1))).rejects.toMatchObject({ statusCode: 409 });
    await expect(a.check('s2', { transport: tcp('s2', 1).transport, registerMap: 'soil-3in1' })).rejects.toMatchObject({ statusCode: 409 });
    expect((await a.planUpdate('s1', { pollIntervalSec: 15 }))?.pollIntervalSec).toBe(15);
    if (dialect !== 'postgres') return;
    // Two nodes, one new unit id each time, ten rounds: exactly one of each pair is stored.
    const other = otherNode(h);
    try {
      const b = make(other);
      for (let unit = 10; unit < 20; unit++) {
        const r = await Promise.allSettled([a.save(tcp('s2', unit)), b.save(tcp('s3', unit))]);
        expect(r.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
        expect(r.filter((x) => x.status === 'rejected').map((x) => (x as PromiseRejectedResult).reason.statusCode)).toEqual([409]);
        const onUnit = (await a.all()).filter((s) => s.transport.unitId === unit);
        expect(onUnit).toHaveLength(1);
        await a.removed(onUnit[0]!.deviceId); // free both ids for the next round
      }
    } finally {
      await other.close();
    }
  }, 60_000);
});

describe.each(STATE_DIALECTS)('shared attributes on %s', (dialect) => {
  let h: StateHarness;
  beforeEach(async () => { h = await openState(dialect); seed(h); }, 120_000);
  afterEach(async () => { await h.close(); });

  it('applies a patch in one transaction: before and after as stored, null deletes, the key limit refuses and stores nothing', async () => {
    const repo = new SharedAttributesRepo(h.db);
    const dev = { kind: 'device', id: 's1' } as const;
    expect(await repo.apply(dev, { b: 2, a: { x: [1, 'y'] } }, 1, 3)).toEqual({ before: {}, after: { a: { x: [1, 'y'] }, b: 2 } });
    expect(await repo.apply(dev, { a: null, c: 'z' }, 2, 3)).toEqual({ before: { a: { x: [1, 'y'] }, b: 2 }, after: { b: 2, c: 'z' } });
    await expect(repo.apply(dev, { d: 1, e: 1 }, 3, 3)).rejects.toMatchObject({ statusCode: 422 });
    await repo.apply({ kind: 'area', id: 'c' }, { b: 'area' }, 4, 3);
    expect(await repo.load('device')).toEqual(new Map([['s1', new Map<string, unknown>([['b', 2], ['c', 'z']])]]));
    expect(await repo.load('area')).toEqual(new Map([['c', new Map([['b', 'area']])]]));
    await repo.remove(dev);
    expect((await repo.load('device')).size).toBe(0);
  });

  it('what runs within the change (the audit entry) shares its transaction: its failure stores nothing', async () => {
    const repo = new SharedAttributesRepo(h.db);
    const owner = { kind: 'device', id: 's1' } as const;
    await expect(repo.apply(owner, { a: 1 }, 1, 10, async (change, trx) => {
      expect(change).toEqual({ before: {}, after: { a: 1 } });
      const n = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM device_shared_attributes`.execute(trx);
      expect(Number(n.rows[0]!.n)).toBe(1); // the change is visible inside
      throw new Error('audit failed');
    })).rejects.toThrow('audit failed');
    expect((await repo.load('device')).size).toBe(0);
  });

  it.runIf(dialect === 'postgres')('two nodes changing one owner at once queue: the key limit holds and each before is the other\'s after', async () => {
    const other = otherNode(h);
    try {
      const a = new SharedAttributesRepo(h.db);
      const b = new SharedAttributesRepo(other);
      const owner = { kind: 'area', id: 'c' } as const;
      await a.apply(owner, { k1: 1, k2: 2 }, 1, 3);
      const r = await Promise.allSettled([a.apply(owner, { k3: 'a' }, 2, 3), b.apply(owner, { k4: 'b' }, 2, 3)]);
      expect(r.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
      expect((await a.load('area')).get('c')!.size).toBe(3);
      const changes = await Promise.all([a.apply(owner, { k1: 'a' }, 3, 3), b.apply(owner, { k2: 'b' }, 3, 3)]);
      const [first, second] = changes[0].after.k2 === 'b' ? [changes[1], changes[0]] : changes;
      expect(second!.before).toEqual(first!.after);
    } finally {
      await other.close();
    }
  }, 60_000);

  it.runIf(dialect === 'postgres')('a change made on another node reaches this node\'s memory and its connected devices on reload', async () => {
    const other = otherNode(h);
    const sent: Array<[string, unknown]> = [];
    const make = (db: Db<unknown>) => new SharedAttributes({
      db, registry: fakeRegistry() as never, bus: new EventBus(), logger, clock, reloadIntervalMs: 0,
      broker: { isConnected: (id) => id === 's1', publish: async (topic, payload) => { sent.push([topic, JSON.parse(String(payload))]); } },
    });
    const here = make(h.db);
    const there = make(other);
    try {
      await here.start();
      await there.start();
      await there.update({ kind: 'area', id: 'c' }, { interval: 60 });
      await there.update({ kind: 'device', id: 's1' }, { own: true });
      sent.length = 0;
      expect(here.effective('s1').shared).toEqual({});
      await here.reload();
      expect(here.effective('s1').shared).toEqual({ interval: 60, own: true });
      expect(sent).toEqual([['v1/devices/s1/attributes', { interval: 60, own: true }]]);
      await here.reload(); // nothing changed: nothing pushed
      expect(sent).toHaveLength(1);
      await there.update({ kind: 'area', id: 'c' }, { interval: null });
      await here.reload();
      expect(sent[1]).toEqual(['v1/devices/s1/attributes', { deleted: ['interval'] }]);
    } finally {
      await here.stop();
      await there.stop();
      await other.close();
    }
  }, 60_000);
});

describe.each(STATE_DIALECTS)('gateway sub-devices on %s', (dialect) => {
  let h: StateHarness;
  beforeEach(async () => { h = await openState(dialect); seed(h); }, 120_000);
  afterEach(async () => { await h.close(); });

  it('stores sub-devices and settings; a name belongs to one device; a deleted device takes its rows', async () => {
    const repo = new GatewayRepo(h.db);
    await repo.insertSub({ device_id: 'sub-b', gateway_id: 'gw-1', name: 'Bơm 2', created_at: 2 });
    await repo.insertSub({ device_id: 'sub-a', gateway_id: 'gw-2', name: 'Bơm 1', created_at: 1 });
    await expect(repo.insertSub({ device_id: 's1', gateway_id: 'gw-2', name: 'Bơm 2', created_at: 3 })).rejects.toThrow();
    expect(await repo.subDevices()).toEqual([
      { device_id: 'sub-a', gateway_id: 'gw-2', name: 'Bơm 1', created_at: 1 },
      { device_id: 'sub-b', gateway_id: 'gw-1', name: 'Bơm 2', created_at: 2 },
    ]);
    await repo.putSetting('gw-1', true, 1);
    await repo.putSetting('gw-2', true, 1);
    await repo.putSetting('gw-2', false, 2);
    expect([...await repo.creators()]).toEqual(['gw-1']);
    await repo.removeDevice('gw-1'); // a gateway: its setting and its sub-devices' links go
    expect((await repo.subDevices()).map((r) => r.device_id)).toEqual(['sub-a']);
    expect((await repo.creators()).size).toBe(0);
    await repo.removeDevice('sub-a');
    expect(await repo.subDevices()).toEqual([]);
  });

  it.runIf(dialect === 'postgres')('another node\'s setting and sub-devices reach this node on reload; its own changes are not undone by an overlapping reload', async () => {
    const other = otherNode(h);
    const make = (db: Db<unknown>) => new Gateways({ db, registry: fakeRegistry() as never, bus: new EventBus(), logger, metrics: new Metrics(), clock, reloadIntervalMs: 0 });
    const here = make(h.db);
    const there = make(other);
    try {
      await here.start();
      await there.start();
      await there.setMayCreate('gw-1', true);
      await there.link('sub-a', 'gw-1', 'Bơm 1');
      expect(here.mayCreate('gw-1')).toBe(false);
      expect(await here.reload()).toBe(true);
      expect(here.mayCreate('gw-1')).toBe(true);
      expect(here.gatewayOf('sub-a')).toEqual({ id: 'gw-1', name: 'Bơm 1' });
      expect(() => here.checkLink('Bơm 1')).toThrow(/already has a device/);
      // A name linked on both nodes at once: the database keeps one.
      const r = await Promise.allSettled([here.link('sub-b', 'gw-1', 'Bơm 2'), there.link('s1', 'gw-2', 'Bơm 2')]);
      expect(r.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
      // A reload overlapping this node's own change never loses it (it is dropped when it read before the change).
      const reload = here.reload();
      await here.setMayCreate('gw-2', true);
      await reload;
      expect(here.mayCreate('gw-2')).toBe(true);
      expect(here.mayCreate('gw-1')).toBe(true);
    } finally {
      await here.stop();
      await there.stop();
      await other.close();
    }
  }, 60_000);
});
