/**
 * `rpc_requests` on the `Db` port, for the state window (src/storage/state/window.ts): the writes of
 * the hot path are window kinds that write ALL intents of a window with a few statements of fixed
 * SQL: on PostgreSQL one statement with one JSON parameter (`jsonb_array_elements` /
 * `jsonb_to_recordset`, one round trip for one command or 2,000); on SQLite multi-row VALUES lists
 * of bound rows (src/storage/sql/values.ts), cheaper than parsing JSON per column; the SQLite
 * driver's statement cache always hits. Reads load the in-memory state at start and
 * answer the rare misses (RpcService holds the open commands in memory).
 *
 * Transitions are compare-and-set: `from` is the state the caller's memory holds; a row in another
 * state (another node moved it, or memory is stale) is a miss, not an error (`applied: false`).
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Db, SqlDialect } from '../storage/sql/db.js';
import { runValues } from '../storage/sql/values.js';
import { sessionHolder } from './holder-sql.js';
import { WINDOW_PHASES, type WindowKind } from '../storage/state/window.js';
import type { RpcRequest, RpcState } from './types.js';

export interface Row {
  id: string; device_id: string; method: string; params_json: string; expires_at: number; state: RpcState;
  created_at: number; sent_at: number | null; answered_at: number | null; response_json: string | null; tb_id: number | null;
}

function parseObj(s: string | null): Record<string, unknown> | null {
  if (s === null) return null;
  try {
    const v: unknown = JSON.parse(s);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : null;
  } catch { return null; }
}

export function toRequest(r: Row): RpcRequest {
  return {
    id: r.id, deviceId: r.device_id, method: r.method, params: parseObj(r.params_json) ?? {},
    expiresAt: r.expires_at, state: r.state, createdAt: r.created_at, sentAt: r.sent_at,
    answeredAt: r.answered_at, response: parseObj(r.response_json), tbId: r.tb_id ?? null,
  };
}

export interface NewRequestRow {
  id: string; deviceId: string; method: string; paramsJson: string; expiresAt: number; createdAt: number;
  /** Inserted as `sent` at this time (published right after the insert); `queued` without it. */
  sentAt?: number;
  /** Its integer id for an access-token session (from nextTbId, same transaction). */
  tbId?: number;
}

/** Largest ThingsBoard request id: the Arduino SDK parses it with atoi (a C int, 32 bits). */
export const MAX_TB_ID = 2_147_483_647;


/** A command's move from the state memory holds. Several moves of one command in a window are merged (first `from`, last `to`). */
export interface RpcCas {
  id: string;
  deviceId: string;
  from: RpcState;
  to: RpcState;
  /** sent_at when `to` is `sent`; answered_at when `to` is `answered` or `cancelled`. */
  at?: number;
  responseJson?: string;
  /** Its integer id for an access-token session (a re-send there), claimed for the device in the same statement series. */
  tbId?: number;
}

export interface Applied {
  applied: boolean;
  /**
   * Cluster mode (a store made with `owner`): the node that owns the command, i.e. holds its device's session
   * (device_sessions), or this node when none does. Absent on the embedded store.
   */
  owner?: string;
}

type Q = Kysely<unknown> | Transaction<unknown>;

const rowsOf = async <T>(q: { execute(db: Q): Promise<{ rows: T[] }> }, db: Q): Promise<T[]> => (await q.execute(db)).rows;

export class RpcStoreSql {
  /** Inserts commands (`queued`, or `sent` with sentAt); on SQLite a command of a device deleted meanwhile is skipped (applied false). */
  readonly insert: WindowKind<NewRequestRow, Applied>;
  readonly cas: WindowKind<RpcCas, Applied>;
  /**
   * Cluster mode: commands whose last move to `sent` missed (the row was not in the state memory held: another node
   * cancelled or finished it). Set by the CAS flush (a retried flush sets it again), read by the after-commit publish.
   */
  private readonly sentMisses = new Set<string>();
  /**
   * Cluster mode: withdraws the queued (never sent) `method` commands whose params hold `value` at `path` that OTHER
   * nodes own (this node withdraws its own from memory); outcome: their owners, one per command withdrawn.
   */
  readonly cancelElsewhere: WindowKind<{ method: string; path: string; value: string; at: number }, string[]>;

