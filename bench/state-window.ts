/**
 * `npm run bench:state-window` (docs/benchmarks.md): the state writes of a broadcast to N speakers
 * (default 2,000) through the async state window (src/storage/state/window.ts with the bulk
 * repositories rpc/store-sql.ts and broadcast/execution/repo-sql.ts) against the synchronous path they
 * replaced (the old rpc/store.ts, broadcast/execution/repo.ts and broadcast GroupCommit, kept below), same run,
 * same machine, no MQTT: only the database work of the controller's main thread.
 *
 * Phases, as the broadcast path writes them (docs/design: the group-commit design, §4):
 *  1. approval: N commands inserted as sent, the broadcast, N targets `sent`, 2N log lines (one window);
 *  2. accepted: each speaker's answer, the command answered, its target `accepted` + a log line;
 *  3. started: each speaker's playback event, its target `playing` + a log line.
 * Answers and events come in windows of W speakers (--window-speakers, default 50), each committed
 * before the next (`runDurably` / `durable`). Today's path also does the reads it does today per
 * speaker (answerSent's RETURNING, the target SELECTs, getBroadcastRow); the window path decides
 * from memory (the bench holds it) and writes intents only.
 *
 * Measured per phase: main-thread busy time (event-loop utilisation, so waits are excluded; fsync
 * of COMMIT included, synchronous=FULL), wall time, SQL statements (better-sqlite3 calls counted
 * on SQLite; the window's own count on PostgreSQL). --postgres adds the window path on a throw-away
 * PostgreSQL 15 (fsync on). --rounds R repeats both paths, alternating which goes first.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { createLogger } from '../src/core/logger.js';
import { ALL_MIGRATIONS, PG_STATE_SCOPES } from '../src/migrations.js';
import type { NewBroadcast, NewTarget, TargetRow, TransitionLog } from '../src/broadcast/execution/repo.js';
import type { TargetState } from '../src/broadcast/execution/types.js';
import { BroadcastRepoSql } from '../src/broadcast/execution/repo-sql.js';
import { RpcStoreSql } from '../src/rpc/store-sql.js';
import { migrate, openPgDb, type Db } from '../src/storage/sql/index.js';
import { StateDb, StateWindow, stateSqlitePort } from '../src/storage/state/index.js';
import { startPostgres } from '../tools/postgres.js';

const logger = createLogger('silent');
const { values: args } = parseArgs({
  options: {
    speakers: { type: 'string', default: '2000' },
    'window-speakers': { type: 'string', default: '50' },
    rounds: { type: 'string', default: '2' },
    postgres: { type: 'boolean', default: false },
  },
});
const N = Number(args.speakers);
const W = Number(args['window-speakers']);
const ROUNDS = Number(args.rounds);
const dev = (i: number): string => `loa-${String(i).padStart(5, '0')}`;
const PARAMS = JSON.stringify({ broadcastId: 'b1', url: 'http://keng.local/media/m1.mp3', volume: 80, priority: 'emergency', notAfter: 9_999_999 });
const BROADCAST = {
  id: 'b1', plannedAt: 1_000, priority: 'emergency' as const, volume: 80,
  content: { media: { mediaId: 'm1', url: 'http://keng.local/media/m1.mp3' } as never }, durationSec: 30, notAfter: 9_999_999, createdAt: 1_000,
};

/** Counts every better-sqlite3 statement run in this process (prepared once or not; BEGIN/COMMIT included). */
let sqliteStatements = 0;
function countSqlite(): void {
  const probe = new Database(':memory:');
  const proto = Object.getPrototypeOf(probe.prepare('SELECT 1')) as Record<string, (...a: unknown[]) => unknown>;
  for (const m of ['run', 'get', 'all', 'iterate']) {
    const orig = proto[m]!;
    proto[m] = function (this: unknown, ...a: unknown[]) { sqliteStatements++; return orig.apply(this, a); };
  }
  const dbProto = Object.getPrototypeOf(probe) as Record<string, (...a: unknown[]) => unknown>;
  const exec = dbProto.exec!;
  dbProto.exec = function (this: unknown, ...a: unknown[]) { sqliteStatements++; return exec.apply(this, a); };
  probe.close();
}

