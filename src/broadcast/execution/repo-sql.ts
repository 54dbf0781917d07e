/**
 * Broadcasts, targets, the log and missed occurrences on the `Db` port, for the state window
 * (src/storage/state/window.ts). Each kind writes ALL its intents of a window with a few statements
 * of fixed SQL: on PostgreSQL one statement with one JSON parameter (`jsonb_to_recordset`, one round
 * trip); on SQLite the busy kinds (targets, their CAS, log lines) bind their rows as multi-row VALUES
 * lists of 64 rows (src/storage/sql/values.ts: no JSON to parse per column), the rare ones keep
 * `json_each`. A broadcast to 2,000 speakers is a handful of statements on PostgreSQL, a few hundred
 * cached ones on SQLite.
 *
 * Phases of a window: broadcasts, then targets and missed rows, then target CAS (a target moved
 * several times in one window is ONE update from the state memory held at the last commit to the
 * final state), then log lines in enqueue order (`seq` follows memory). A log line of a transition
 * (`cas: true`) is written only when its target's CAS applied; on PostgreSQL a line is also unique per
 * (broadcast, device, state) and inserted with ON CONFLICT DO NOTHING, so a redone window never
 * writes it twice (pg-schema.ts).
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import { Errors } from '../../core/errors.js';
import type { Db, SqlDialect } from '../../storage/sql/db.js';
import { runValues } from '../../storage/sql/values.js';
import { WINDOW_PHASES, type FlushContext, type StateWindow, type WindowKind } from '../../storage/state/window.js';
import { toBroadcast, type BroadcastRow, type LogRow, type NewBroadcast, type NewLog, type NewTarget, type TargetRow, type TransitionLog } from './repo.js';
import type { Broadcast, TargetState } from './types.js';

export interface TargetsInsert { broadcastId: string; createdAt: number; targets: readonly NewTarget[] }
/** A target's move from the state memory holds (its committed state when it first moves in a window). */
export interface TargetCas { broadcastId: string; deviceId: string; from: TargetState; to: TargetState; at: number; detail?: string }
export interface LogLine extends NewLog {
  /** A transition's line: written only if the target's CAS of this window applied. */
  cas?: boolean;
}
export interface MissedInsert { scheduleId: string; plannedAt: number; at: number; targets: ReadonlyArray<{ deviceId: string; area: string }> }
export interface RequestIds { broadcastId: string; deviceId: string; playRequestId?: string; stopRequestId?: string }
export interface Applied { applied: boolean }

type Q = Kysely<unknown> | Transaction<unknown>;
const rowsOf = async <T>(q: { execute(db: Q): Promise<{ rows: T[] }> }, db: Q): Promise<T[]> => (await q.execute(db)).rows;
const tkey = (b: string, d: string): string => `target:${b}\u0000${d}`;
const MISSED_CAS = 'broadcast_targets.cas_missed';

/**
 * `col` for ORDER BY in bytewise order on both dialects (SQLite's BINARY; PostgreSQL's "C", whatever the
 * database's locale), the order memory sorts ids in (held.ts byDevice).
 */
export function byText(d: SqlDialect, col: string) {
  return d === 'postgres' ? sql`${sql.ref(col)} COLLATE "C"` : sql.ref(col);
}

export class BroadcastRepoSql {
  /** applied false: a broadcast with this id exists already (ON CONFLICT DO NOTHING). */
  readonly broadcast: WindowKind<NewBroadcast, Applied>;
  /**
   * The same insert failing its window when the id exists (409): the executor's, so that a new broadcast's
   * targets, log lines and commands never land under another broadcast's id.
   */
  readonly newBroadcast: WindowKind<NewBroadcast, Applied>;
  /** Outcome: targets inserted (existing ones are left as they are). */
  readonly targets: WindowKind<TargetsInsert, number>;
  readonly cas: WindowKind<TargetCas, Applied>;
  readonly log: WindowKind<LogLine, void>;
  /** Outcome: rows inserted (a speaker's row recorded before is not counted). */
  readonly missed: WindowKind<MissedInsert, number>;
  /** applied false: a stop was requested before. */
  readonly stopRequested: WindowKind<{ broadcastId: string; at: number }, Applied>;
  readonly requestIds: WindowKind<RequestIds, void>;

