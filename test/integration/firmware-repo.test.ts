/**
 * src/firmware/repo.ts on both dialects of the state Db port (the embedded
 * SQLite state.db and a real PostgreSQL 15): packages (unique title and
 * version, deletion refused while used), rollouts and their second stage,
 * device reports merged per row, the caller's `also` in the same transaction;
 * and, on PostgreSQL, two pools (two nodes) at once: reports of the devices of
 * one rollout (also of one device), continuing one rollout, and deleting a
 * package while a rollout of it is made.
 */
import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FirmwareRepo } from '../../src/firmware/repo.js';
import type { FirmwarePackage, Rollout } from '../../src/firmware/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { STATE_DIALECTS, openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const DEVICES = Array.from({ length: 40 }, (_, i) => `dev-${String(i).padStart(2, '0')}`);

function pkg(id: string, version = '1.0'): FirmwarePackage {
  return {
    id, title: 'soil', version, model: null, size: 1000, checksumAlgorithm: 'SHA256', checksum: 'ab'.repeat(32),
    sha256: createHash('sha256').update(id).digest('hex'), createdAt: 1_700_000_000_000, createdBy: 'user:admin',
  };
}
function rollout(id: string, packageId: string, devices: string[], firstCount: number): Rollout {
  return { id, packageId, percent: 50, devices, firstCount, areas: ['va1'], stage: 'first', createdAt: 1_700_000_001_000, createdBy: 'user:admin', completedAt: null };
}

