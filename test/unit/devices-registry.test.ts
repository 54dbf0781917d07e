import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { StateDb } from '../../src/storage/state/index.js';
import { CredentialVerifier, DeviceRegistry } from '../../src/devices/index.js';
import { EventBus, Metrics, createLogger, type KengEvents } from '../../src/core/index.js';

const logger = createLogger('silent');
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });

interface Harness { db: StateDb; reg: DeviceRegistry; bus: EventBus; metrics: Metrics; dataDir: string; clock: { t: number; now(): number } }

async function open(dataDir?: string, opts: { ownsPresence?: boolean; flushIntervalMs?: number; verifier?: CredentialVerifier } = {}): Promise<Harness> {
  const dir = dataDir ?? mkdtempSync(path.join(tmpdir(), 'keng-reg-'));
  if (!dataDir) cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const db = new StateDb({ dataDir: dir, logger });
  const bus = new EventBus();
  const metrics = new Metrics({ defaultMetrics: false });
  const clock = { t: 1_764_460_800_000, now() { return this.t; } };
  const reg = new DeviceRegistry({ db, bus, logger, metrics, clock, ...opts });
  await db.start();
  await reg.start();
  let stopped = false;
  const h: Harness = { db, reg, bus, metrics, dataDir: dir, clock };
  cleanups.push(async () => { if (!stopped) { stopped = true; await reg.stop(); await db.stop(); } });
  return h;
}

async function stopH(h: Harness): Promise<void> { await h.reg.stop(); await h.db.stop(); }

function record<K extends keyof KengEvents>(bus: EventBus, name: K): KengEvents[K][] {
  const out: KengEvents[K][] = [];
  bus.on(name, (p) => out.push(p));
  return out;
}

async function seedAreas(reg: DeviceRegistry): Promise<void> {
  await reg.createArea({ code: '01', name: 'Ha Noi', level: 'province' });
  await reg.createArea({ code: '00004', name: 'Ba Dinh', level: 'commune', parent: '01' });
  await reg.createArea({ code: 'thon-1', name: 'Thon 1', level: 'village', parent: '00004' });
  await reg.createArea({ code: '00008', name: 'Hoan Kiem', level: 'commune', parent: '01' });
  await reg.createArea({ code: '79', name: 'Ho Chi Minh', level: 'province' });
}

async function gauge(m: Metrics): Promise<number> {
  return (await m.devicesOnline.get()).values[0]?.value ?? 0;
}

describe('areas', () => {
  it('enforces province → commune → village', async () => {
    const { reg } = await open();
    await seedAreas(reg);
    expect(reg.getArea('thon-1')).toMatchObject({ level: 'village', parent: '00004' });
    const code = async (fn: () => unknown): Promise<string | undefined> => { try { await fn(); } catch (e) { return (e as { code: string }).code; } return undefined; };
    expect(await code(() => reg.createArea({ code: 'p2', name: 'P', level: 'province', parent: '01' }))).toBe('KENG_ERR_AREA_HIERARCHY');
    expect(await code(() => reg.createArea({ code: 'c2', name: 'C', level: 'commune' }))).toBe('KENG_ERR_AREA_HIERARCHY');
    expect(await code(() => reg.createArea({ code: 'c3', name: 'C', level: 'commune', parent: '00004' }))).toBe('KENG_ERR_AREA_HIERARCHY');
    expect(await code(() => reg.createArea({ code: 'v2', name: 'V', level: 'village', parent: '01' }))).toBe('KENG_ERR_AREA_HIERARCHY');
    expect(await code(() => reg.createArea({ code: 'v3', name: 'V', level: 'village', parent: 'nope' }))).toBe('KENG_ERR_AREA_HIERARCHY');
    expect(await code(() => reg.createArea({ code: '01', name: 'again', level: 'province' }))).toBe('KENG_ERR_AREA_EXISTS');
    expect(await code(() => reg.createArea({ code: 'bad code', name: 'x', level: 'province' }))).toBe('KENG_ERR_VALIDATION');
    expect(await code(() => reg.createArea({ code: 'd1', name: 'x', level: 'district' as never }))).toBe('KENG_ERR_VALIDATION');
    expect(await code(() => reg.createArea({ code: 'n1', name: '', level: 'province' }))).toBe('KENG_ERR_VALIDATION');
    expect(reg.listAreas().map((a) => a.code)).toEqual(['01', '79', '00004', '00008', 'thon-1']);
  });

  it('subtree returns the area and its descendants, updated on change', async () => {
    const { reg } = await open();
    await seedAreas(reg);
    expect(reg.subtree('01').sort()).toEqual(['00004', '00008', '01', 'thon-1']);
    expect(reg.subtree('00004').sort()).toEqual(['00004', 'thon-1']);
    expect(reg.subtree('79')).toEqual(['79']);
    expect(reg.subtree('nope')).toEqual([]);
    await reg.createArea({ code: 'thon-2', name: 'Thon 2', level: 'village', parent: '00008' });
    expect(reg.subtree('01')).toContain('thon-2');
  });
});