  /**
   * `owner` (cluster mode, PostgreSQL only): this node's id. Then a new command is owned by the node holding its
   * device's session (else this node) and `handed` only when that is this node, in the insert statement itself
   * (rpc/ownership.ts); tb ids are recorded only growing. Without it (the embedded store) nothing changes.
   */
  constructor(private readonly db: Db<unknown>, owner?: string) {
    const d = db.dialect;
    const me = d === 'postgres' ? owner : undefined;
    this.insert = {
      name: 'rpc_requests insert',
      phase: WINDOW_PHASES.insert,
      keys: (r) => [`rpc:${r.id}`],
      flush: async (trx, items) => {
        await claimTbIds(trx, d, items.filter((r) => r.tbId !== undefined).map((r) => [r.deviceId, r.tbId!]), me !== undefined);
        if (me !== undefined) {
          const owned = new Map((await rowsOf(ownedInsertSql(JSON.stringify(groupInserts(items)), me), trx)).map((r) => [r.id, r.owner_node]));
          return items.map((r) => (owned.has(r.id) ? { applied: true, owner: owned.get(r.id)! } : { applied: false }));
        }
        // SQLite: a device deleted meanwhile (foreign key) is skipped rather than failing the whole window.
        const rows = d === 'sqlite'
          ? await runValues<{ id: string }>(trx, items.map((r) => [r.id, r.deviceId, r.method, r.paramsJson, r.expiresAt, r.sentAt === undefined ? 'queued' : 'sent', r.createdAt, r.sentAt, r.tbId]), 9,
            (v) => `INSERT INTO rpc_requests (id, device_id, method, params_json, expires_at, state, created_at, sent_at, tb_id)
              SELECT * FROM (VALUES ${v}) AS v WHERE EXISTS (SELECT 1 FROM devices WHERE id = v.column2) RETURNING id`)
          : await rowsOf(insertSql(JSON.stringify(groupInserts(items))), trx);
        const added = new Set(rows.map((r) => r.id));
        return items.map((r) => ({ applied: added.has(r.id) }));
      },
    };
    this.cancelElsewhere = {
      name: 'rpc_requests cancel by param (other owners)',
      phase: WINDOW_PHASES.cas,
      flush: async (trx, items) => {
        const out: string[][] = [];
        for (const c of items) { // rare (an alert turned down): one statement each
          out.push((await rowsOf(sql<{ owner_node: string }>`UPDATE rpc_requests SET state = 'cancelled', answered_at = ${c.at}
            WHERE state = 'queued' AND sent_at IS NULL AND owner_node <> ${me ?? ''} AND method = ${c.method}
              AND (params_json::jsonb #>> ${pgPath(c.path)}::text[]) = ${c.value}
            RETURNING owner_node`, trx)).map((r) => r.owner_node));
        }
        return out;
      },
    };
    this.cas = {
      name: 'rpc_requests cas',
      phase: WINDOW_PHASES.cas,
      keys: (c) => [`rpc:${c.id}`],
      flush: async (trx, items) => {
        const merged = mergeCas(items);
        await claimTbIds(trx, d, merged.filter((c) => c.n !== undefined).map((c) => [c.dv, c.n!]), me !== undefined);
        const rows = merged.sort((x, y) => (x.i < y.i ? -1 : x.i > y.i ? 1 : 0)); // PostgreSQL: one lock order for every node
        const done = d === 'sqlite'
          ? await runValues<{ id: string }>(trx, rows.map((c) => [c.i, c.dv, c.f, c.t, c.s, c.a, c.x, c.n]), 8,
            (v) => `UPDATE rpc_requests SET state = v.column4, sent_at = COALESCE(v.column5, sent_at), answered_at = COALESCE(v.column6, answered_at),
                response_json = COALESCE(v.column7, response_json), tb_id = COALESCE(v.column8, tb_id)
              FROM (VALUES ${v}) AS v WHERE rpc_requests.id = v.column1 AND rpc_requests.device_id = v.column2 AND rpc_requests.state = v.column3
              RETURNING rpc_requests.id`)
          : await rowsOf(casSql(JSON.stringify(rows), me), trx);
        const applied = new Set(done.map((r) => r.id));
        if (me !== undefined) {
          for (const c of rows) if (c.t === 'sent') { if (applied.has(c.i)) this.sentMisses.delete(c.i); else this.sentMisses.add(c.i); }
        }
        return items.map((c) => ({ applied: applied.has(c.id) }));
      },
    };
  }

  /** Cluster mode, after the commit of a move to `sent`: true (once) when that move missed. */
  sendMissed(id: string): boolean {
    return this.sentMisses.delete(id);
  }

