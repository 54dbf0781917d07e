/**
 * The broadcast side on the `Db` port, on SQLite and PostgreSQL:
 *  - the readers (queries.ts list/log/csv/totals, the repo's get behind executor.getStored) give the same
 *    answers on both dialects for the same committed rows (written through the state window as the executor
 *    writes them), and the answers expected;
 *  - "play now" is one unit of the state window: when its audit append fails inside the unit, nothing of the
 *    broadcast is committed (broadcast, targets, RPC commands, log lines, audit row) and nothing is published;
 *    the same request with a working audit commits all of it and publishes the commands.
 */
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { createLogger } from '../../src/core/index.js';
import type { AuditRecorder } from '../../src/audit/log.js';
import type { BroadcastExecutor, LogNames } from '../../src/broadcast/execution/index.js';
import { BroadcastQueries } from '../../src/broadcast/execution/queries.js';
import { BroadcastRepoSql } from '../../src/broadcast/execution/repo-sql.js';
import type { BroadcastService } from '../../src/broadcast/service.js';
import { StateWindow } from '../../src/storage/state/index.js';
import type { Db } from '../../src/storage/sql/index.js';
import { broadcastRegistry, testDevice } from '../helpers/broadcast-registry.js';
import { startBroadcastStack, type BroadcastStack } from '../helpers/broadcast-stack.js';
import { STATE_DIALECTS, openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';
import { waitFor } from '../helpers/mqtt.js';

const logger = createLogger('silent');
afterAll(stopStatePostgres);

function fakeRegistry() {
  // Ids whose order differs between a bytewise and a linguistic collation ('Z' < '_' < 'a' bytewise).
  return broadcastRegistry([testDevice('loa-1', 'v1'), testDevice('loa-2', 'v2'), testDevice('loa_3', 'v1'), testDevice('Loa-Z', 'v2')]);
}

const names: LogNames = { schedule: (id) => (id === 's1' ? 'Bản tin sáng' : undefined), media: (id) => (id === 'm1' ? 'Tin xã' : undefined) };
const MEDIA = { mediaId: 'm1', sha256: 'a'.repeat(64), durationSec: 30, mime: 'audio/mpeg' };

/** The same rows on either dialect, written through the state window as the executor writes them. */
async function writeRows(h: StateHarness): Promise<void> {
  const w = new StateWindow({ db: h.db, logger });
  await w.start();
  const repo = new BroadcastRepoSql(h.db);
  try {
    await repo.create(w, { id: 'b1', scheduleId: 's1', plannedAt: 1_000, priority: 'normal', volume: 80, content: { media: MEDIA }, notAfter: 5_000, createdAt: 1_000 }, [
      { deviceId: 'loa-1', area: 'v1', state: 'sent', playRequestId: 'r1', source: 'rpc' },
      { deviceId: 'loa-2', area: 'v2', state: 'sent', playRequestId: 'r2', source: 'rpc' },
      { deviceId: 'loa_3', area: 'v1', state: 'offline', detail: 'speaker offline' },
      { deviceId: 'Loa-Z', area: 'v2', state: 'sent', playRequestId: 'r4', source: 'rpc' },
    ]);
    await repo.create(w, { id: 'b2', plannedAt: 2_000, priority: 'priority', volume: 60, content: { stream: { url: 'http://radio/x' } }, durationSec: 600, notAfter: 50_000, createdAt: 2_000 }, [
      { deviceId: 'loa-2', area: 'v2', state: 'sent', playRequestId: 'r5', source: 'rpc' },
    ]);
    const move = (b: string, d: string, area: string, from: 'sent' | 'accepted' | 'playing', to: 'accepted' | 'playing' | 'completed' | 'failed' | 'stopped', at: number, detail?: string) =>
      repo.transition(w, { broadcastId: b, deviceId: d, area, state: from }, to, at, { source: 'event', ...(detail ? { detail } : {}), ...(b === 'b1' ? { scheduleId: 's1' } : {}) });
    await move('b1', 'loa-1', 'v1', 'sent', 'accepted', 1_100);
    await move('b1', 'loa-1', 'v1', 'accepted', 'completed', 1_200);
    await move('b1', 'loa-2', 'v2', 'sent', 'failed', 1_300, 'sha256 mismatch');
    await move('b1', 'Loa-Z', 'v2', 'sent', 'accepted', 1_350);
    await move('b2', 'loa-2', 'v2', 'sent', 'accepted', 2_100);
    await move('b2', 'loa-2', 'v2', 'accepted', 'playing', 2_200);
    await w.add(repo.stopRequested, { broadcastId: 'b2', at: 2_300 });
    await w.add(repo.missed, { scheduleId: 's1', plannedAt: 1_500, at: 3_000, targets: [{ deviceId: 'loa-1', area: 'v1' }, { deviceId: 'loa-2', area: 'v2' }] });
  } finally {
    await w.stop();
  }
}

/** Every reader over the committed rows. */
async function readAll(db: Db<unknown>) {
  const q = new BroadcastQueries(db, fakeRegistry(), 'Asia/Ho_Chi_Minh', names);
  const repo = new BroadcastRepoSql(db);
  return {
    get: await repo.get('b1'), getStream: await repo.get('b2'), getNone: await repo.get('nope'),
    list: await q.list(), listV1: await q.list({ area: 'v1' }), listSchedule: await q.list({ scheduleId: 's1' }),
    listFrom: await q.list({ from: 1_500 }), listLimit: await q.list({ limit: 1 }), listUnknownArea: await q.list({ area: 'nope' }),
    log: await q.log(), logV2: await q.log({ area: 'v2' }), logOne: await q.log({ broadcastId: 'b1', deviceId: 'loa-1' }),
    logRange: await q.log({ from: 1_200, to: 2_150 }), logSchedule: await q.log({ scheduleId: 's1', limit: 5 }),
    csv: await q.csv({ area: 'c' }),
    totals: await q.totals({}, 10_000), totalsV1: await q.totals({ area: 'v1' }, 10_000), totalsRange: await q.totals({ from: 1_500, to: 60_000 }, 10_000),
  };
}

const results = new Map<string, Awaited<ReturnType<typeof readAll>>>();

describe.each(STATE_DIALECTS)('broadcast readers on %s', (dialect) => {
  let h: StateHarness;
  beforeEach(async () => { h = await openState(dialect); });
  afterEach(async () => { await h.close(); });

  it('answer lists, the log, CSV, totals and one broadcast from the committed rows', async () => {
    await writeRows(h);
    const r = await readAll(h.db);
    results.set(dialect, r);
    expect(r.get).toMatchObject({ id: 'b1', scheduleId: 's1', plannedAt: 1_000, priority: 'normal', volume: 80, media: MEDIA, notAfter: 5_000, startedAt: 1_000 });
    // Bytewise device order on both dialects: 'L' < 'l', '-' < '_'.
    expect(r.get!.targets.map((t) => [t.deviceId, t.state])).toEqual([['Loa-Z', 'accepted'], ['loa-1', 'completed'], ['loa-2', 'failed'], ['loa_3', 'offline']]);
    expect(r.get!.targets[2]).toEqual({ deviceId: 'loa-2', area: 'v2', state: 'failed', updatedAt: 1_300, detail: 'sha256 mismatch' });
    expect(r.getStream).toMatchObject({ id: 'b2', stream: { url: 'http://radio/x' }, durationSec: 600, stopRequestedAt: 2_300 });
    expect(r.getNone).toBeUndefined();
    expect(r.list.map((b) => b.id)).toEqual(['b2', 'b1']);
    expect(r.listV1.map((b) => [b.id, b.targets.map((t) => t.deviceId)])).toEqual([['b1', ['loa-1', 'loa_3']]]);
    expect(r.listSchedule.map((b) => b.id)).toEqual(['b1']);
    expect(r.listFrom.map((b) => b.id)).toEqual(['b2']);
    expect(r.listLimit.map((b) => b.id)).toEqual(['b2']);
    expect(r.listUnknownArea).toEqual([]);
    expect(r.log).toHaveLength(5 + 5 + 6 + 2); // pending ×5, first states ×5, moves ×6, missed ×2
    expect(r.logOne.map((e) => [e.state, e.prevState, e.source, e.mediaId, e.mediaName, e.scheduleName])).toEqual([
      ['pending', undefined, 'controller', 'm1', 'Tin xã', 'Bản tin sáng'],
      ['sent', 'pending', 'rpc', 'm1', 'Tin xã', 'Bản tin sáng'],
      ['accepted', 'sent', 'event', 'm1', 'Tin xã', 'Bản tin sáng'],
      ['completed', 'accepted', 'event', 'm1', 'Tin xã', 'Bản tin sáng'],
    ]);
    expect(r.logV2.every((e) => e.area === 'v2')).toBe(true);
    expect(r.logRange.map((e) => [e.at, e.deviceId, e.state])).toEqual([
      [1_200, 'loa-1', 'completed'], [1_300, 'loa-2', 'failed'], [1_350, 'Loa-Z', 'accepted'], [1_500, 'loa-1', 'missed'], [1_500, 'loa-2', 'missed'],
      [2_000, 'loa-2', 'pending'], [2_000, 'loa-2', 'sent'], [2_100, 'loa-2', 'accepted'],
    ]);
    expect(r.logRange.find((e) => e.broadcastId === 'b2')!.mediaId).toBeUndefined(); // a stream has no media
    expect(r.logSchedule).toHaveLength(5);
    expect(r.csv.split('\r\n')[1]).toContain('Bản tin sáng');
    expect(r.totals.total).toEqual({ planned: 7, played: 1, failed: 2, missed: 2, stopped: 0, preempted: 0, unconfirmed: 0, inProgress: 2 });
    expect(r.totals.areas.map((a) => [a.area, a.areaName, a.planned])).toEqual([['v1', 'Thôn Đông', 3], ['v2', 'Thôn Tây', 4]]);
    // loa_3 is offline past notAfter (5,000 < now 10,000): it can no longer play, counted failed.
    expect(r.totalsV1.total).toEqual({ planned: 3, played: 1, failed: 1, missed: 1, stopped: 0, preempted: 0, unconfirmed: 0, inProgress: 0 });
    expect(r.totalsRange.total).toMatchObject({ planned: 3, missed: 2, inProgress: 1 });
  });
});

describe('broadcast readers on both dialects', () => {
  it('give the same answers for the same committed rows', () => {
    expect(results.size).toBe(STATE_DIALECTS.length);
    const [first, ...rest] = [...results.values()];
    for (const r of rest) expect(r).toEqual(first);
  });
});

describe.each(STATE_DIALECTS)('play now is one unit of the state window on %s', (dialect) => {
  let stack: BroadcastStack;
  let h: StateHarness;
  let window: StateWindow;
  let exec: BroadcastExecutor;
  let service: BroadcastService;
  let failAudit = false;
  const published: string[] = [];

  beforeEach(async () => {
    stack = await startBroadcastStack(dialect, {
      registry: fakeRegistry(), speakers: ['loa-1', 'loa-2'], tmpPrefix: 'keng-bcast-unit-',
      published: (topic) => { published.push(topic); }, settings: { broadcast: { streamHosts: ['127.0.0.1'] } },
      // Appends for real (in the unit's transaction), then fails: the append must be undone with the rest.
      audit: (real): AuditRecorder => ({
        record: async (e, trx) => {
          const entry = await real.record(e, trx);
          if (failAudit) throw new Error('injected audit failure');
          return entry;
        },
      }),
    });
    ({ h, window, exec, service } = stack);
    failAudit = false;
    published.length = 0;
  });
  afterEach(async () => { await stack.stop(); });

  const caller = { principal: { kind: 'user', id: 'op', role: 'admin', areas: [] } as never, ip: '10.0.0.1', inScope: () => true };
  const body = { target: { devices: ['loa-1', 'loa-2'] }, content: { streamUrl: 'http://127.0.0.1:9/radio' }, durationSec: 60 };
  const counts = async () => {
    const out: number[] = [];
    for (const t of ['broadcasts', 'broadcast_targets', 'broadcast_log', 'rpc_requests', 'audit_log']) {
      out.push(Number((await sql<{ n: number }>`SELECT COUNT(*) AS n FROM ${sql.table(t)}`.execute(h.db.kysely)).rows[0]!.n));
    }
    return out;
  };

  it('a failed audit append inside the unit leaves no broadcast, target, command, log line or audit row, and publishes nothing', async () => {
    failAudit = true;
    await expect(service.playNow(caller, body)).rejects.toThrow(/injected audit failure/);
    await window.settled();
    await new Promise((r) => setTimeout(r, 100));
    expect(await counts()).toEqual([0, 0, 0, 0, 0]);
    expect(published).toEqual([]);
    expect(await exec.list()).toEqual([]);

    // The same request with a working audit: everything commits together and the commands go out.
    failAudit = false;
    const b = await service.playNow(caller, body);
    expect(b.targets.map((t) => [t.deviceId, t.state])).toEqual([['loa-1', 'sent'], ['loa-2', 'sent']]);
    expect(await counts()).toEqual([1, 2, 4, 2, 1]);
    expect((await exec.getStored(b.id))!.targets).toHaveLength(2);
    await waitFor(() => published.length === 2, 5_000);
    expect(published.map((t) => t.split('/')[2]).sort()).toEqual(['loa-1', 'loa-2']);
    const row = (await sql<{ action: string; target: string }>`SELECT action, target FROM audit_log`.execute(h.db.kysely)).rows;
    expect(row).toEqual([{ action: 'broadcast.start', target: `broadcast:${b.id}` }]);
  });

  it('stop: the stop and its audit record commit together, or neither', async () => {
    const b = await service.playNow(caller, body);
    failAudit = true;
    await expect(service.stopBroadcast(caller, b.id)).rejects.toThrow(/injected audit failure/);
    await window.settled();
    expect((await exec.getStored(b.id))!.stopRequestedAt).toBeUndefined();
    expect(await counts()).toEqual([1, 2, 4, 2, 1]);
    failAudit = false;
    const s = await service.stopBroadcast(caller, b.id);
    expect(s.stopRequestedAt).toEqual(expect.any(Number));
    expect((await exec.getStored(b.id))!.stopRequestedAt).toBe(s.stopRequestedAt);
    expect(await counts()).toEqual([1, 2, 4, 4, 2]); // two broadcast.stop commands, one more audit row
  });
});