  constructor(private readonly db: Db<unknown>) {
    const d = db.dialect;
    this.broadcast = {
      name: 'broadcasts insert', phase: WINDOW_PHASES.insertParents, keys: (b) => [`broadcast:${b.id}`],
      flush: async (trx, items) => {
        const json = JSON.stringify(items.map((b) => ({
          i: b.id, sc: b.scheduleId, p: b.plannedAt, pr: b.priority, v: b.volume, c: JSON.stringify(b.content),
          du: b.durationSec, na: b.notAfter, ca: b.createdAt,
        })));
        const added = new Set((await rowsOf(broadcastSql(d, json), trx)).map((r) => r.id));
        return items.map((b) => ({ applied: added.has(b.id) }));
      },
    };
    const strict = this.broadcast;
    this.newBroadcast = {
      ...strict, name: 'broadcasts insert (new)',
      flush: async (trx, items, ctx) => {
        const out = await strict.flush(trx, items, ctx);
        const i = out.findIndex((r) => !r.applied);
        if (i >= 0) throw Errors.CONFLICT(`broadcast "${items[i]!.id}" already exists`);
        return out;
      },
    };
    this.targets = {
      name: 'broadcast_targets insert', phase: WINDOW_PHASES.insertChildren,
      keys: (g) => g.targets.map((t) => tkey(g.broadcastId, t.deviceId)),
      flush: async (trx, items) => {
        const rows = d === 'sqlite'
          ? await runValues<{ b: string }>(trx, items.flatMap((g) => g.targets.map((t) => [g.broadcastId, t.deviceId, t.area, t.state ?? 'pending', g.createdAt, t.detail, t.playRequestId])), 7,
            (v) => `INSERT INTO broadcast_targets (broadcast_id, device_id, area, state, updated_at, detail, play_request_id) VALUES ${v}
              ON CONFLICT DO NOTHING RETURNING broadcast_id AS b`)
          : await rowsOf(targetsSql(JSON.stringify(items.map((g) => ({
            b: g.broadcastId, c: g.createdAt,
            t: g.targets.map((t) => ({ d: t.deviceId, a: t.area, s: t.state, x: t.detail, p: t.playRequestId })),
          })))), trx);
        const n = new Map<string, number>();
        for (const r of rows) n.set(r.b, (n.get(r.b) ?? 0) + 1);
        return items.map((g) => { const c = n.get(g.broadcastId) ?? 0; n.set(g.broadcastId, 0); return c; });
      },
    };
    this.missed = {
      name: 'broadcast_missed insert', phase: WINDOW_PHASES.insert,
      flush: async (trx, items) => {
        const json = JSON.stringify(items.map((m) => ({ s: m.scheduleId, p: m.plannedAt, r: m.at, t: m.targets.map((t) => ({ d: t.deviceId, a: t.area })) })));
        const rows = await rowsOf(missedSql(d, json), trx);
        const n = new Map<string, number>();
        for (const r of rows) { const k = `${r.s}\u0000${r.p}`; n.set(k, (n.get(k) ?? 0) + 1); }
        return items.map((m) => { const k = `${m.scheduleId}\u0000${m.plannedAt}`; const c = n.get(k) ?? 0; n.set(k, 0); return c; });
      },
    };
    this.cas = {
      name: 'broadcast_targets cas', phase: WINDOW_PHASES.cas, keys: (c) => [tkey(c.broadcastId, c.deviceId)],
      flush: async (trx, items, ctx) => {
        const merged = new Map<string, { b: string; d: string; f: TargetState; t: TargetState; a: number; x?: string }>();
        for (const c of items) {
          const k = tkey(c.broadcastId, c.deviceId);
          const m = merged.get(k);
          if (m) { m.t = c.to; m.a = c.at; m.x = c.detail; } else merged.set(k, { b: c.broadcastId, d: c.deviceId, f: c.from, t: c.to, a: c.at, x: c.detail });
        }
        const rows = [...merged.entries()].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)).map(([, v]) => v); // one lock order on every node
        const done = d === 'sqlite'
          ? await runValues<{ b: string; d: string }>(trx, rows.map((r) => [r.b, r.d, r.f, r.t, r.a, r.x]), 6,
            (v) => `UPDATE broadcast_targets SET state = v.column4, updated_at = v.column5, detail = v.column6 FROM (VALUES ${v}) AS v
              WHERE broadcast_targets.broadcast_id = v.column1 AND broadcast_targets.device_id = v.column2 AND broadcast_targets.state = v.column3
              RETURNING broadcast_targets.broadcast_id AS b, broadcast_targets.device_id AS d`)
          : await rowsOf(casSql(JSON.stringify(rows)), trx);
        const applied = new Set(done.map((r) => tkey(r.b, r.d)));
        const missed = new Set<string>();
        for (const k of merged.keys()) if (!applied.has(k)) missed.add(k);
        ctx.set(MISSED_CAS, missed);
        return items.map((c) => ({ applied: applied.has(tkey(c.broadcastId, c.deviceId)) }));
      },
    };
    this.log = {
      name: 'broadcast_log insert', phase: WINDOW_PHASES.log,
      flush: async (trx, items, ctx: FlushContext) => {
        const missed = ctx.get(MISSED_CAS) as Set<string> | undefined;
        const lines = items.filter((l) => !(l.cas === true && missed?.has(tkey(l.broadcastId, l.deviceId))));
        if (lines.length > 0 && d === 'sqlite') {
          await runValues(trx, lines.map((l) => [l.at, l.deviceAt, l.broadcastId, l.scheduleId, l.deviceId, l.area, l.state, l.prevState, l.detail, l.source]), 10,
            (v) => `INSERT INTO broadcast_log (at, device_at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source) VALUES ${v}`);
        } else if (lines.length > 0) {
          await logSql(JSON.stringify(lines.map((l) => ({
            a: l.at, da: l.deviceAt, b: l.broadcastId, sc: l.scheduleId, d: l.deviceId, ar: l.area, s: l.state,
            p: l.prevState, x: l.detail, so: l.source,
          })))).execute(trx);
        }
        return items.map(() => undefined);
      },
    };
    this.stopRequested = {
      name: 'broadcasts stop requested', phase: WINDOW_PHASES.cas, keys: (s) => [`broadcast:${s.broadcastId}`],
      flush: async (trx, items) => {
        // The first request per broadcast (an UPDATE … FROM applies one arbitrary source row per target row).
        const first = new Map<string, number>();
        for (const s of items) if (!first.has(s.broadcastId)) first.set(s.broadcastId, s.at);
        const json = JSON.stringify([...first].map(([i, a]) => ({ i, a })));
        const applied = new Set((await rowsOf(stopSql(d, json), trx)).map((r) => r.id));
        const seen = new Set<string>();
        return items.map((s) => { const ok = applied.has(s.broadcastId) && !seen.has(s.broadcastId); seen.add(s.broadcastId); return { applied: ok }; });
      },
    };
    this.requestIds = {
      name: 'broadcast_targets request ids', phase: WINDOW_PHASES.casChildren, keys: (r) => [tkey(r.broadcastId, r.deviceId)],
      flush: async (trx, items) => {
        // One row per target (an UPDATE … FROM applies one arbitrary source row per target): the last id of each kind wins.
        const by = new Map<string, { b: string; d: string; p?: string; s?: string }>();
        for (const r of items) {
          const k = tkey(r.broadcastId, r.deviceId);
          const m = by.get(k) ?? { b: r.broadcastId, d: r.deviceId };
          if (r.playRequestId !== undefined) m.p = r.playRequestId;
          if (r.stopRequestId !== undefined) m.s = r.stopRequestId;
          by.set(k, m);
        }
        await requestIdsSql(d, JSON.stringify([...by.values()])).execute(trx);
        return items.map(() => undefined);
      },
    };
  }

  /**
   * A broadcast as today's `BroadcastRepo.create` writes it, as intents of the open window: the broadcast,
   * its targets (pending, or already in their first state), every target's `pending` line, then the first
   * transitions' lines. Resolves with whether the broadcast was new, after the window commits.
   */
  create(w: StateWindow, b: NewBroadcast, targets: readonly NewTarget[], kind: WindowKind<NewBroadcast, Applied> = this.broadcast): Promise<boolean> {
    const created = w.add(kind, b);
    w.post(this.targets, { broadcastId: b.id, createdAt: b.createdAt, targets });
    const scheduleId = b.scheduleId;
    for (const t of targets) {
      w.post(this.log, { at: b.createdAt, broadcastId: b.id, scheduleId, deviceId: t.deviceId, area: t.area, state: 'pending', source: 'controller' });
    }
    for (const t of targets) {
      if (t.state === undefined || t.state === 'pending') continue;
      w.post(this.log, {
        at: b.createdAt, broadcastId: b.id, scheduleId, deviceId: t.deviceId, area: t.area, state: t.state, prevState: 'pending',
        detail: t.detail, source: t.source ?? 'controller',
      });
    }
    return created.then((r) => r.applied);
  }

  /** A target's transition and its log line, as intents of the open window (today's `BroadcastRepo.transition`). */
  transition(w: StateWindow, t: { broadcastId: string; deviceId: string; area: string; state: TargetState }, to: TargetState, at: number, log: TransitionLog): Promise<Applied> {
    const r = w.add(this.cas, { broadcastId: t.broadcastId, deviceId: t.deviceId, from: t.state, to, at, detail: log.detail });
    w.post(this.log, {
      at, deviceAt: log.deviceAt, broadcastId: t.broadcastId, scheduleId: log.scheduleId, deviceId: t.deviceId, area: t.area,
      state: to, prevState: t.state, detail: log.detail, source: log.source, cas: true,
    });
    return r;
  }

  async getBroadcastRow(id: string): Promise<BroadcastRow | undefined> {
    const [r] = await rowsOf(sql<BroadcastRow>`SELECT id, schedule_id, planned_at, priority, volume, content_json, duration_sec, not_after,
      created_at, stop_requested_at FROM broadcasts WHERE id = ${id}`, this.db.kysely);
    return r;
  }

  async get(id: string): Promise<Broadcast | undefined> {
    const b = await this.getBroadcastRow(id);
    return b ? toBroadcast(b, await this.targetRows(id)) : undefined;
  }

  async targetRows(broadcastId: string): Promise<TargetRow[]> {
    return rowsOf(sql<TargetRow>`SELECT broadcast_id, device_id, area, state, updated_at, detail, play_request_id, stop_request_id
      FROM broadcast_targets WHERE broadcast_id = ${broadcastId} ORDER BY ${byText(this.db.dialect, 'device_id')}`, this.db.kysely);
  }

  async target(broadcastId: string, deviceId: string): Promise<TargetRow | undefined> {
    const [r] = await rowsOf(sql<TargetRow>`SELECT broadcast_id, device_id, area, state, updated_at, detail, play_request_id, stop_request_id
      FROM broadcast_targets WHERE broadcast_id = ${broadcastId} AND device_id = ${deviceId}`, this.db.kysely);
    return r;
  }

  /** Targets not in a final state of broadcasts created since `since` (memory at start). */
  async openTargets(since: number): Promise<TargetRow[]> {
    return rowsOf(sql<TargetRow>`SELECT t.broadcast_id, t.device_id, t.area, t.state, t.updated_at, t.detail, t.play_request_id, t.stop_request_id
      FROM broadcasts b JOIN broadcast_targets t ON t.broadcast_id = b.id
      WHERE b.created_at >= ${since} AND t.state IN ('pending', 'offline', 'sent', 'accepted', 'playing')
      ORDER BY t.broadcast_id, t.device_id`, this.db.kysely);
  }

  /** A broadcast's log lines in order. */
  async logOf(broadcastId: string): Promise<LogRow[]> {
    return rowsOf(sql<LogRow>`SELECT seq, at, device_at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source
      FROM broadcast_log WHERE broadcast_id = ${broadcastId} ORDER BY seq`, this.db.kysely);
  }
}