interface Phase { name: string; busyMs: number; wallMs: number; statements: number }

async function measure(name: string, statements: () => number, fn: () => Promise<void>): Promise<Phase> {
  const s0 = statements();
  const e0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  await fn();
  const wallMs = performance.now() - t0;
  const e = performance.eventLoopUtilization(e0);
  return { name, busyMs: e.active, wallMs, statements: statements() - s0 };
}

async function openSqlite(): Promise<{ state: StateDb; close(): Promise<void> }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-bench-window-'));
  const state = new StateDb({ dataDir: dir, logger, migrations: ALL_MIGRATIONS });
  await state.start();
  state.db.exec(`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p', 'P', 'province', NULL, 0)`);
  const ins = state.db.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'speaker', ?, 'p', 'x', ?, 'x', 0)`);
  state.db.transaction(() => { for (let i = 0; i < N; i++) ins.run(dev(i), dev(i), `t-${i}`); })();
  return { state, async close() { await state.stop(); rmSync(dir, { recursive: true, force: true }); } };
}

const targets = (): NewTarget[] => Array.from({ length: N }, (_, i) => ({ deviceId: dev(i), area: 'p', state: 'sent', playRequestId: `r-${i}`, source: 'controller' }));
const chunks = (): number[][] => {
  const out: number[][] = [];
  for (let i = 0; i < N; i += W) out.push(Array.from({ length: Math.min(W, N - i) }, (_, k) => i + k));
  return out;
};

/**
 * RpcService's synchronous statements before it moved onto the state window (the old rpc/store.ts `insert` and
 * `answerSent`), kept here as the baseline.
 */
function syncRpc(db: Awaited<ReturnType<typeof openSqlite>>['state']['db']) {
  const insert = db.prepare(`INSERT INTO rpc_requests (id, device_id, method, params_json, expires_at, state, created_at, sent_at, tb_id)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  const answer = db.prepare(`UPDATE rpc_requests SET state = 'answered', answered_at = ?, response_json = ?
    WHERE id = ? AND device_id = ? AND state = 'sent' RETURNING id, device_id, method, params_json, expires_at, state, created_at, sent_at, answered_at, tb_id`);
  return {
    insert(r: { id: string; deviceId: string; method: string; paramsJson: string; expiresAt: number; createdAt: number; sentAt: number }): void {
      insert.run(r.id, r.deviceId, r.method, r.paramsJson, r.expiresAt, 'sent', r.createdAt, r.sentAt, null);
    },
    answerSent(id: string, deviceId: string, at: number, responseJson: string): unknown { return answer.get(at, responseJson, id, deviceId); },
  };
}