describe('devices', () => {
  it('creates, lists by area subtree and kind, deletes', async () => {
    const { reg, bus, db } = await open();
    await seedAreas(reg);
    const changes = record(bus, 'device.changed');
    const { device, credentials } = await reg.createDevice({
      id: 'soil-01', kind: 'sensor', name: 'Soil 1', area: 'thon-1', location: { lat: 21.03, lon: 105.85 }, model: 'SM-1',
    });
    expect(device).toEqual({
      id: 'soil-01', kind: 'sensor', name: 'Soil 1', area: 'thon-1', location: { lat: 21.03, lon: 105.85 },
      model: 'SM-1', enabled: true, createdAt: 1_764_460_800_000, historyFrom: null,
    });
    expect(credentials.secret.length).toBeGreaterThanOrEqual(32);
    expect(credentials.accessToken.length).toBeGreaterThanOrEqual(32);
    await reg.createDevice({ id: 'loa-01', kind: 'speaker', name: 'Loa 1', area: '00008' });
    await reg.createDevice({ id: 'loa-79', kind: 'speaker', name: 'Loa HCM', area: '79' });
    expect(reg.getDevice('loa-01')).toMatchObject({ location: null, model: null });
    expect(reg.listDevices().map((d) => d.id)).toEqual(['loa-01', 'loa-79', 'soil-01']);
    expect(reg.listDevices({ area: '01' }).map((d) => d.id)).toEqual(['loa-01', 'soil-01']);
    expect(reg.listDevices({ area: '00004' }).map((d) => d.id)).toEqual(['soil-01']);
    expect(reg.listDevices({ area: '01', kind: 'speaker' }).map((d) => d.id)).toEqual(['loa-01']);
    expect(reg.listDevices({ area: 'nope' })).toEqual([]);
    expect(await reg.deleteDevice('loa-01')).toBe(true);
    expect(await reg.deleteDevice('loa-01')).toBe(false);
    expect(reg.getDevice('loa-01')).toBeUndefined();
    expect(db.db.prepare("SELECT COUNT(*) FROM device_state WHERE device_id = 'loa-01'").pluck().get()).toBe(0);
    expect(changes).toEqual([
      { deviceId: 'soil-01', change: 'created' }, { deviceId: 'loa-01', change: 'created' },
      { deviceId: 'loa-79', change: 'created' }, { deviceId: 'loa-01', change: 'deleted' },
    ]);
  });

  it('validates input', async () => {
    const { reg } = await open();
    await seedAreas(reg);
    const code = async (d: Record<string, unknown>): Promise<string | undefined> => {
      try { await reg.createDevice({ id: 'dev-x', kind: 'sensor', name: 'X', area: 'thon-1', ...d } as never); } catch (e) { return (e as { code: string }).code; }
      return undefined;
    };
    expect(await code({ id: 'Bad-Id' })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ id: 'x' })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ kind: 'lamp' })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ name: '' })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ name: 'n'.repeat(129) })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ location: { lat: 91, lon: 0 } })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ location: { lat: 0, lon: -180.5 } })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ location: { lat: Number.NaN, lon: 0 } })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ area: 'nope' })).toBe('KENG_ERR_NOT_FOUND');
    expect(await code({ name: 'n'.repeat(128), location: { lat: -90, lon: 180 } })).toBeUndefined();
    expect(await code({})).toBe('KENG_ERR_DEVICE_EXISTS');
  });

  it('two registrations of one id at once (hashing is async): one wins, the other gets DEVICE_EXISTS', async () => {
    const { reg } = await open();
    await seedAreas(reg);
    const rs = await Promise.allSettled([1, 2].map((n) => reg.createDevice({ id: 'twin-01', kind: 'sensor', name: `Twin ${n}`, area: 'thon-1' })));
    expect(rs.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(((rs.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason as { code: string }).code).toBe('KENG_ERR_DEVICE_EXISTS');
    expect(reg.listDevices().filter((d) => d.id === 'twin-01')).toHaveLength(1);
  });

  it('stores only hashes of the secret and the token', async () => {
    const { reg, db } = await open();
    await seedAreas(reg);
    const { credentials } = await reg.createDevice({ id: 'soil-01', kind: 'sensor', name: 'S', area: 'thon-1' });
    const row = db.db.prepare("SELECT * FROM devices WHERE id = 'soil-01'").get() as Record<string, unknown>;
    const raw = JSON.stringify(row);
    expect(raw).not.toContain(credentials.secret);
    expect(raw).not.toContain(credentials.accessToken);
    expect(row.secret_hash).toMatch(/^scrypt\$1024\$8\$1\$/);
    expect(row.token_hash).toMatch(/^scrypt\$1024\$8\$1\$/);
    expect(row.token_lookup).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('authenticate', () => {
  it('by id + secret and by access token, with each failure reason', async () => {
    const { reg } = await open();
    await seedAreas(reg);
    const { credentials } = await reg.createDevice({ id: 'loa-01', kind: 'speaker', name: 'Loa', area: 'thon-1' });
    const ok = await reg.authenticate('loa-01', Buffer.from(credentials.secret));
    expect(ok).toEqual({ ok: true, identity: { deviceId: 'loa-01', kind: 'speaker', area: 'thon-1', viaToken: false } });
    const tok = await reg.authenticate(credentials.accessToken, undefined);
    expect(tok).toEqual({ ok: true, identity: { deviceId: 'loa-01', kind: 'speaker', area: 'thon-1', viaToken: true } });
    expect(await reg.authenticate(credentials.accessToken, Buffer.from('placeholder'))).toMatchObject({ ok: true });

    expect(await reg.authenticate('loa-99', Buffer.from(credentials.secret))).toEqual({ ok: false, reason: 'unknown_device' });
    expect(await reg.authenticate('loa-01', Buffer.from('wrong'))).toEqual({ ok: false, reason: 'bad_secret' });
    expect(await reg.authenticate('loa-01', undefined)).toEqual({ ok: false, reason: 'bad_secret' });
    expect(await reg.authenticate('Not-A-Token_xyz', undefined)).toEqual({ ok: false, reason: 'bad_credentials' });
    expect(await reg.authenticate('', undefined)).toEqual({ ok: false, reason: 'bad_credentials' });

    await reg.setEnabled('loa-01', false);
    expect(await reg.authenticate('loa-01', Buffer.from(credentials.secret))).toEqual({ ok: false, reason: 'disabled' });
    expect(await reg.authenticate(credentials.accessToken, undefined)).toEqual({ ok: false, reason: 'disabled' });
    await reg.setEnabled('loa-01', true);
    expect(await reg.authenticate('loa-01', Buffer.from(credentials.secret))).toMatchObject({ ok: true });

    await reg.deleteDevice('loa-01');
    expect(await reg.authenticate('loa-01', Buffer.from(credentials.secret))).toEqual({ ok: false, reason: 'unknown_device' });
    expect(await reg.authenticate(credentials.accessToken, undefined)).toEqual({ ok: false, reason: 'bad_credentials' });
  });
});

describe('changing a registered device', () => {
  it('updateDevice changes only the keys given, moves areas, disables; emits device.changed', async () => {
    const { reg, bus } = await open();
    await seedAreas(reg);
    const { credentials } = await reg.createDevice({ id: 'loa-01', kind: 'speaker', name: 'Loa', area: 'thon-1', location: { lat: 21, lon: 105 }, model: 'L-1' });
    const changes = record(bus, 'device.changed');
    expect(await reg.updateDevice('loa-01', { name: 'Loa đình' })).toMatchObject({ name: 'Loa đình', area: 'thon-1', location: { lat: 21, lon: 105 }, model: 'L-1', enabled: true });
    expect(await reg.updateDevice('loa-01', { location: null, model: null, area: '00008' })).toMatchObject({ name: 'Loa đình', area: '00008', location: null, model: null });
    expect(reg.listDevices({ area: '00004' })).toEqual([]);
    expect(reg.listDevices({ area: '00008' }).map((d) => d.id)).toEqual(['loa-01']);
    expect(await reg.authenticate('loa-01', Buffer.from(credentials.secret))).toMatchObject({ ok: true, identity: { area: '00008' } });
    expect(await reg.updateDevice('loa-01', { enabled: false })).toMatchObject({ enabled: false });
    expect(await reg.authenticate('loa-01', Buffer.from(credentials.secret))).toEqual({ ok: false, reason: 'disabled' });
    expect(await reg.updateDevice('loa-01', { enabled: true })).toMatchObject({ enabled: true });
    expect(changes).toEqual(Array(4).fill({ deviceId: 'loa-01', change: 'updated' }));
    expect(await reg.updateDevice('loa-99', { name: 'x' })).toBeUndefined();
    const code = async (c: Record<string, unknown>): Promise<string | undefined> => { try { await reg.updateDevice('loa-01', c as never); } catch (e) { return (e as { code: string }).code; } return undefined; };
    expect(await code({ area: 'nope' })).toBe('KENG_ERR_NOT_FOUND');
    expect(await code({ name: '' })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ location: { lat: 91, lon: 0 } })).toBe('KENG_ERR_VALIDATION');
    expect(await code({ kind: 'sensor' })).toBe('KENG_ERR_VALIDATION');
    expect(reg.getDevice('loa-01')).toMatchObject({ name: 'Loa đình', area: '00008', kind: 'speaker' });
  });

  it('rotateCredential: the new secret or token works, the old one is refused at once', async () => {
    const { reg } = await open();
    await seedAreas(reg);
    const { credentials } = await reg.createDevice({ id: 'loa-01', kind: 'speaker', name: 'Loa', area: 'thon-1' });
    expect(await reg.authenticate('loa-01', Buffer.from(credentials.secret))).toMatchObject({ ok: true }); // cached verification
    const secret = await reg.rotateCredential('loa-01', 'secret');
    expect(secret).toMatch(/.{32,}/);
    expect(await reg.authenticate('loa-01', Buffer.from(credentials.secret))).toEqual({ ok: false, reason: 'bad_secret' });
    expect(await reg.authenticate('loa-01', Buffer.from(secret!))).toMatchObject({ ok: true });
    expect(await reg.authenticate(credentials.accessToken, undefined)).toMatchObject({ ok: true, identity: { viaToken: true } });
    const token = await reg.rotateCredential('loa-01', 'token');
    expect(await reg.authenticate(credentials.accessToken, undefined)).toEqual({ ok: false, reason: 'bad_credentials' });
    expect(await reg.authenticate(token!, undefined)).toMatchObject({ ok: true, identity: { deviceId: 'loa-01' } });
    expect(await reg.authenticate('loa-01', Buffer.from(secret!))).toMatchObject({ ok: true });
    expect(await reg.rotateCredential('loa-99', 'secret')).toBeUndefined();
  });

  it('a CONNECT checked against the old secret while it is rotated is refused', async () => {
    // The old secret's hash check is held until the rotation is through, so the test does not depend on
    // which of the two finishes first in the thread pool.
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    class HeldVerifier extends CredentialVerifier {
      override async verify(deviceId: string, secret: string, encoded: string): Promise<boolean> {
        const good = await super.verify(deviceId, secret, encoded);
        await gate;
        return good;
      }
    }
    const { reg } = await open(undefined, { verifier: new HeldVerifier() });
    await seedAreas(reg);
    const { credentials } = await reg.createDevice({ id: 'loa-01', kind: 'speaker', name: 'Loa', area: 'thon-1' });
    const pending = reg.authenticate('loa-01', Buffer.from(credentials.secret));
    await reg.rotateCredential('loa-01', 'secret');
    release();
    expect(await pending).toEqual({ ok: false, reason: 'bad_secret' });
  });
});

describe('presence and data', () => {
  it('setOnline emits status only on change and updates the gauge', async () => {
    const { reg, bus, metrics } = await open();
    await seedAreas(reg);
    await reg.createDevice({ id: 'loa-01', kind: 'speaker', name: 'Loa', area: 'thon-1' });
    const status = record(bus, 'status');
    reg.setOnline('loa-01', true, 1000);
    reg.setOnline('loa-01', true, 1500);
    expect(reg.isOnline('loa-01')).toBe(true);
    expect(await gauge(metrics)).toBe(1);
    reg.setOnline('loa-01', false, 2000);
    reg.setOnline('ghost', true, 2000); // unknown: ignored
    expect(status).toEqual([
      { deviceId: 'loa-01', area: 'thon-1', online: true, at: 1000 },
      { deviceId: 'loa-01', area: 'thon-1', online: false, at: 2000 },
    ]);
    expect(await gauge(metrics)).toBe(0);
    reg.touch('loa-01', 2500);
    expect(reg.view('loa-01')?.lastSeen).toBe(2500);
    reg.touch('loa-01', 2400); // never goes back
    expect(reg.view('loa-01')?.lastSeen).toBe(2500);
  });

  it('updateLatest keeps the newest ts per field', async () => {
    const { reg } = await open();
    await seedAreas(reg);
    await reg.createDevice({ id: 'soil-01', kind: 'sensor', name: 'S', area: 'thon-1' });
    reg.updateLatest('soil-01', 2000, { soil_moisture: 31.5, temperature: 24 });
    reg.updateLatest('soil-01', 1000, { soil_moisture: 10, battery_v: 3.7 }); // older backlog reading
    expect(reg.latest('soil-01')).toEqual({
      soil_moisture: { ts: 2000, value: 31.5 }, temperature: { ts: 2000, value: 24 }, battery_v: { ts: 1000, value: 3.7 },
    });
    reg.updateLatest('soil-01', 3000, { soil_moisture: 33 });
    expect(reg.latest('soil-01').soil_moisture).toEqual({ ts: 3000, value: 33 });
    // returned values are copies
    reg.latest('soil-01').soil_moisture!.value = 0;
    expect(reg.latest('soil-01').soil_moisture!.value).toBe(33);
  });

  it('mergeAttributes merges and emits', async () => {
    const { reg, bus } = await open();
    await seedAreas(reg);
    await reg.createDevice({ id: 'soil-01', kind: 'sensor', name: 'S', area: 'thon-1' });
    const events = record(bus, 'attributes');
    reg.mergeAttributes('soil-01', { firmware: '1.0', model: 'SM-1' });
    reg.mergeAttributes('soil-01', JSON.parse('{"firmware": "1.1", "__proto__": {"polluted": true}}') as Record<string, unknown>);
    expect(reg.attributes('soil-01')).toEqual({ firmware: '1.1', model: 'SM-1' });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(events.at(-1)).toEqual({ deviceId: 'soil-01', attributes: { firmware: '1.1', model: 'SM-1' } });
  });

  it('views combine device, presence, attributes and latest; filter by online', async () => {
    const { reg } = await open();
    await seedAreas(reg);
    await reg.createDevice({ id: 'a-01', kind: 'sensor', name: 'A', area: 'thon-1' });
    await reg.createDevice({ id: 'b-01', kind: 'speaker', name: 'B', area: '00008' });
    reg.setOnline('a-01', true, 10);
    reg.updateLatest('a-01', 10, { t: 1 });
    expect(reg.view('a-01')).toMatchObject({ id: 'a-01', online: true, lastSeen: 10, attributes: {}, latest: { t: { ts: 10, value: 1 } } });
    expect(reg.views({ online: true }).map((v) => v.id)).toEqual(['a-01']);
    expect(reg.views({ online: false }).map((v) => v.id)).toEqual(['b-01']);
    expect(reg.view('nope')).toBeUndefined();
  });

  it('flushes to device_state and reloads across stop/start (all offline at start)', async () => {
    const h = await open(undefined, { flushIntervalMs: 20 });
    await seedAreas(h.reg);
    await h.reg.createDevice({ id: 'soil-01', kind: 'sensor', name: 'S', area: 'thon-1' });
    h.reg.setOnline('soil-01', true, 1000);
    h.reg.updateLatest('soil-01', 1500, { soil_moisture: 31.5, ok: true, note: 'x' });
    h.reg.mergeAttributes('soil-01', { firmware: '2.0' });
    await new Promise((r) => setTimeout(r, 80)); // periodic flush
    const row = h.db.db.prepare("SELECT * FROM device_state WHERE device_id = 'soil-01'").get() as Record<string, unknown>;
    expect(row).toMatchObject({ online: 1, last_seen: 1000 });
    expect(JSON.parse(row.latest_json as string)).toEqual({ soil_moisture: { ts: 1500, value: 31.5 }, ok: { ts: 1500, value: true }, note: { ts: 1500, value: 'x' } });
    h.reg.touch('soil-01', 1600);
    await stopH(h); // flush at stop

    const h2 = await open(h.dataDir);
    expect(h2.reg.view('soil-01')).toMatchObject({
      online: false, lastSeen: 1600, attributes: { firmware: '2.0' }, latest: { soil_moisture: { ts: 1500, value: 31.5 } },
    });
    expect(await gauge(h2.metrics)).toBe(0);
    expect(await h2.reg.flush()).toBe(1); // the stale online=1 row is rewritten as offline
    expect(h2.db.db.prepare("SELECT online FROM device_state WHERE device_id = 'soil-01'").pluck().get()).toBe(0);
    await stopH(h2);
  });
});

describe('changes made by another process (the CLI)', () => {
  it('devices and areas added elsewhere are seen at once; deletions within a tick', async () => {
    const server = await open(undefined, { flushIntervalMs: 20 });
    await seedAreas(server.reg);
    await server.reg.createDevice({ id: 'old-01', kind: 'sensor', name: 'Old', area: 'thon-1' });
    server.reg.setOnline('old-01', true, 5);
    const cli = await open(server.dataDir, { ownsPresence: false });
    const changes = record(server.bus, 'device.changed');
    const status = record(server.bus, 'status');

    await cli.reg.createArea({ code: 'thon-9', name: 'Thon 9', level: 'village', parent: '00008' });
    const { credentials } = await cli.reg.createDevice({ id: 'new-01', kind: 'speaker', name: 'New', area: 'thon-9' });
    expect(server.reg.getDevice('new-01')).toMatchObject({ area: 'thon-9' });
    expect(server.reg.getArea('thon-9')).toMatchObject({ level: 'village' });
    expect(server.reg.subtree('00008')).toContain('thon-9');
    expect(await server.reg.authenticate('new-01', Buffer.from(credentials.secret))).toMatchObject({ ok: true });
    expect(changes).toContainEqual({ deviceId: 'new-01', change: 'created' });

    // the CLI's registry does not touch presence
    await cli.reg.stop();
    await cli.db.stop();
    expect(server.reg.isOnline('old-01')).toBe(true);

    const cli2 = await open(server.dataDir, { ownsPresence: false });
    expect(await cli2.reg.deleteDevice('old-01')).toBe(true);
    await new Promise((r) => setTimeout(r, 80));
    expect(server.reg.getDevice('old-01')).toBeUndefined();
    expect(changes).toContainEqual({ deviceId: 'old-01', change: 'deleted' });
    expect(status).toContainEqual(expect.objectContaining({ deviceId: 'old-01', online: false }));
    // the server's flush does not resurrect the deleted device's state
    expect(server.db.db.prepare("SELECT COUNT(*) FROM device_state WHERE device_id = 'old-01'").pluck().get()).toBe(0);
  });
});