/** Whether a broadcast with this id is stored, read in the caller's transaction (a guard inside a window's unit). */
export async function broadcastExists(trx: Transaction<unknown>, id: string): Promise<boolean> {
  return (await sql<{ one: number }>`SELECT 1 AS one FROM broadcasts WHERE id = ${id}`.execute(trx)).rows.length > 0;
}

function broadcastSql(d: SqlDialect, json: string) {
  return d === 'postgres'
    ? sql<{ id: string }>`INSERT INTO broadcasts (id, schedule_id, planned_at, priority, volume, content_json, duration_sec, not_after, created_at)
        SELECT i, sc, p, pr, v, c, du, na, ca
        FROM jsonb_to_recordset(${json}::jsonb) AS x(i text, sc text, p bigint, pr text, v integer, c text, du double precision, na bigint, ca bigint)
        ON CONFLICT DO NOTHING RETURNING id`
    : sql<{ id: string }>`INSERT INTO broadcasts (id, schedule_id, planned_at, priority, volume, content_json, duration_sec, not_after, created_at)
        SELECT value->>'$.i', value->>'$.sc', value->>'$.p', value->>'$.pr', value->>'$.v', value->>'$.c', value->>'$.du', value->>'$.na', value->>'$.ca'
        FROM json_each(${json}) WHERE true
        ON CONFLICT DO NOTHING RETURNING id`;
}