/** The embedded store's foreign keys need the devices; PostgreSQL has no devices table yet. */
function seedDevices(h: StateHarness): void {
  if (!h.sqlite) return;
  h.sqlite.prepare("INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p1', 'P', 'province', NULL, 0)").run();
  const ins = h.sqlite.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at)
    VALUES (?, 'sensor', ?, 'p1', 'x', ?, 'x', 0)`);
  for (const d of DEVICES) ins.run(d, d, `lookup-${d}`);
}

const count = async (db: Db<unknown>, table: string): Promise<number> =>
  Number((await sql<{ n: number }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(db.kysely)).rows[0]!.n);

describe.each(STATE_DIALECTS)('firmware repository on %s', (dialect) => {
  let h: StateHarness;
  let repo: FirmwareRepo;
  beforeEach(async () => {
    h = await openState(dialect);
    seedDevices(h);
    repo = new FirmwareRepo(h.db);
  });
  afterEach(() => h.close());

  it('packages: listed newest first, found by title and version, one per title and version', async () => {
    await repo.insertPackage(pkg('fw_a', '1.0'));
    await repo.insertPackage({ ...pkg('fw_b', '2.0'), createdAt: 1_800_000_000_000, model: 'LS-30' });
    expect((await repo.packages()).map((p) => p.id)).toEqual(['fw_b', 'fw_a']);
    expect(await repo.package('fw_b')).toEqual({ ...pkg('fw_b', '2.0'), createdAt: 1_800_000_000_000, model: 'LS-30' });
    expect((await repo.packageByTitle('soil', '1.0'))?.id).toBe('fw_a');
    expect(await repo.packageByTitle('soil', '3.0')).toBeUndefined();
    const dup = await repo.insertPackage(pkg('fw_c', '1.0')).catch((e: unknown) => e as { code?: string });
    expect(['23505', 'SQLITE_CONSTRAINT_UNIQUE']).toContain(dup?.code);
  });

  it('what runs in the write\'s transaction commits with it, or takes it back when it throws', async () => {
    await expect(repo.insertPackage(pkg('fw_a'), async () => { throw new Error('audit failed'); })).rejects.toThrow('audit failed');
    expect(await repo.packages()).toEqual([]);
    let ran = 0;
    await repo.insertPackage(pkg('fw_a'), async (trx) => { ran++; await sql`SELECT 1`.execute(trx); });
    expect(ran).toBe(1);
    await expect(repo.insertRollout(rollout('ro_1', 'fw_a', DEVICES.slice(0, 4), 2), 5, async () => { throw new Error('no'); })).rejects.toThrow('no');
    expect(await repo.rollouts()).toEqual([]);
    expect(await repo.assignments()).toEqual([]);
  });

  it('a rollout assigns its first stage; the second stage once, with the rest', async () => {
    await repo.insertPackage(pkg('fw_a'));
    const r = rollout('ro_1', 'fw_a', DEVICES, 10);
    await repo.insertRollout(r, 5);
    expect(await repo.rollout('ro_1')).toEqual(r);
    expect((await repo.assignments()).map((a) => a.deviceId)).toEqual(DEVICES.slice(0, 10));
    expect((await repo.assignments())[0]).toEqual({ deviceId: DEVICES[0], packageId: 'fw_a', rolloutId: 'ro_1', assignedAt: 5 });
    let ran = 0;
    const done = await repo.completeRollout(r, DEVICES.slice(10), 9, async () => { ran++; });
    expect(done).toEqual({ ...r, stage: 'all', completedAt: 9 });
    expect(await repo.completeRollout(r, DEVICES.slice(10), 11, async () => { ran++; })).toBeUndefined();
    expect(ran).toBe(1);
    const all = await repo.assignments();
    expect(all).toHaveLength(40);
    expect(all.filter((a) => a.assignedAt === 9)).toHaveLength(30);
    // A later rollout of another package takes the devices over.
    await repo.insertPackage(pkg('fw_b', '2.0'));
    await repo.insertRollout({ ...rollout('ro_2', 'fw_b', DEVICES.slice(0, 2), 2), stage: 'all', percent: 100, completedAt: 20 }, 20);
    expect((await repo.device(DEVICES[0]!)).assignment).toEqual({ deviceId: DEVICES[0], packageId: 'fw_b', rolloutId: 'ro_2', assignedAt: 20 });
  });

  it('more devices than one multi-row insert takes', async () => {
    await repo.insertPackage(pkg('fw_a'));
    const many = Array.from({ length: 1_234 }, (_, i) => `x-${i}`);
    if (h.sqlite) {
      const ins = h.sqlite.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'sensor', ?, 'p1', 'x', ?, 'x', 0)`);
      h.sqlite.transaction(() => { for (const d of many) ins.run(d, d, `l-${d}`); })();
    }
    await repo.insertRollout({ ...rollout('ro_1', 'fw_a', many, many.length), stage: 'all', percent: 100 }, 5);
    expect(await count(h.db, 'firmware_assignments')).toBe(1_234);
  });

  it('a package is deleted only while nothing names it', async () => {
    await repo.insertPackage(pkg('fw_a'));
    await repo.insertPackage(pkg('fw_b', '2.0'));
    await repo.insertRollout(rollout('ro_1', 'fw_a', DEVICES.slice(0, 2), 1), 5);
    let ran = 0;
    expect(await repo.deletePackage('fw_a', async () => { ran++; })).toBe('in-use');
    expect(await repo.deletePackage('fw_nope', async () => { ran++; })).toBe('missing');
    expect(ran).toBe(0);
    expect(await repo.deletePackage('fw_b', async () => { ran++; })).toBe('deleted');
    expect(ran).toBe(1);
    expect((await repo.packages()).map((p) => p.id)).toEqual(['fw_a']);
  });

  it('a report changes only the keys it carries; a new fw_state clears the old error', async () => {
    expect(await repo.putState({ deviceId: DEVICES[0]!, state: 'DOWNLOADING', at: 10 }))
      .toEqual({ deviceId: DEVICES[0], state: 'DOWNLOADING', error: null, currentTitle: null, currentVersion: null, updatedAt: 10 });
    await repo.putState({ deviceId: DEVICES[0]!, currentTitle: 'soil', currentVersion: '1.0', at: 11 });
    await repo.putState({ deviceId: DEVICES[0]!, state: 'FAILED', error: 'Checksum verification failed', at: 12 });
    expect((await repo.device(DEVICES[0]!)).state)
      .toEqual({ deviceId: DEVICES[0], state: 'FAILED', error: 'Checksum verification failed', currentTitle: 'soil', currentVersion: '1.0', updatedAt: 12 });
    await repo.putState({ deviceId: DEVICES[0]!, currentVersion: '1.1', at: 13 });
    expect((await repo.device(DEVICES[0]!)).state).toMatchObject({ state: 'FAILED', error: 'Checksum verification failed', currentVersion: '1.1' });
    await repo.putState({ deviceId: DEVICES[0]!, state: 'DOWNLOADING', at: 14 });
    expect((await repo.device(DEVICES[0]!)).state).toMatchObject({ state: 'DOWNLOADING', error: null, currentTitle: 'soil', currentVersion: '1.1', updatedAt: 14 });
    await repo.putState({ deviceId: DEVICES[0]!, currentTitle: null, at: 15 });
    expect((await repo.device(DEVICES[0]!)).state).toMatchObject({ state: 'DOWNLOADING', currentTitle: null, currentVersion: '1.1' });
  });

  it('reports of many devices started in one tick are all stored, each in order', async () => {
    await Promise.all(DEVICES.flatMap((d, i) => [
      repo.putState({ deviceId: d, state: 'DOWNLOADING', at: i }),
      repo.putState({ deviceId: d, state: 'UPDATED', at: i + 1 }),
      repo.putState({ deviceId: d, currentVersion: '2.0', at: i + 2 }),
    ]));
    const states = await repo.states();
    expect(states).toHaveLength(DEVICES.length);
    // PostgreSQL runs them on several connections: the per-row merge keeps both keys whatever the order.
    expect(states.every((s) => s.currentVersion === '2.0' && (s.state === 'UPDATED' || (dialect === 'postgres' && s.state === 'DOWNLOADING')))).toBe(true);
    if (dialect === 'sqlite') expect(states.every((s) => s.state === 'UPDATED')).toBe(true);
  });

  it('a deleted device\'s rows go', async () => {
    await repo.insertPackage(pkg('fw_a'));
    await repo.insertRollout({ ...rollout('ro_1', 'fw_a', DEVICES.slice(0, 2), 2), stage: 'all' }, 5);
    await repo.putState({ deviceId: DEVICES[0]!, state: 'UPDATED', at: 6 });
    await repo.forgetDevice(DEVICES[0]!);
    expect(await repo.device(DEVICES[0]!)).toEqual({ assignment: undefined, state: undefined });
    expect((await repo.device(DEVICES[1]!)).assignment?.packageId).toBe('fw_a');
  });
});