/** The broadcast writes of the old synchronous BroadcastRepo (create, target, transition in an open transaction). */
function syncBroadcast(db: Awaited<ReturnType<typeof openSqlite>>['state']['db']) {
  const insertBroadcast = db.prepare(`INSERT INTO broadcasts (id, schedule_id, planned_at, priority, volume, content_json, duration_sec, not_after, created_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  const insertTarget = db.prepare('INSERT INTO broadcast_targets (broadcast_id, device_id, area, state, updated_at, detail, play_request_id) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const insertLog = db.prepare(`INSERT INTO broadcast_log (at, device_at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  const target = db.prepare('SELECT * FROM broadcast_targets WHERE broadcast_id = ? AND device_id = ?');
  const getBroadcast = db.prepare('SELECT * FROM broadcasts WHERE id = ?');
  const update = db.prepare('UPDATE broadcast_targets SET state = ?, updated_at = ?, detail = ? WHERE broadcast_id = ? AND device_id = ?');
  return {
    create(b: NewBroadcast, ts: readonly NewTarget[]): void {
      insertBroadcast.run(b.id, b.scheduleId ?? null, b.plannedAt, b.priority, b.volume, JSON.stringify(b.content), b.durationSec ?? null, b.notAfter, b.createdAt);
      for (const t of ts) {
        insertTarget.run(b.id, t.deviceId, t.area, t.state ?? 'pending', b.createdAt, t.detail ?? null, t.playRequestId ?? null);
        insertLog.run(b.createdAt, null, b.id, b.scheduleId ?? null, t.deviceId, t.area, 'pending', null, null, 'controller');
      }
      for (const t of ts) {
        if (t.state === undefined || t.state === 'pending') continue;
        insertLog.run(b.createdAt, null, b.id, b.scheduleId ?? null, t.deviceId, t.area, t.state, 'pending', t.detail ?? null, t.source ?? 'controller');
      }
    },
    target: (b: string, d: string): TargetRow | undefined => target.get(b, d) as TargetRow | undefined,
    getBroadcastRow: (id: string): unknown => getBroadcast.get(id),
    transition(t: TargetRow, to: TargetState, at: number, l: TransitionLog): void {
      update.run(to, at, l.detail ?? null, t.broadcast_id, t.device_id);
      insertLog.run(at, l.deviceAt ?? null, t.broadcast_id, l.scheduleId ?? null, t.device_id, t.area, to, t.state, l.detail ?? null, l.source);
    },
  };
}

/** The old broadcast GroupCommit's durable path: BEGIN IMMEDIATE, the writes, COMMIT (an 8 ms window per call here). */
function syncGroup(db: Awaited<ReturnType<typeof openSqlite>>['state']['db']) {
  return {
    runDurably(fn: () => void): void { db.exec('BEGIN IMMEDIATE'); try { fn(); db.exec('COMMIT'); } catch (err) { db.exec('ROLLBACK'); throw err; } },
    durable: (): Promise<void> => Promise.resolve(),
    stop: (): Promise<void> => Promise.resolve(),
  };
}

/** Today: synchronous repos, prepared statements, inside the broadcast GroupCommit. */
async function today(): Promise<Phase[]> {
  const { state, close } = await openSqlite();
  const gc = syncGroup(state.db);
  const rpc = syncRpc(state.db);
  const repo = syncBroadcast(state.db);
  const count = (): number => sqliteStatements;
  try {
    const phases: Phase[] = [];
    phases.push(await measure('approval', count, async () => {
      gc.runDurably(() => state.db.transaction(() => {
        for (let i = 0; i < N; i++) rpc.insert({ id: `r-${i}`, deviceId: dev(i), method: 'broadcast.play', paramsJson: PARAMS, expiresAt: 9_999_999, createdAt: 1_000, sentAt: 1_000 });
        repo.create(BROADCAST, targets());
      })());
      await gc.durable();
    }));
    phases.push(await measure('accepted', count, async () => {
      for (const c of chunks()) {
        gc.runDurably(() => {
          for (const i of c) {
            rpc.answerSent(`r-${i}`, dev(i), 2_000 + i, '{"result":"accepted"}');
            const t = repo.target('b1', dev(i))!;
            repo.transition(t, 'accepted', 2_000 + i, { source: 'rpc' });
          }
        });
        await gc.durable();
        await new Promise((r) => setImmediate(r));
      }
    }));
    phases.push(await measure('started', count, async () => {
      for (const c of chunks()) {
        gc.runDurably(() => {
          for (const i of c) {
            repo.target('b1', dev(i)); // target-events.ts: the event's target
            const t = repo.target('b1', dev(i))!; // move(): the row it moves
            repo.transition(t, 'playing', 3_000 + i, { source: 'event', deviceAt: 2_999 + i });
            repo.getBroadcastRow('b1'); // stream-stops.ts on started
          }
        });
        await gc.durable();
        await new Promise((r) => setImmediate(r));
      }
    }));
    verify(state.db.prepare('SELECT COUNT(*) AS n FROM broadcast_log').get() as { n: number }, state.db.prepare(`SELECT COUNT(*) AS n FROM rpc_requests WHERE state = 'answered'`).get() as { n: number });
    await gc.stop();
    return phases;
  } finally { await close(); }
}

/** The window: memory decides, intents of one JSON statement per kind. */
async function windowPath(db: Db<unknown>, count: (w: StateWindow) => number): Promise<Phase[]> {
  const w = new StateWindow({ db, logger, windowMs: db.dialect === 'sqlite' ? 8 : 0 });
  await w.start();
  const rpc = new RpcStoreSql(db);
  const repo = new BroadcastRepoSql(db);
  const c = (): number => count(w);
  const phases: Phase[] = [];
  phases.push(await measure('approval', c, async () => {
    const ps: Array<Promise<unknown>> = [];
    for (let i = 0; i < N; i++) ps.push(w.add(rpc.insert, { id: `r-${i}`, deviceId: dev(i), method: 'broadcast.play', paramsJson: PARAMS, expiresAt: 9_999_999, createdAt: 1_000, sentAt: 1_000 }));
    ps.push(repo.create(w, BROADCAST, targets()));
    await w.durable(Promise.all(ps));
  }));
  phases.push(await measure('accepted', c, async () => {
    for (const ch of chunks()) {
      const ps: Array<Promise<unknown>> = [];
      for (const i of ch) {
        ps.push(w.add(rpc.cas, { id: `r-${i}`, deviceId: dev(i), from: 'sent', to: 'answered', at: 2_000 + i, responseJson: '{"result":"accepted"}' }));
        ps.push(repo.transition(w, { broadcastId: 'b1', deviceId: dev(i), area: 'p', state: 'sent' }, 'accepted', 2_000 + i, { source: 'rpc' }));
      }
      await w.durable(Promise.all(ps));
    }
  }));
  phases.push(await measure('started', c, async () => {
    for (const ch of chunks()) {
      const ps: Array<Promise<unknown>> = [];
      for (const i of ch) {
        ps.push(repo.transition(w, { broadcastId: 'b1', deviceId: dev(i), area: 'p', state: 'accepted' }, 'playing', 3_000 + i, { source: 'event', deviceAt: 2_999 + i }));
      }
      await w.durable(Promise.all(ps));
    }
  }));
  await w.stop();
  const log = await repo.logOf('b1');
  const answered = (await rpc.open()).length;
  verify({ n: log.length }, { n: N - answered });
  return phases;
}

function verify(log: { n: number }, answered: { n: number }): void {
  if (log.n !== 4 * N || answered.n !== N) throw new Error(`wrong rows: ${log.n} log lines (want ${4 * N}), ${answered.n} answered (want ${N})`);
}

function print(label: string, phases: Phase[]): void {
  for (const p of phases) {
    process.stdout.write(`${label.padEnd(22)} ${p.name.padEnd(9)} busy ${p.busyMs.toFixed(0).padStart(6)} ms  wall ${p.wallMs.toFixed(0).padStart(6)} ms  `
      + `${(p.busyMs * 1000 / N).toFixed(1).padStart(6)} µs/speaker  ${(p.statements / N).toFixed(3).padStart(6)} statements/speaker (${p.statements})\n`);
  }
  const busy = phases.reduce((s, p) => s + p.busyMs, 0);
  const st = phases.reduce((s, p) => s + p.statements, 0);
  process.stdout.write(`${label.padEnd(22)} total     busy ${busy.toFixed(0).padStart(6)} ms  ${(busy * 1000 / N).toFixed(1)} µs/speaker  ${(st / N).toFixed(3)} statements/speaker (${st})\n`);
}

async function main(): Promise<void> {
  countSqlite();
  process.stdout.write(`state window bench: ${N} speakers, answers in windows of ${W}, ${ROUNDS} round(s), SQLite synchronous=FULL\n`);
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? ['today', 'window'] : ['window', 'today'];
    for (const which of order) {
      if (which === 'today') {
        print(`today (sync, SQLite)`, await today());
      } else {
        const { state, close } = await openSqlite();
        try { print(`window (SQLite)`, await windowPath(stateSqlitePort(state), () => sqliteStatements)); } finally { await close(); }
      }
    }
  }
  if (args.postgres) {
    const pg = await startPostgres();
    try {
      for (let r = 0; r < ROUNDS; r++) {
        const url = await pg.createDatabase(`bench_window_${r}`);
        const db = openPgDb(url);
        try {
          for (const { scope, migrations } of PG_STATE_SCOPES) await migrate(db, scope, migrations);
          print(`window (PostgreSQL)`, await windowPath(db, (w) => w.stats.statements));
        } finally { await db.close(); }
      }
    } finally { await pg.destroy(); }
  }
}

main().catch((err: unknown) => { process.stderr.write(`${String((err as Error)?.stack ?? err)}\n`); process.exit(1); });