  async get(id: string): Promise<RpcRequest | undefined> {
    const [r] = await rowsOf(sql<Row>`SELECT * FROM rpc_requests WHERE id = ${id}`, this.db.kysely);
    return r ? toRequest(r) : undefined;
  }

  /** A device's commands in creation order. */
  async listDevice(deviceId: string, states?: readonly RpcState[]): Promise<RpcRequest[]> {
    const order = this.db.dialect === 'postgres' ? sql`seq` : sql`rowid`;
    const rows = await rowsOf(sql<Row>`SELECT * FROM rpc_requests WHERE device_id = ${deviceId} ORDER BY ${order}`, this.db.kysely);
    const all = rows.map(toRequest);
    return states ? all.filter((r) => states.includes(r.state)) : all;
  }

  /** Every `queued` or `sent` command in creation order (memory at start). */
  async open(): Promise<RpcRequest[]> {
    const order = this.db.dialect === 'postgres' ? sql`seq` : sql`rowid`;
    return (await rowsOf(sql<Row>`SELECT * FROM rpc_requests WHERE state IN ('queued', 'sent') ORDER BY ${order}`, this.db.kysely)).map(toRequest);
  }

  /** Cluster mode: the device's open commands this node owns, in creation order (memory after a failed window). */
  async listOwned(deviceId: string, owner: string): Promise<RpcRequest[]> {
    return (await rowsOf(sql<Row>`SELECT * FROM rpc_requests WHERE device_id = ${deviceId} AND owner_node = ${owner}
      AND state IN ('queued', 'sent') ORDER BY seq`, this.db.kysely)).map(toRequest);
  }

  /** Keng's id of the device's command published with integer id `n`. */
  async idOfTbId(deviceId: string, n: number): Promise<string | undefined> {
    const [r] = await rowsOf(sql<{ id: string }>`SELECT id FROM rpc_requests WHERE device_id = ${deviceId} AND tb_id = ${n}`, this.db.kysely);
    return r?.id;
  }

  /** The devices' last integer request ids (absent: none yet). */
  async lastTbIds(): Promise<Map<string, number>> {
    const rows = await rowsOf(sql<{ device_id: string; last_id: number }>`SELECT device_id, last_id FROM rpc_tb_ids`, this.db.kysely);
    return new Map(rows.map((r) => [r.device_id, r.last_id]));
  }

  /**
   * In a unit: withdraws every queued `method` command whose params hold `value` at `path` (`$.a.b`);
   * returns their ids. Rare (a broadcast stopped): scans the queued commands.
   */
  async cancelQueuedByParam(trx: Transaction<unknown>, method: string, path: string, value: string, at: number): Promise<string[]> {
    const q = this.db.dialect === 'postgres'
      ? sql<{ id: string }>`UPDATE rpc_requests SET state = 'cancelled', answered_at = ${at}
          WHERE state = 'queued' AND method = ${method} AND (params_json::jsonb #>> ${pgPath(path)}::text[]) = ${value} RETURNING id`
      : sql<{ id: string }>`UPDATE rpc_requests SET state = 'cancelled', answered_at = ${at}
          WHERE state = 'queued' AND method = ${method} AND json_extract(params_json, ${path}) = ${value} RETURNING id`;
    return (await rowsOf(q, trx)).map((r) => r.id);
  }

  /**
   * A deleted device's commands and integer ids, as the embedded store's foreign key cascade removes them (the
   * cluster database has no foreign key to devices): its open commands would otherwise stay open for ever, owned by
   * a live node that forgot them.
   */
  async deleteDevice(trx: Transaction<unknown>, deviceId: string): Promise<number> {
    const r = await sql`DELETE FROM rpc_requests WHERE device_id = ${deviceId}`.execute(trx);
    await sql`DELETE FROM rpc_tb_ids WHERE device_id = ${deviceId}`.execute(trx);
    return Number(r.numAffectedRows ?? 0);
  }

  async deleteFinishedBefore(t: number): Promise<number> {
    return this.db.write(async (trx) => {
      const r = await sql`DELETE FROM rpc_requests WHERE state IN ('answered', 'expired', 'cancelled') AND created_at < ${t}`.execute(trx);
      return Number(r.numAffectedRows ?? 0);
    });
  }
}

/** `$.a.b` → `{a,b}` (a PostgreSQL text[] path). */
function pgPath(path: string): string {
  if (!/^\$(\.[A-Za-z0-9_]+)+$/.test(path)) throw new Error(`unsupported JSON path ${path}`);
  return `{${path.slice(2).split('.').join(',')}}`;
}