function targetsSql(json: string) {
  return sql<{ b: string }>`INSERT INTO broadcast_targets (broadcast_id, device_id, area, state, updated_at, detail, play_request_id)
        SELECT g.b, t.d, t.a, COALESCE(t.s, 'pending'), g.c, t.x, t.p
        FROM jsonb_to_recordset(${json}::jsonb) AS g(b text, c bigint, t jsonb)
        CROSS JOIN LATERAL jsonb_to_recordset(g.t) AS t(d text, a text, s text, x text, p text)
        ON CONFLICT DO NOTHING RETURNING broadcast_id AS b`;
}

function missedSql(d: SqlDialect, json: string) {
  return d === 'postgres'
    ? sql<{ s: string; p: number }>`INSERT INTO broadcast_missed (schedule_id, planned_at, device_id, area, recorded_at)
        SELECT g.s, g.p, t.d, t.a, g.r
        FROM jsonb_to_recordset(${json}::jsonb) AS g(s text, p bigint, r bigint, t jsonb)
        CROSS JOIN LATERAL jsonb_to_recordset(g.t) AS t(d text, a text)
        ON CONFLICT DO NOTHING RETURNING schedule_id AS s, planned_at AS p`
    : sql<{ s: string; p: number }>`WITH g AS MATERIALIZED (SELECT value->>'$.s' AS s, value->>'$.p' AS p, value->>'$.r' AS r, value->'$.t' AS t
          FROM json_each(${json}))
        INSERT INTO broadcast_missed (schedule_id, planned_at, device_id, area, recorded_at)
        SELECT g.s, g.p, t.value->>'$.d', t.value->>'$.a', g.r FROM g, json_each(g.t) AS t WHERE true
        ON CONFLICT DO NOTHING RETURNING schedule_id AS s, planned_at AS p`;
}

