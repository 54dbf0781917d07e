/**
 * The device registry on the `Db` port: the same outcomes on the embedded state.db and on
 * PostgreSQL (describe.each(STATE_DIALECTS)), then two registries on two PostgreSQL pools as two
 * cluster nodes: a change made on one reaches the other within the bound of docs/cluster.md
 * ("State shared between nodes": registry_version polled every REGISTRY_POLL_MS).
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/index.js';
import { EventBus, Metrics, createLogger, type KengEvents } from '../../src/core/index.js';
import { DeviceRegistry, PurgeJobs, REGISTRY_POLL_MS } from '../../src/devices/index.js';
import { ProvisioningService } from '../../src/devices/provisioning.js';
import { ProvisioningRepo } from '../../src/devices/provisioning-repo.js';
import { SESSION_MIGRATIONS } from '../../src/cluster/index.js';
import { migrate, openPgDb, type Db } from '../../src/storage/sql/index.js';
import { STATE_DIALECTS, openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const logger = createLogger('silent');
afterAll(stopStatePostgres);

interface Node { reg: DeviceRegistry; bus: EventBus; events: KengEvents['device.changed'][] }

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });

async function node(h: StateHarness, db: Db<unknown> = h.db, o: { pollMs?: number; flushIntervalMs?: number; nodeId?: string } = {}): Promise<Node> {
  const bus = new EventBus();
  const clock = { now: () => Date.now() };
  const reg = new DeviceRegistry({ db: h.state, sql: db, bus, logger, metrics: new Metrics({ defaultMetrics: false }), clock, ...o });
  const events: KengEvents['device.changed'][] = [];
  bus.on('device.changed', (e) => events.push(e));
  await reg.start();
  cleanups.push(() => reg.stop());
  return { reg, bus, events };
}

async function seed(reg: DeviceRegistry): Promise<void> {
  await reg.createArea({ code: '01', name: 'Tinh', level: 'province' });
  await reg.createArea({ code: 'x1', name: 'Xa 1', level: 'commune', parent: '01' });
  await reg.createArea({ code: 'x2', name: 'Xa 2', level: 'commune', parent: '01' });
}

async function within<T>(ms: number, fn: () => T | undefined | false): Promise<{ value: T; tookMs: number }> {
  const t0 = Date.now();
  for (;;) {
    const v = fn();
    if (v) return { value: v, tookMs: Date.now() - t0 };
    if (Date.now() - t0 > ms) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const code = async (p: Promise<unknown>): Promise<string | undefined> => {
  try { await p; } catch (e) { return (e as { code: string }).code; }
  return undefined;
};

describe.each(STATE_DIALECTS)('device registry on %s', (dialect) => {
  let h: StateHarness;
  beforeEach(async () => { h = await openState(dialect); });
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); await h.close(); });

  it('areas, devices, credentials, updates, tombstones and purge jobs', async () => {
    const { reg, events } = await node(h);
    await seed(reg);
    expect(await code(reg.createArea({ code: 'x1', name: 'again', level: 'commune', parent: '01' }))).toBe('KENG_ERR_AREA_EXISTS');
    expect(reg.subtree('01').sort()).toEqual(['01', 'x1', 'x2']);
    const { credentials } = await reg.createDevice({ id: 'soil-1', kind: 'sensor', name: 'Soil', area: 'x1', location: { lat: 21.5, lon: 105.25 } });
    expect(await code(reg.createDevice({ id: 'soil-1', kind: 'sensor', name: 'again', area: 'x1' }))).toBe('KENG_ERR_DEVICE_EXISTS');
    expect(await code(reg.createDevice({ id: 'soil-2', kind: 'sensor', name: 'S', area: 'nope' }))).toBe('KENG_ERR_NOT_FOUND');
    expect(await reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: true, identity: { area: 'x1' } });
    expect(await reg.authenticate(credentials.accessToken, undefined)).toMatchObject({ ok: true, identity: { viaToken: true } });

    expect(await reg.updateDevice('soil-1', { area: 'x2', name: 'Soil 2' })).toMatchObject({ area: 'x2', name: 'Soil 2', location: { lat: 21.5, lon: 105.25 } });
    expect(await code(reg.updateDevice('soil-1', { area: 'nope' }))).toBe('KENG_ERR_NOT_FOUND');
    expect(await reg.setEnabled('soil-1', false)).toMatchObject({ enabled: false });
    expect(await reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: false, reason: 'disabled' });
    await reg.setEnabled('soil-1', true);
    const secret = await reg.rotateCredential('soil-1', 'secret');
    expect(await reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: false, reason: 'bad_secret' });
    expect(await reg.authenticate('soil-1', Buffer.from(secret!))).toMatchObject({ ok: true });

    expect(await reg.deleteDevice('soil-1', 'user:an')).toBe(true);
    expect(await reg.deleteDevice('soil-1')).toBe(false);
    expect(reg.getDevice('soil-1')).toBeUndefined();
    expect(events.map((e) => e.change)).toEqual(['created', 'updated', 'updated', 'updated', 'updated', 'deleted']);
    // Registered again: its history starts after the tombstone.
    const again = await reg.createDevice({ id: 'soil-1', kind: 'sensor', name: 'New', area: 'x1' });
    expect(again.device.historyFrom).toBeGreaterThan(again.device.createdAt - 60_000);
    const jobs = new PurgeJobs(h.db);
    expect(await jobs.list()).toEqual([]);
    expect(await reg.requestPurge('soil-1', 'cli:root')).toBe(true);
    expect(await reg.requestPurge('never', 'cli:root')).toBe(false);
    expect((await jobs.list()).map((j) => [j.deviceId, j.requestedBy])).toEqual([['soil-1', 'cli:root']]);

    // A restart loads what was written (floats, flags and epoch ms read back as numbers).
    await reg.stop(); cleanups.pop();
    const { reg: reg2 } = await node(h);
    expect(reg2.getDevice('soil-1')).toMatchObject({ name: 'New', enabled: true, area: 'x1', historyFrom: again.device.historyFrom });
    expect(reg2.getArea('x2')).toMatchObject({ parent: '01', level: 'commune' });
  });

  it('presence and latest values are flushed to device_state and restored', async () => {
    const { reg } = await node(h);
    await seed(reg);
    await reg.createDevice({ id: 'loa-1', kind: 'speaker', name: 'L', area: 'x1' });
    reg.setOnline('loa-1', true, 1_000);
    reg.updateLatest('loa-1', 1_000, { t: 21.5 });
    expect(await reg.flush()).toBe(1);
    const row = (await sql<{ online: number; last_seen: number; latest_json: string }>`SELECT online, last_seen, latest_json FROM device_state WHERE device_id = 'loa-1'`
      .execute(h.db.kysely)).rows[0]!;
    expect(row).toMatchObject({ online: 1, last_seen: 1_000 });
    expect(JSON.parse(row.latest_json)).toEqual({ t: { ts: 1_000, value: 21.5 } });
    await reg.stop(); cleanups.pop();
    const { reg: reg2 } = await node(h);
    expect(reg2.latest('loa-1')).toEqual({ t: { ts: 1_000, value: 21.5 } });
    expect(reg2.lastSeen('loa-1')).toBe(1_000);
  });

  it('provisioning keys: issue, reserve up to the limit, revoke; audited in the same transaction', async () => {
    const { reg } = await node(h);
    await seed(reg);
    const audit = new AuditLog({ db: h.db, clock: { now: () => Date.now() } });
    const svc = new ProvisioningService({ db: h.db, devices: reg, audit, clock: { now: () => Date.now() } });
    const { key } = await svc.issue({ area: 'x1', maxDevices: 1 }, { actor: 'user:an' });
    expect((await svc.list()).map((k) => k.id)).toEqual([key.id]);
    const repo = new ProvisioningRepo(h.db);
    expect(await Promise.all([repo.reserve(key.id, Date.now()), repo.reserve(key.id, Date.now())])).toEqual(expect.arrayContaining([true, false]));
    await repo.release(key.id);
    expect((await repo.get(key.id))?.used).toBe(0);
    expect(await svc.revoke(key.id, { actor: 'user:an' })).toBe(true);
    expect(await svc.revoke(key.id, { actor: 'user:an' })).toBe(false);
    expect((await svc.get(key.id))?.revokedAt).not.toBeNull();
    const actions = (await sql<{ action: string }>`SELECT action FROM audit_log ORDER BY seq`.execute(h.db.kysely)).rows.map((r) => r.action);
    expect(actions).toEqual(['provisioning_key.create', 'provisioning_key.revoke']);
  });
});

describe('two nodes on one PostgreSQL', () => {
  let h: StateHarness;
  let second: Db<unknown>;
  let a: Node;
  let b: Node;
  /** Generous for a loaded machine: the bound is REGISTRY_POLL_MS plus a reload. */
  const BOUND = REGISTRY_POLL_MS + 2_000;

  beforeEach(async () => {
    h = await openState('postgres');
    second = openPgDb(h.url!);
    a = await node(h, h.db, { flushIntervalMs: 200 });
    await seed(a.reg);
    b = await node(h, second, { flushIntervalMs: 200 });
  });
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); await second.close(); await h.close(); });

  it('a device created on A authenticates on B at once and is listed on B within the bound; an area too', async () => {
    const { credentials } = await a.reg.createDevice({ id: 'soil-1', kind: 'sensor', name: 'S', area: 'x1' });
    expect(await b.reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: true, identity: { deviceId: 'soil-1', area: 'x1' } });
    // A change on B right after one on A checks the version first: B knows the new area at once.
    await a.reg.createArea({ code: 'x9', name: 'Xa 9', level: 'commune', parent: '01' });
    expect(await b.reg.createDevice({ id: 'soil-9', kind: 'sensor', name: 'S9', area: 'x9' })).toMatchObject({ device: { area: 'x9' } });
    await a.reg.createArea({ code: 'x3', name: 'Xa 3', level: 'commune', parent: '01' });
    const { tookMs } = await within(BOUND, () => b.reg.getArea('x3'));
    expect(tookMs).toBeLessThan(BOUND);
    await a.reg.updateDevice('soil-1', { area: 'x3' });
    await within(BOUND, () => b.reg.getDevice('soil-1')?.area === 'x3');
    expect(b.events.some((e) => e.deviceId === 'soil-1' && e.change === 'updated')).toBe(true);
  });

  it('a device disabled, then deleted, on A is refused on B within the bound, with the events that close its connection', async () => {
    const { credentials } = await a.reg.createDevice({ id: 'soil-1', kind: 'sensor', name: 'S', area: 'x1' });
    await within(BOUND, () => b.reg.getDevice('soil-1'));
    expect(await b.reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: true });
    b.events.length = 0;
    await a.reg.setEnabled('soil-1', false);
    // The app kicks on 'updated' when the device is now disabled (src/app.ts), as for a change made on this node.
    const disabled = await within(BOUND, () => b.events.find((e) => e.change === 'updated') && b.reg.getDevice('soil-1')?.enabled === false);
    expect(disabled.tookMs).toBeLessThan(BOUND);
    expect(await b.reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: false, reason: 'disabled' });
    await a.reg.deleteDevice('soil-1');
    const deleted = await within(BOUND, () => b.events.find((e) => e.change === 'deleted'));
    expect(deleted.tookMs).toBeLessThan(BOUND);
    expect(b.reg.getDevice('soil-1')).toBeUndefined();
    expect(await b.reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: false, reason: 'unknown_device' });
  });

  it('one id created on both nodes at once: one wins, the other gets DEVICE_EXISTS; both end with the winner', async () => {
    const results = await Promise.allSettled([
      a.reg.createDevice({ id: 'race-1', kind: 'sensor', name: 'from A', area: 'x1' }),
      b.reg.createDevice({ id: 'race-1', kind: 'sensor', name: 'from B', area: 'x2' }),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect((lost[0]!.reason as { code: string }).code).toBe('KENG_ERR_DEVICE_EXISTS');
    const winner = (won[0] as PromiseFulfilledResult<{ device: { name: string } }>).value.device.name;
    await within(BOUND, () => a.reg.getDevice('race-1')?.name === winner && b.reg.getDevice('race-1')?.name === winner);
  });

  it('a secret rotated on A: the old one is refused on B within the bound (at once for a login)', async () => {
    const { credentials } = await a.reg.createDevice({ id: 'soil-1', kind: 'sensor', name: 'S', area: 'x1' });
    expect(await b.reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: true }); // cached as verified on B
    const next = await a.reg.rotateCredential('soil-1', 'secret');
    expect(await b.reg.authenticate('soil-1', Buffer.from(credentials.secret))).toMatchObject({ ok: false, reason: 'bad_secret' });
    expect(await b.reg.authenticate('soil-1', Buffer.from(next!))).toMatchObject({ ok: true });
    const token = await a.reg.rotateCredential('soil-1', 'token');
    expect(await b.reg.authenticate(credentials.accessToken, undefined)).toMatchObject({ ok: false });
    expect(await b.reg.authenticate(token!, undefined)).toMatchObject({ ok: true, identity: { viaToken: true } });
  });

  it('a due purge is claimed by one node: the other does not run it meanwhile', async () => {
    await a.reg.createDevice({ id: 'old-1', kind: 'sensor', name: 'O', area: 'x1' });
    await a.reg.deleteDevice('old-1');
    expect(await a.reg.requestPurge('old-1', 'cli:root')).toBe(true);
    const now = Date.now() + 10;
    const [ja, jb] = await Promise.all([new PurgeJobs(h.db).due(now), new PurgeJobs(second).due(now)]);
    expect([ja?.deviceId, jb?.deviceId].filter(Boolean)).toEqual(['old-1']);
    expect(await new PurgeJobs(second).due(now + 1_000)).toBeUndefined(); // claimed for PURGE_CLAIM_MS
  });

  it('presence: a node never writes the presence of a device it does not hold; views show a device online elsewhere', async () => {
    await a.reg.createDevice({ id: 'loa-1', kind: 'speaker', name: 'L', area: 'x1' });
    await within(BOUND, () => b.reg.getDevice('loa-1'));
    a.reg.setOnline('loa-1', true, Date.now());
    await a.reg.flush();
    // B received a reading for it (not its connection): latest values and last_seen only.
    b.reg.updateLatest('loa-1', Date.now(), { t: 1 });
    b.reg.touch('loa-1', Date.now());
    await new Promise((r) => setTimeout(r, 600)); // B's own flushes (every 200 ms)
    await b.reg.flush();
    const online = async () => (await sql<{ online: number }>`SELECT online FROM device_state WHERE device_id = 'loa-1'`.execute(h.db.kysely)).rows[0]!.online;
    expect(await online()).toBe(1);
    expect(b.reg.isOnline('loa-1')).toBe(false); // not connected to B
    expect(b.reg.view('loa-1')).toMatchObject({ online: true });
    expect(b.reg.views({ online: true }).map((v) => v.id)).toEqual(['loa-1']);
    // A restart of B does not reset it either (the device is connected to A).
    await b.reg.stop();
    await b.reg.start();
    await b.reg.flush();
    expect(await online()).toBe(1);
    // Disconnected from A: offline everywhere after A's flush and B's next read-back.
    a.reg.setOnline('loa-1', false, Date.now());
    await a.reg.flush();
    await within(BOUND, () => b.reg.view('loa-1')?.online === false);
  });

  it('a session taken over by another node: the old node closing its connection does not write the device offline', async () => {
    await migrate(h.db, 'sessions', SESSION_MIGRATIONS);
    const n1 = await node(h, h.db, { nodeId: 'n1' });
    const n2 = await node(h, second, { nodeId: 'n2' });
    await a.reg.createDevice({ id: 'loa-2', kind: 'speaker', name: 'L2', area: 'x1' });
    await within(BOUND, () => n1.reg.getDevice('loa-2') && n2.reg.getDevice('loa-2'));
    const online = async () => (await sql<{ online: number }>`SELECT online FROM device_state WHERE device_id = 'loa-2'`.execute(h.db.kysely)).rows[0]!.online;
    const claim = (nodeId: string, epoch: number) => sql`INSERT INTO device_sessions (device_id, node_id, epoch, connected_at) VALUES ('loa-2', ${nodeId}, ${epoch}, ${Date.now()})
      ON CONFLICT (device_id) DO UPDATE SET node_id = excluded.node_id, epoch = excluded.epoch`.execute(h.db.kysely);
    await claim('n1', 1);
    n1.reg.setOnline('loa-2', true, Date.now());
    await n1.reg.flush();
    // Taken over by n2 (its claim first, then the old connection on n1 closes).
    await claim('n2', 2);
    n2.reg.setOnline('loa-2', true, Date.now());
    n1.reg.setOnline('loa-2', false, Date.now());
    await n2.reg.flush();
    await n1.reg.flush();
    expect(await online()).toBe(1);
    // The device leaves n2 (its row released): offline.
    await sql`DELETE FROM device_sessions WHERE device_id = 'loa-2'`.execute(h.db.kysely);
    n2.reg.setOnline('loa-2', false, Date.now());
    await n2.reg.flush();
    expect(await online()).toBe(0);
  });
});
