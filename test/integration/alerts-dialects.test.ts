/**
 * Alerts and alert rules on both dialects of the `Db` port (the embedded SQLite store and PostgreSQL): the
 * repositories (create, get, list, expiring, policy, rules, rule episodes, guarded writes), a step whose audit
 * append fails keeping nothing (no alert change, no broadcast, nothing published), and, on PostgreSQL, two
 * nodes (two AlertServices, each with its own state window and pool on one database) approving the same
 * pending alert at once: exactly one approval, one broadcast, one audit entry; and two nodes' alert rules:
 * a rule made on one is judged on the other within its re-read interval, and both seeing the condition raise
 * one alert.
 */
import { sql, type Transaction } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { EventBus } from '../../src/core/events.js';
import { AuditLog, type AuditRecorder } from '../../src/audit/log.js';
import type { Caller } from '../../src/broadcast/targets.js';
import type { BroadcastInput } from '../../src/broadcast/execution/index.js';
import { AlertService, newCapAlert, validateAlertBody, type Alert } from '../../src/alerts/index.js';
import { AlertRepo } from '../../src/alerts/repo.js';
import { AlertRuleRepo } from '../../src/alerts/rules/repo.js';
import { AlertRules, type AlertRule } from '../../src/alerts/rules/index.js';
import type { AlertReach, CapAlert } from '../../src/alerts/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { StateWindow, WINDOW_PHASES, type WindowKind } from '../../src/storage/state/index.js';
import { STATE_DIALECTS, openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const logger = createLogger('silent');
afterAll(stopStatePostgres);

const T0 = 1_800_000_000_000;
const HOUR = 3600_000;

function capOf(identifier: string, o: { status?: 'Actual' | 'Exercise'; expires?: number } = {}) {
  const v = validateAlertBody({
    status: o.status ?? 'Actual', msgType: 'Alert', event: 'Lũ', severity: 'Extreme', urgency: 'Immediate', certainty: 'Observed',
    headline: 'Nước lên', areas: ['c1'], expires: o.expires ?? T0 + HOUR,
  }, { now: T0 });
  if (!v.ok) throw new Error(JSON.stringify(v.errors));
  return newCapAlert(v.value, { identifier, sender: 'keng@test', sent: T0 });
}

function alertOf(id: string, identifier: string, o: Partial<Alert> = {}): Alert {
  return {
    id, cap: capOf(identifier, { ...(o.expiresAt !== undefined ? { expires: o.expiresAt } : {}) }), state: 'pending_approval', areas: ['c1'], devices: [],
    expiresAt: T0 + HOUR, mediaId: 'm-1', createdBy: 'alice', createdAt: T0, playedAtOnce: false, updatedAt: T0, ...o,
  };
}

async function seedArea(h: StateHarness): Promise<void> {
  await h.db.write(async (trx) => {
    await sql`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p1', 'Tỉnh', 'province', NULL, 0)`.execute(trx);
    await sql`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('c1', 'Xã', 'commune', 'p1', 0)`.execute(trx);
  });
}

function rule(id: string, at: number, o: Partial<AlertRule> = {}): AlertRule {
  return {
    id, name: `Rule ${id}`, area: 'c1', enabled: true, field: 'water_level_cm', aggregate: 'last', op: '>', threshold: 250, clearThreshold: 230,
    forSec: 0, minDevices: 1, cooldownSec: 3600,
    alert: { status: 'Actual', event: 'Lũ', severity: 'Severe', urgency: 'Immediate', certainty: 'Observed', headline: 'Nước lên', expiresAfterSec: 3600 },
    createdBy: 'alice', createdAt: at, updatedAt: at, ...o,
  } as AlertRule;
}

/** One "node": a state window on `db` and an AlertService on it, with a broadcast executor standing in for the real one. */
function node(db: Db<unknown>, audit: AuditRecorder, name: string) {
  const window = new StateWindow({ db, logger });
  const published: string[] = [];
  // What the executor writes for a broadcast, as a window intent (rows without a key: a second start would show).
  const broadcasts: WindowKind<{ id: string; node: string; targets: number }, boolean> = {
    name: 'test broadcasts', phase: WINDOW_PHASES.insert,
    async flush(trx, items) {
      for (const b of items) await sql`INSERT INTO test_broadcasts (id, node, targets) VALUES (${b.id}, ${b.node}, ${b.targets})`.execute(trx);
      return items.map(() => true);
    },
  };
  const executor = {
    begin(input: BroadcastInput) {
      const id = input.id!;
      const stored = window.add(broadcasts, { id, node: name, targets: input.targets.length });
      window.afterCommit(() => published.push(id)); // the commands go out after the commit only
      const broadcast = { id } as never;
      return { broadcast, stored: stored.then(() => broadcast) };
    },
    startBroadcast: async () => { throw new Error('not in this test'); },
    stopBroadcast: async () => { throw new Error('not in this test'); },
    preload: async () => true,
    getStored: async () => undefined,
    prefetch: async () => 0,
    withdrawPrefetch: async () => 0,
  };
  const registry = {
    getArea: (code: string) => (code === 'c1' ? { code, name: 'Xã', level: 'commune', parent: 'p1' } : undefined),
    getDevice: (id: string) => (id === 'loa-1' ? { id, kind: 'speaker', area: 'c1' } : undefined),
    listDevices: () => [{ id: 'loa-1', kind: 'speaker', area: 'c1' }],
  } as never;
  const media = {
    get: (id: string) => ({ id, name: 'x', mime: 'audio/mpeg', size: 1, sha256: 'a'.repeat(64), durationSec: 3, source: 'tts', text: null, createdAt: T0, createdBy: null, areas: ['*'] }),
    synthesizeSequence: async () => { throw new Error('not in this test'); },
  } as never;
  const service = new AlertService({
    window, windowDb: db, registry, media, executor, bus: new EventBus(), audit, logger, clock: { now: () => T0 + 1000 },
    options: { volume: 90, toneSec: 2, cancelNoticeValiditySec: 600 },
  });
  return {
    window, service, published,
    async start() { await window.start(); await service.start(); },
    async stop() { await service.stop(); await window.stop(); },
  };
}

const caller = (id: string): Caller => ({ principal: { kind: 'user', id, role: 'operator', areas: ['c1'] }, inScope: (a) => a === 'c1' || a === 'p1' });

describe.each(STATE_DIALECTS)('alerts on %s', (dialect) => {
  let h: StateHarness;
  let repo: AlertRepo;
  let rules: AlertRuleRepo;
  const write = <T>(fn: (trx: Transaction<unknown>) => Promise<T>) => h.db.write(fn);

  beforeEach(async () => {
    h = await openState(dialect);
    await seedArea(h);
    await h.db.write(async (trx) => { await sql`CREATE TABLE test_broadcasts (id text NOT NULL, node text NOT NULL, targets integer NOT NULL)`.execute(trx); });
    repo = new AlertRepo(h.db.kysely);
    rules = new AlertRuleRepo(h.db);
  }, 60_000);
  afterEach(async () => { await h.close(); });

  it('alerts: insert (one per identifier), get, list newest first with filters, due and next expiry', async () => {
    const a = alertOf('al-1', 'cap-1', { createdAt: T0, expiresAt: T0 + HOUR });
    const b = alertOf('al-2', 'cap-2', { createdAt: T0 + 10, expiresAt: T0 + 2 * HOUR, state: 'active', playedAtOnce: true, broadcastId: 'al-al-2' });
    const c = alertOf('al-3', 'cap-3', { createdAt: T0 + 20, state: 'rejected', endedBy: 'bob', endedAt: T0 + 30, endReason: 'no' });
    expect(await write((trx) => repo.insert(trx, a))).toBe(true);
    expect(await write((trx) => repo.insert(trx, b))).toBe(true);
    expect(await write((trx) => repo.insert(trx, c))).toBe(true);
    expect(await write((trx) => repo.insert(trx, { ...a, id: 'al-9' }))).toBe(false); // same identifier: nothing written
    expect(await repo.get('al-2')).toEqual(b);
    expect(await repo.byIdentifier('cap-3')).toEqual(c);
    expect(await repo.get('nope')).toBeUndefined();
    expect((await repo.list()).map((x) => x.id)).toEqual(['al-3', 'al-2', 'al-1']);
    expect((await repo.list({ states: ['pending_approval', 'active'] })).map((x) => x.id)).toEqual(['al-2', 'al-1']);
    expect((await repo.list({ from: T0 + 5, to: T0 + 20 })).map((x) => x.id)).toEqual(['al-2']);
    expect((await repo.list({ limit: 1 })).map((x) => x.id)).toEqual(['al-3']);
    expect(await repo.nextExpiry()).toBe(T0 + HOUR);
    expect((await repo.due(T0 + HOUR)).map((x) => x.id)).toEqual(['al-1']);
    expect((await repo.due(T0 + 3 * HOUR)).map((x) => x.id)).toEqual(['al-1', 'al-2']);
  });

  it('alerts: a guarded transition applies once, to a row still as expected', async () => {
    const a = alertOf('al-1', 'cap-1');
    await write((trx) => repo.insert(trx, a));
    const approved: Alert = { ...a, state: 'active', approvedBy: 'bob', approvedAt: T0 + 5, broadcastId: 'al-al-1', updatedAt: T0 + 5 };
    expect(await write((trx) => repo.transition(trx, approved, { states: ['pending_approval'], unapproved: true }))).toEqual(approved);
    expect(await write((trx) => repo.transition(trx, { ...approved, approvedBy: 'carol' }, { states: ['pending_approval'], unapproved: true }))).toBeUndefined();
    expect(await write((trx) => repo.transition(trx, { ...approved, approvedBy: 'carol' }, { states: ['active'], unapproved: true }))).toBeUndefined();
    expect((await repo.get('al-1'))?.approvedBy).toBe('bob');
  });

  it('policy: default, then as set (updated in place)', async () => {
    expect(await repo.policy()).toEqual({ playAtOnce: [] });
    await write((trx) => repo.setPolicy(trx, { playAtOnce: ['Extreme'] }, 'admin', T0));
    await write((trx) => repo.setPolicy(trx, { playAtOnce: ['Extreme', 'Severe'] }, 'admin', T0 + 1));
    expect(await repo.policy()).toEqual({ playAtOnce: ['Extreme', 'Severe'] });
  });

  it('rules and their episodes: insert, update, list oldest first, states, claims, a deleted rule\'s episode not written', async () => {
    await write((trx) => rules.insert(trx, rule('ar_b', T0 + 1)));
    await write((trx) => rules.insert(trx, rule('ar_a', T0 + 1, { enabled: false })));
    await write((trx) => rules.insert(trx, rule('ar_c', T0)));
    expect((await rules.list()).map((r) => r.id)).toEqual(['ar_c', 'ar_a', 'ar_b']);
    expect(await rules.get('ar_a')).toEqual(rule('ar_a', T0 + 1, { enabled: false }));
    expect(await write((trx) => rules.update(trx, rule('ar_a', T0 + 1, { threshold: 300, updatedAt: T0 + 9 })))).toBe(true);
    expect((await rules.get('ar_a'))).toMatchObject({ threshold: 300, updatedAt: T0 + 9, enabled: true });
    expect(await write((trx) => rules.update(trx, rule('ar_zz', T0)))).toBe(false);

    const firing = { ruleId: 'ar_b', firing: true, firingSince: T0 + 2, identifier: 'ar_b.x', lastFiredAt: T0 + 2, lastClearedAt: T0 - 5 };
    expect(await write((trx) => rules.saveState(trx, firing, T0 + 2, true))).toBe(true);
    // A second firing claim (another node) is refused while the episode is on; a plain write is not.
    expect(await write((trx) => rules.saveState(trx, { ...firing, identifier: 'ar_b.y' }, T0 + 3, true))).toBe(false);
    expect(await rules.state('ar_b')).toEqual(firing);
    expect(await write((trx) => rules.saveState(trx, { ...firing, alertId: 'al-7' }, T0 + 4))).toBe(true);
    expect(await write((trx) => rules.saveState(trx, { ruleId: 'ar_c', firing: false, lastError: 'tts down' }, T0 + 4))).toBe(true);
    expect(await rules.states()).toEqual([{ ...firing, alertId: 'al-7' }, { ruleId: 'ar_c', firing: false, lastError: 'tts down' }]);

    expect(await write((trx) => rules.delete(trx, 'ar_b'))).toBe(true);
    expect(await write((trx) => rules.delete(trx, 'ar_b'))).toBe(false);
    expect(await rules.state('ar_b')).toBeUndefined(); // the episode goes with its rule
    expect(await write((trx) => rules.saveState(trx, firing, T0 + 5))).toBe(false);
    expect(await rules.states()).toHaveLength(1);
  });

  it('an approval whose audit append fails keeps nothing: the alert still pending, no broadcast, nothing published', async () => {
    await write((trx) => repo.insert(trx, alertOf('al-1', 'cap-1')));
    const failing: AuditRecorder = {
      record: async () => { throw new Error('audit refused by the test'); },
    };
    const n = node(h.db, failing, 'a');
    await n.start();
    try {
      await expect(n.service.approve(caller('bob'), 'al-1')).rejects.toThrow('audit refused by the test');
      expect(await repo.get('al-1')).toMatchObject({ state: 'pending_approval' });
      expect((await repo.get('al-1'))?.approvedBy).toBeUndefined();
      expect((await sql<{ id: string }>`SELECT id FROM test_broadcasts`.execute(h.db.kysely)).rows).toEqual([]);
      expect(n.published).toEqual([]);
    } finally {
      await n.stop();
    }
    // With a working audit log the same approval goes through, all of it.
    const ok = node(h.db, new AuditLog({ db: h.db, clock: { now: () => T0 } }), 'a');
    await ok.start();
    try {
      const a = await ok.service.approve(caller('bob'), 'al-1');
      expect(a).toMatchObject({ state: 'active', approvedBy: 'bob', broadcastId: 'al-al-1' });
      expect((await sql<{ id: string }>`SELECT id FROM test_broadcasts`.execute(h.db.kysely)).rows).toEqual([{ id: 'al-al-1' }]);
      expect(ok.published).toEqual(['al-al-1']);
      const audit = await sql<{ action: string }>`SELECT action FROM audit_log ORDER BY seq`.execute(h.db.kysely);
      expect(audit.rows.map((r) => r.action)).toEqual(['alert.approve']);
    } finally {
      await ok.stop();
    }
  });

  it.runIf(dialect === 'postgres')('two nodes approving the same alert at once: one approval, one broadcast, one audit entry', async () => {
    const dbB = openPgDb(h.url!);
    const a = node(h.db, new AuditLog({ db: h.db, clock: { now: () => T0 } }), 'a');
    const b = node(dbB, new AuditLog({ db: dbB, clock: { now: () => T0 } }), 'b');
    await a.start();
    await b.start();
    try {
      for (let round = 0; round < 5; round++) {
        const id = `al-r${round}`;
        await write((trx) => repo.insert(trx, alertOf(id, `cap-r${round}`)));
        const results = await Promise.allSettled([a.service.approve(caller('bob'), id), b.service.approve(caller('carol'), id)]);
        const won = results.filter((r) => r.status === 'fulfilled') as Array<PromiseFulfilledResult<Alert>>;
        const lost = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
        expect(won).toHaveLength(1);
        expect(lost).toHaveLength(1);
        expect(lost[0]!.reason).toMatchObject({ statusCode: 409 });
        const stored = await repo.get(id);
        expect(stored).toMatchObject({ state: 'active', approvedBy: won[0]!.value.approvedBy, broadcastId: `al-${id}` });
        const rows = await sql<{ node: string }>`SELECT node FROM test_broadcasts WHERE id = ${`al-${id}`}`.execute(h.db.kysely);
        expect(rows.rows).toHaveLength(1);
        expect([...a.published, ...b.published].filter((x) => x === `al-${id}`)).toHaveLength(1);
        const audit = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM audit_log WHERE action = 'alert.approve' AND target = ${`alert:${id}`}`.execute(h.db.kysely);
        expect(Number(audit.rows[0]!.n)).toBe(1);
      }
    } finally {
      await a.stop();
      await b.stop();
      await dbB.close();
    }
  }, 60_000);

  it.runIf(dialect === 'postgres')('rules on two nodes: a rule made on one is judged on the other; both seeing the condition raise one alert', async () => {
    const raised: Array<{ node: string; identifier: string }> = [];
    const areas = { getArea: (code: string) => (code === 'c1' ? { name: 'Xã', parent: 'p1' } : code === 'p1' ? { name: 'Tỉnh', parent: null } : undefined) };
    const dbB = openPgDb(h.url!);
    const nodes = ['a', 'b'].map((name) => {
      const db = name === 'a' ? h.db : dbB;
      const window = new StateWindow({ db, logger });
      const bus = new EventBus();
      const alerts = {
        async create(c: Caller, cap: CapAlert, reach: AlertReach): Promise<Alert> {
          raised.push({ node: name, identifier: cap.identifier });
          return { ...alertOf(`al-${name}-${raised.length}`, cap.identifier), cap, areas: reach.areas, createdBy: c.principal.id };
        },
        get: async (): Promise<Alert> => { throw new Error('not in this test'); },
        reject: async (): Promise<Alert> => { throw new Error('not in this test'); },
        list: async (): Promise<Alert[]> => [],
      };
      const rules = new AlertRules({
        window, windowDb: db, registry: { ...areas, getDevice: () => undefined }, alerts, bus,
        audit: new AuditLog({ db, clock: { now: () => Date.now() } }), logger, clock: { now: () => Date.now() }, sender: 'keng@test', resyncMs: 50,
      });
      return { name, window, bus, rules };
    });
    for (const n of nodes) { await n.window.start(); await n.rules.start(); }
    const [a, b] = nodes as [typeof nodes[number], typeof nodes[number]];
    const admin: Caller = { principal: { kind: 'admin', id: 'admin', role: 'admin', areas: ['*'] }, inScope: () => true };
    const body = { name: 'Mực nước', area: 'c1', field: 'water_level_cm', op: '>', threshold: 250, clearThreshold: 230, forSec: 0,
      alert: { event: 'Lũ', severity: 'Severe', urgency: 'Immediate', certainty: 'Observed', headline: 'Nước lên' } };
    const reading = (n: typeof a, cm: number) => n.bus.emit('telemetry', { deviceId: `g-${n.name}`, area: 'c1', kind: 'sensor', ts: Date.now(), values: { water_level_cm: cm } });
    const until = async (ok: () => boolean | Promise<boolean>, what: string) => {
      const end = Date.now() + 10_000;
      while (!(await ok())) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    try {
      // Made on A, judged on B once B has re-read the rules.
      const { rule: first } = await a.rules.create(admin, { ...body, name: 'first' });
      await until(async () => (await b.rules.get(admin, first.id)).devices.length > 0 || (reading(b, 300), false), 'B to judge the rule');
      await until(() => raised.length === 1, 'the alert');
      expect(raised[0]).toMatchObject({ node: 'b' });
      await until(async () => (await a.rules.get(admin, first.id)).state.firing, 'A to take the episode over');

      // Both nodes see the condition of a new rule at once: one alert, the other node takes the episode over.
      const { rule: second } = await a.rules.create(admin, { ...body, name: 'second', field: 'rain_mm' });
      await new Promise((r) => setTimeout(r, 300)); // B re-reads the rules every 50 ms
      const rain = (n: typeof a) => n.bus.emit('telemetry', { deviceId: `r-${n.name}`, area: 'c1', kind: 'sensor', ts: Date.now(), values: { rain_mm: 300 } });
      rain(a); rain(b);
      await until(() => raised.filter((x) => x.identifier.startsWith(`${second.id}.`)).length >= 1, 'the second alert');
      await new Promise((r) => setTimeout(r, 300));
      expect(raised.filter((x) => x.identifier.startsWith(`${second.id}.`))).toHaveLength(1);
      const states = await rules.states();
      expect(states.find((x) => x.ruleId === second.id)).toMatchObject({ firing: true, alertId: expect.any(String) });
      for (const n of nodes) expect((await n.rules.get(admin, second.id)).state.firing).toBe(true);
      const fires = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM audit_log WHERE action = 'alert-rule.fire' AND target = ${`alert-rule:${second.id}`}`.execute(h.db.kysely);
      expect(Number(fires.rows[0]!.n)).toBe(1);
    } finally {
      for (const n of nodes) { await n.rules.stop(); await n.window.stop(); }
      await dbB.close();
    }
  }, 60_000);
});