/** Commands sharing method, params, expiry and creation time (a sendMany) are one group: those values once, not per row. */
function groupInserts(items: readonly NewRequestRow[]): Array<{ m: string; p: string; e: number; c: number; r: Array<{ i: string; d: string; s?: number; t?: number }> }> {
  const groups = new Map<string, { m: string; p: string; e: number; c: number; r: Array<{ i: string; d: string; s?: number; t?: number }> }>();
  for (const it of items) {
    const k = `${it.method}\u0000${it.expiresAt}\u0000${it.createdAt}\u0000${it.paramsJson}`;
    let g = groups.get(k);
    if (!g) { g = { m: it.method, p: it.paramsJson, e: it.expiresAt, c: it.createdAt, r: [] }; groups.set(k, g); }
    g.r.push({ i: it.id, d: it.deviceId, ...(it.sentAt !== undefined ? { s: it.sentAt } : {}), ...(it.tbId !== undefined ? { t: it.tbId } : {}) });
  }
  return [...groups.values()];
}

/** PostgreSQL: row order = creation order (seq), a device's commands are replayed in it: sorted by the ordinalities. */
function insertSql(json: string) {
  return sql<{ id: string }>`INSERT INTO rpc_requests (id, device_id, method, params_json, expires_at, state, created_at, sent_at, tb_id)
        SELECT r.v->>'i', r.v->>'d', g.v->>'m', g.v->>'p', (g.v->>'e')::bigint,
          CASE WHEN r.v ? 's' THEN 'sent' ELSE 'queued' END, (g.v->>'c')::bigint, (r.v->>'s')::bigint, (r.v->>'t')::integer
        FROM jsonb_array_elements(${json}::jsonb) WITH ORDINALITY AS g(v, n)
        CROSS JOIN LATERAL jsonb_array_elements(g.v->'r') WITH ORDINALITY AS r(v, n)
        ORDER BY g.n, r.n
        RETURNING id`;
}

/**
 * Cluster mode: the same insert with its owner decided in the statement: the node holding the device's session
 * (device_sessions; a sub-device's: its gateway's, holder-sql.ts), else this node; `handed` (picked up) only when
 * that is this node. `owner_inc`: the lease start of the owning process (cluster_nodes.started_at) when it is this
 * node, 0 (not taken yet) otherwise (rpc/ownership.ts).
 */
function ownedInsertSql(json: string, me: string) {
  return sql<{ id: string; owner_node: string }>`INSERT INTO rpc_requests (id, device_id, method, params_json, expires_at, state, created_at, sent_at, tb_id,
          owner_node, owner_inc, handed)
        SELECT x.i, x.d, x.m, x.p, x.e, x.st, x.c, x.s, x.t, x.o, CASE WHEN x.o = ${me} THEN x.inc ELSE 0 END, x.o = ${me}
        FROM (SELECT r.v->>'i' AS i, r.v->>'d' AS d, g.v->>'m' AS m, g.v->>'p' AS p, (g.v->>'e')::bigint AS e,
            CASE WHEN r.v ? 's' THEN 'sent' ELSE 'queued' END AS st, (g.v->>'c')::bigint AS c, (r.v->>'s')::bigint AS s, (r.v->>'t')::integer AS t,
            COALESCE(${sessionHolder(sql`r.v->>'d'`)}, ${me}) AS o,
            COALESCE((SELECT n.started_at FROM cluster_nodes n WHERE n.node_id = ${me}), 0) AS inc, g.n AS gn, r.n AS rn
          FROM jsonb_array_elements(${json}::jsonb) WITH ORDINALITY AS g(v, n)
          CROSS JOIN LATERAL jsonb_array_elements(g.v->'r') WITH ORDINALITY AS r(v, n)) AS x
        ORDER BY x.gn, x.rn
        RETURNING id, owner_node`;
}

interface CasRow { i: string; dv: string; f: RpcState; t: RpcState; s?: number; a?: number; x?: string; n?: number }

function mergeCas(items: readonly RpcCas[]): CasRow[] {
  const by = new Map<string, CasRow>();
  for (const c of items) {
    let m = by.get(c.id);
    if (!m) { m = { i: c.id, dv: c.deviceId, f: c.from, t: c.to }; by.set(c.id, m); }
    m.t = c.to;
    if (c.at !== undefined && c.to === 'sent') m.s = c.at;
    if (c.at !== undefined && (c.to === 'answered' || c.to === 'cancelled')) m.a = c.at;
    if (c.responseJson !== undefined) m.x = c.responseJson;
    if (c.tbId !== undefined) m.n = c.tbId;
  }
  return [...by.values()];
}