describe('firmware repository: two PostgreSQL pools (two nodes) at once', () => {
  let h: StateHarness;
  let other: Db<unknown>;
  let a: FirmwareRepo;
  let b: FirmwareRepo;
  beforeEach(async () => {
    h = await openState('postgres');
    other = openPgDb(h.url!);
    a = new FirmwareRepo(h.db);
    b = new FirmwareRepo(other);
    await a.insertPackage(pkg('fw_a'));
  });
  afterEach(async () => { await other.close(); await h.close(); });
  afterAll(stopStatePostgres);

  it('reports of the devices of one rollout, half on each node, interleaved: every device\'s progress exact, the rollout row untouched', async () => {
    const r = rollout('ro_1', 'fw_a', DEVICES, 40);
    await a.insertRollout({ ...r, stage: 'all', percent: 100, completedAt: 5 }, 5);
    const steps = ['DOWNLOADING', 'DOWNLOADED', 'VERIFIED', 'UPDATING', 'UPDATED'];
    // Each device reports its steps in order on its own node; both nodes at once. Device 0 on both nodes:
    // its fw_state on node a, its version on node b, at the same time (a merge, not a lost update).
    const node = (repo: FirmwareRepo, devices: string[]) => Promise.all(devices.map(async (d) => {
      for (const [i, s] of steps.entries()) await repo.putState({ deviceId: d, state: s, at: 100 + i });
      if (d === DEVICES[39]) await repo.putState({ deviceId: d, state: 'FAILED', error: 'flash write failed', at: 200 });
    }));
    const same = Array.from({ length: 50 }, (_, i) => [
      a.putState({ deviceId: DEVICES[0]!, state: steps[i % 5]!, at: 300 + i }),
      b.putState({ deviceId: DEVICES[0]!, currentTitle: 'soil', currentVersion: `1.${i}`, at: 300 + i }),
    ]).flat();
    await Promise.all([node(a, DEVICES.slice(1, 20)), node(b, DEVICES.slice(20)), ...same]);
    const states = new Map((await a.states()).map((s) => [s.deviceId, s]));
    expect(states.size).toBe(40);
    for (const d of DEVICES.slice(1, 39)) expect(states.get(d)).toMatchObject({ state: 'UPDATED', error: null });
    expect(states.get(DEVICES[39]!)).toMatchObject({ state: 'FAILED', error: 'flash write failed' });
    // Both keys of device 0 survive: the state from node a, the title and version from node b.
    expect(steps).toContain(states.get(DEVICES[0]!)!.state);
    expect(states.get(DEVICES[0]!)).toMatchObject({ currentTitle: 'soil' });
    expect(states.get(DEVICES[0]!)!.currentVersion).toMatch(/^1\.\d+$/);
    expect(await b.rollout('ro_1')).toEqual({ ...r, stage: 'all', percent: 100, completedAt: 5 });
  });

  it('two nodes continuing one rollout: one wins, the other is told; every device assigned once', async () => {
    const r = rollout('ro_1', 'fw_a', DEVICES, 4);
    await a.insertRollout(r, 5);
    for (let round = 0; round < 5; round++) {
      const id = `ro_r${round}`;
      await a.insertRollout({ ...r, id }, 5);
      const ran: string[] = [];
      const results = await Promise.all([
        a.completeRollout({ ...r, id }, DEVICES.slice(4), 10, async () => { ran.push('a'); }),
        b.completeRollout({ ...r, id }, DEVICES.slice(4), 11, async () => { ran.push('b'); }),
      ]);
      expect(results.filter((x) => x !== undefined)).toHaveLength(1);
      expect(ran).toHaveLength(1);
      expect((await a.rollout(id))?.stage).toBe('all');
    }
    expect(await count(h.db, 'firmware_assignments')).toBe(40);
  });

  it('deleting a package on one node while the other makes a rollout of it: never a rollout of a deleted package', async () => {
    for (let round = 0; round < 8; round++) {
      const id = `fw_d${round}`;
      await a.insertPackage(pkg(id, `d${round}`));
      const [deleted, made] = await Promise.allSettled([
        a.deletePackage(id),
        b.insertRollout({ ...rollout(`ro_d${round}`, id, DEVICES.slice(0, 2), 2), stage: 'all' }, 5),
      ]);
      expect(deleted.status).toBe('fulfilled');
      const outcome = (deleted as PromiseFulfilledResult<string>).value;
      if (outcome === 'deleted') {
        expect(made.status).toBe('rejected');
        expect((made as PromiseRejectedResult).reason).toMatchObject({ code: '23503' });
        expect(await a.rollout(`ro_d${round}`)).toBeUndefined();
      } else {
        expect(outcome).toBe('in-use');
        expect(made.status).toBe('fulfilled');
        expect(await a.package(id)).toBeDefined();
      }
    }
  });
});