function casSql(json: string) {
  return sql<{ b: string; d: string }>`UPDATE broadcast_targets AS t SET state = v.t, updated_at = v.a, detail = v.x
        FROM jsonb_to_recordset(${json}::jsonb) AS v(b text, d text, f text, t text, a bigint, x text)
        WHERE t.broadcast_id = v.b AND t.device_id = v.d AND t.state = v.f
        RETURNING t.broadcast_id AS b, t.device_id AS d`;
}

function logSql(json: string) {
  return sql`INSERT INTO broadcast_log (at, device_at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source)
        SELECT (l.v->>'a')::bigint, (l.v->>'da')::bigint, l.v->>'b', l.v->>'sc', l.v->>'d', l.v->>'ar', l.v->>'s', l.v->>'p', l.v->>'x', l.v->>'so'
        FROM jsonb_array_elements(${json}::jsonb) WITH ORDINALITY AS l(v, n)
        ORDER BY l.n
        ON CONFLICT (broadcast_id, device_id, state) DO NOTHING`;
}

function stopSql(d: SqlDialect, json: string) {
  return d === 'postgres'
    ? sql<{ id: string }>`UPDATE broadcasts AS b SET stop_requested_at = v.a FROM jsonb_to_recordset(${json}::jsonb) AS v(i text, a bigint)
        WHERE b.id = v.i AND b.stop_requested_at IS NULL RETURNING b.id`
    : sql<{ id: string }>`UPDATE broadcasts SET stop_requested_at = v.a
        FROM (SELECT value->>'$.i' AS i, value->>'$.a' AS a FROM json_each(${json})) AS v
        WHERE broadcasts.id = v.i AND broadcasts.stop_requested_at IS NULL RETURNING broadcasts.id`;
}

function requestIdsSql(d: SqlDialect, json: string) {
  return d === 'postgres'
    ? sql`UPDATE broadcast_targets AS t SET play_request_id = COALESCE(v.p, t.play_request_id), stop_request_id = COALESCE(v.s, t.stop_request_id)
        FROM jsonb_to_recordset(${json}::jsonb) AS v(b text, d text, p text, s text)
        WHERE t.broadcast_id = v.b AND t.device_id = v.d`
    : sql`UPDATE broadcast_targets SET play_request_id = COALESCE(v.p, play_request_id), stop_request_id = COALESCE(v.s, stop_request_id)
        FROM (SELECT value->>'$.b' AS b, value->>'$.d' AS d, value->>'$.p' AS p, value->>'$.s' AS s FROM json_each(${json})) AS v
        WHERE broadcast_targets.broadcast_id = v.b AND broadcast_targets.device_id = v.d`;
}