/**
 * `me` (cluster mode): a move to `sent` (a publish follows its commit) or back to `queued` applies only to a row this
 * node owns: a node that was fenced or paused while another node took the command (claimed with its device, or
 * adopted) misses, and so never publishes it from what its memory still holds (rpc-service.ts dropMissed). Answers,
 * expiries and cancels stay compare-and-set on the state alone (an answer may reach a node that does not own it).
 */
function casSql(json: string, me?: string) {
    return sql<{ id: string }>`UPDATE rpc_requests AS q SET state = v.t, sent_at = COALESCE(v.s, q.sent_at), answered_at = COALESCE(v.a, q.answered_at),
          response_json = COALESCE(v.x, q.response_json), tb_id = COALESCE(v.n, q.tb_id)
        FROM jsonb_to_recordset(${json}::jsonb) AS v(i text, dv text, f text, t text, s bigint, a bigint, x text, n integer)
        WHERE q.id = v.i AND q.device_id = v.dv AND q.state = v.f
          ${me === undefined ? sql`` : sql`AND (v.t NOT IN ('sent', 'queued') OR q.owner_node = ${me})`}
        RETURNING q.id`;
}

/**
 * Records each device's last integer id (the last of the window, in order: ids wrap from 2^31-1 to 1) and
 * frees those ids from older commands still holding them (only after a wrap, 2^31 commands later).
 */
async function claimTbIds(trx: Transaction<unknown>, d: SqlDialect, pairs: Array<[string, number]>, cluster = false): Promise<void> {
  if (pairs.length === 0) return;
  const last = new Map<string, number>();
  for (const [dev, n] of pairs) last.set(dev, n);
  const all = JSON.stringify(pairs.map(([dev, n]) => ({ d: dev, n })));
  const lastJson = JSON.stringify([...last].map(([dev, n]) => ({ d: dev, n })));
  if (d === 'postgres' && cluster) {
    // Several nodes: the device's rpc_tb_ids row is locked FIRST, so two windows allocating for one device (its
    // session moving between nodes) take turns, and the freeing UPDATE then sees the other's committed ids (no unique
    // violation failing a window). Only growing (a late window of the old session holder never moves it back: the
    // new holder starts TB_ID_HANDOFF_GAP above it, rpc/ownership.ts); a wrap (2^31-1 → small) still counts as growing.
    await sql`INSERT INTO rpc_tb_ids (device_id, last_id) SELECT d, n FROM jsonb_to_recordset(${lastJson}::jsonb) AS v(d text, n integer)
      ORDER BY d
      ON CONFLICT (device_id) DO UPDATE SET last_id = CASE
        WHEN excluded.last_id > rpc_tb_ids.last_id OR rpc_tb_ids.last_id - excluded.last_id > 1073741824 THEN excluded.last_id
        ELSE rpc_tb_ids.last_id END`.execute(trx);
    await sql`UPDATE rpc_requests AS q SET tb_id = NULL FROM jsonb_to_recordset(${all}::jsonb) AS v(d text, n integer)
      WHERE q.device_id = v.d AND q.tb_id = v.n`.execute(trx);
    return;
  }
  if (d === 'postgres') {
    await sql`UPDATE rpc_requests AS q SET tb_id = NULL FROM jsonb_to_recordset(${all}::jsonb) AS v(d text, n integer)
      WHERE q.device_id = v.d AND q.tb_id = v.n`.execute(trx);
    await sql`INSERT INTO rpc_tb_ids (device_id, last_id) SELECT d, n FROM jsonb_to_recordset(${lastJson}::jsonb) AS v(d text, n integer)
      ON CONFLICT (device_id) DO UPDATE SET last_id = excluded.last_id`.execute(trx);
    return;
  }
  await sql`UPDATE rpc_requests SET tb_id = NULL
    WHERE tb_id IS NOT NULL AND (device_id, tb_id) IN (SELECT value->>'$.d', value->>'$.n' FROM json_each(${all}))`.execute(trx);
  await sql`INSERT INTO rpc_tb_ids (device_id, last_id) SELECT value->>'$.d', value->>'$.n' FROM json_each(${lastJson})
    WHERE EXISTS (SELECT 1 FROM devices WHERE id = value->>'$.d')
    ON CONFLICT (device_id) DO UPDATE SET last_id = excluded.last_id`.execute(trx);
}
