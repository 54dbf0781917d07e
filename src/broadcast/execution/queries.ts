/**
 * Proof of play: the broadcast log (nhật ký phát thanh) per
 * speaker, queryable by time, area (with its subtree) and schedule, as JSON
 * or CSV, and totals per area.
 *
 * Time windows are half-open [from, to) in epoch ms; either end may be absent.
 *
 * Committed rows, read through the `Db` port the state window writes to (the embedded state.db, or
 * PostgreSQL): the same SQL on both dialects (no JSON functions: content is decoded here; text ordered
 * bytewise on both, see byText), only the filters asked for in the WHERE clause.
 *
 * Totals (per area where the speakers are registered, and in all), counted in
 * speaker-broadcasts ("one speaker × one occurrence"), for broadcasts whose
 * planned time (the schedule occurrence, or the start of a "play now") is in
 * the window, plus missed occurrences planned in the window:
 *   planned    = every target + every missed slot
 *              = played + unconfirmed + failed + missed + stopped + preempted + inProgress
 *   played     = completed (played to the end, reported by the speaker)
 *   unconfirmed = accepted (or started) but the end never reported, and the
 *                content must have ended: firmware without playback events
 *                (ThingsBoard SDKs); it may have played, it is not proven
 *   failed     = failed + rejected + expired, plus targets still `pending` or
 *                `offline` whose notAfter has passed (they can no longer play;
 *                the RPC sweep turns them `expired` within seconds)
 *   missed     = speakers of schedule occurrences recorded missed (Keng was
 *                not running at the planned time; recordMissed)
 *   stopped    = stopped by staff (broadcast.stop) or the local stop button
 *   preempted  = interrupted by an emergency (not a fault of the speaker)
 *   inProgress = pending, offline, sent, accepted or playing, still valid
 */
import { sql, type RawBuilder } from 'kysely';
import type { DeviceRegistryApi } from '../../devices/registry-types.js';
import type { Db } from '../../storage/sql/db.js';
import { toCsv, type CsvValue } from './csv.js';
import { missedToLogEntry, toBroadcast, toLogEntry, type BroadcastRow, type LogRow, type MissedRow, type TargetRow } from './repo.js';
import { byText } from './repo-sql.js';
import { formatTime } from '../../core/time.js';
import type { AreaTotals, Broadcast, ListQuery, LogEntry, LogNames, LogQuery, MediaContent, StreamContent, TargetState, TotalsQuery, TotalsResult } from './types.js';

export type QueryRegistry = Pick<DeviceRegistryApi, 'subtree' | 'getArea' | 'getDevice'>;

export const DEFAULT_LIST_LIMIT = 100;
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_LOG_LIMIT = 10_000;
export const MAX_LOG_LIMIT = 100_000;

/** Columns of the log as CSV (executor.csv() and the scoped export of the API). */
export const LOG_CSV_HEADER = ['time', 'device_time', 'broadcast_id', 'schedule_id', 'schedule_name', 'media_id', 'media_name',
  'area', 'area_name', 'device_id', 'device_name', 'state', 'previous_state', 'detail', 'source'] as const;

/** One log line as a CSV record (LOG_CSV_HEADER), times in `tz`. */
export function logCsvRow(e: LogEntry, tz: string, areaName: (code: string) => string, deviceName: (id: string) => string): CsvValue[] {
  return [
    formatTime(e.at, tz), e.deviceAt !== undefined ? formatTime(e.deviceAt, tz) : '',
    e.broadcastId, e.scheduleId, e.scheduleName, e.mediaId, e.mediaName, e.area, areaName(e.area), e.deviceId, deviceName(e.deviceId),
    e.state, e.prevState, e.detail, e.source,
  ];
}

const NO_NAMES: LogNames = { schedule: () => undefined, media: () => undefined };

/** Ids bound per `IN (…)` list (well under both dialects' parameter limits). */
const IDS_PER_QUERY = 500;

/** `col IN (…)` over bound values; an empty list matches nothing (`IN ()` is not SQL on PostgreSQL). */
function inList(col: string, values: readonly string[]): RawBuilder<unknown> {
  return values.length === 0 ? sql`1 = 0` : sql`${sql.ref(col)} IN (${sql.join(values)})`;
}

/** `WHERE a AND b …` (or nothing). */
function where(conds: ReadonlyArray<RawBuilder<unknown>>): RawBuilder<unknown> {
  return conds.length === 0 ? sql`` : sql`WHERE ${sql.join(conds, sql` AND `)}`;
}

function chunks<T>(list: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += n) out.push(list.slice(i, i + n));
  return out;
}

function clampLimit(v: number | undefined, def: number, max: number): number {
  if (v === undefined || !Number.isFinite(v)) return def;
  return Math.max(1, Math.min(max, Math.trunc(v)));
}

export class BroadcastQueries {
  constructor(
    private readonly db: Db<unknown>, private readonly registry: QueryRegistry, private readonly timeZone: string,
    private readonly names: LogNames = NO_NAMES,
  ) {}

  /** Area codes of the subtree, or null for no area filter. Unknown area → empty set. */
  private areaSet(area: string | undefined): string[] | null {
    if (area === undefined) return null;
    return this.registry.getArea(area) ? this.registry.subtree(area) : [];
  }

  /** [from, to) on `col`, each end when given. */
  private range(col: string, from: number | undefined, to: number | undefined): Array<RawBuilder<unknown>> {
    return [
      ...(from !== undefined ? [sql`${sql.ref(col)} >= ${from}`] : []),
      ...(to !== undefined ? [sql`${sql.ref(col)} < ${to}`] : []),
    ];
  }

  async list(q: ListQuery = {}): Promise<Broadcast[]> {
    const areas = this.areaSet(q.area);
    const k = this.db.kysely;
    const conds = [
      ...this.range('b.created_at', q.from, q.to),
      ...(q.scheduleId !== undefined ? [sql`b.schedule_id = ${q.scheduleId}`] : []),
      ...(areas !== null ? [sql`EXISTS (SELECT 1 FROM broadcast_targets t WHERE t.broadcast_id = b.id AND ${inList('t.area', areas)})`] : []),
    ];
    const rows = (await sql<BroadcastRow>`SELECT b.id, b.schedule_id, b.planned_at, b.priority, b.volume, b.content_json, b.duration_sec,
        b.not_after, b.created_at, b.stop_requested_at
      FROM broadcasts b ${where(conds)}
      ORDER BY b.created_at DESC, ${byText(this.db.dialect, 'b.id')} LIMIT ${clampLimit(q.limit, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)}`.execute(k)).rows;
    const inArea = areas !== null ? new Set(areas) : null;
    const targets = new Map<string, TargetRow[]>();
    for (const ids of chunks(rows.map((b) => b.id), IDS_PER_QUERY)) {
      const ts = (await sql<TargetRow>`SELECT broadcast_id, device_id, area, state, updated_at, detail, play_request_id, stop_request_id
        FROM broadcast_targets WHERE ${inList('broadcast_id', ids)}
        ORDER BY ${byText(this.db.dialect, 'broadcast_id')}, ${byText(this.db.dialect, 'device_id')}`.execute(k)).rows;
      for (const t of ts) {
        if (inArea && !inArea.has(t.area)) continue;
        let l = targets.get(t.broadcast_id);
        if (!l) { l = []; targets.set(t.broadcast_id, l); }
        l.push(t);
      }
    }
    return rows.map((b) => toBroadcast(b, targets.get(b.id) ?? []));
  }

  /** Transitions and missed occurrences in time order (missed ones only when no broadcastId is asked for). */
  async log(q: LogQuery = {}): Promise<LogEntry[]> {
    const areas = this.areaSet(q.area);
    const limit = clampLimit(q.limit, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT);
    const k = this.db.kysely;
    const common = [
      ...(q.scheduleId !== undefined ? [sql`schedule_id = ${q.scheduleId}`] : []),
      ...(q.deviceId !== undefined ? [sql`device_id = ${q.deviceId}`] : []),
      ...(areas !== null ? [inList('area', areas)] : []),
    ];
    // Only the terms asked for: a broadcast's lines come from broadcast_log_broadcast, a time range from broadcast_log_at.
    const rows = (await sql<LogRow>`SELECT seq, at, device_at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source
      FROM broadcast_log ${where([...this.range('at', q.from, q.to), ...common, ...(q.broadcastId !== undefined ? [sql`broadcast_id = ${q.broadcastId}`] : [])])}
      ORDER BY at, seq LIMIT ${limit}`.execute(k)).rows;
    const entries = await this.named(rows.map(toLogEntry));
    if (q.broadcastId !== undefined) return entries;
    const missed = (await sql<MissedRow>`SELECT schedule_id, planned_at, device_id, area, recorded_at FROM broadcast_missed
      ${where([...this.range('planned_at', q.from, q.to), ...common])}
      ORDER BY planned_at, ${byText(this.db.dialect, 'device_id')} LIMIT ${limit}`.execute(k)).rows;
    if (missed.length === 0) return entries;
    return [...entries, ...await this.named(missed.map(missedToLogEntry))].sort((a, b) => a.at - b.at).slice(0, limit);
  }

  /** Adds the media id of each line's broadcast and the names of its schedule and media (each looked up once per call). */
  private async named(entries: LogEntry[]): Promise<LogEntry[]> {
    // The broadcasts' content, decoded here (no JSON functions in SQL: the same query on both dialects).
    const mediaOf = new Map<string, string | null>();
    const ids = [...new Set(entries.flatMap((e) => (e.broadcastId !== undefined ? [e.broadcastId] : [])))];
    for (const part of chunks(ids, IDS_PER_QUERY)) {
      const rows = (await sql<{ id: string; content_json: string }>`SELECT id, content_json FROM broadcasts WHERE ${inList('id', part)}`
        .execute(this.db.kysely)).rows;
      for (const r of rows) mediaOf.set(r.id, mediaIdOf(r.content_json));
    }
    const scheduleNames = new Map<string, string | undefined>();
    const mediaNames = new Map<string, string | undefined>();
    const once = <V>(m: Map<string, V>, k: string, f: (k: string) => V): V => {
      if (!m.has(k)) m.set(k, f(k));
      return m.get(k) as V;
    };
    for (const e of entries) {
      const mediaId = e.broadcastId !== undefined ? mediaOf.get(e.broadcastId) ?? null : null;
      if (mediaId !== null) {
        e.mediaId = mediaId;
        const n = once(mediaNames, mediaId, (id) => this.names.media(id));
        if (n !== undefined) e.mediaName = n;
      }
      if (e.scheduleId !== undefined) {
        const n = once(scheduleNames, e.scheduleId, (id) => this.names.schedule(id));
        if (n !== undefined) e.scheduleName = n;
      }
    }
    return entries;
  }

  /** The log as CSV (RFC 4180, UTF-8 with BOM), times in the commune's time zone. */
  async csv(q: LogQuery = {}): Promise<string> {
    const areaNames = new Map<string, string>();
    const deviceNames = new Map<string, string>();
    const areaName = (c: string): string => {
      let n = areaNames.get(c);
      if (n === undefined) { n = this.registry.getArea(c)?.name ?? ''; areaNames.set(c, n); }
      return n;
    };
    const deviceName = (id: string): string => {
      let n = deviceNames.get(id);
      if (n === undefined) { n = this.registry.getDevice(id)?.name ?? ''; deviceNames.set(id, n); }
      return n;
    };
    return toCsv(LOG_CSV_HEADER, (await this.log(q)).map((e) => logCsvRow(e, this.timeZone, areaName, deviceName)));
  }

  async totals(q: TotalsQuery = {}, now = Date.now()): Promise<TotalsResult> {
    const areas = this.areaSet(q.area);
    const k = this.db.kysely;
    const byArea = new Map<string, AreaTotals>();
    const row = (area: string): AreaTotals => {
      let r = byArea.get(area);
      if (!r) {
        const name = this.registry.getArea(area)?.name;
        r = { area, ...(name !== undefined ? { areaName: name } : {}), planned: 0, played: 0, failed: 0, missed: 0, stopped: 0, preempted: 0, unconfirmed: 0, inProgress: 0 };
        byArea.set(area, r);
      }
      return r;
    };
    // `late` as 0/1 on both dialects (a comparison is a boolean on PostgreSQL); COUNT(*) is a number on both (db.ts).
    const counts = (await sql<{ area: string; state: TargetState; late: number; n: number }>`SELECT t.area AS area, t.state AS state,
        CASE WHEN t.state IN ('pending', 'offline') AND b.not_after <= ${now} THEN 1 ELSE 0 END AS late, COUNT(*) AS n
      FROM broadcast_targets t JOIN broadcasts b ON b.id = t.broadcast_id
      ${where([...this.range('b.planned_at', q.from, q.to), ...(areas !== null ? [inList('t.area', areas)] : [])])}
      GROUP BY t.area, t.state, late`.execute(k)).rows;
    for (const c of counts) {
      const r = row(c.area);
      const n = Number(c.n);
      r.planned += n;
      if (c.state === 'completed') r.played += n;
      else if (c.state === 'failed' || c.state === 'rejected' || c.state === 'expired' || Number(c.late) === 1) r.failed += n;
      else if (c.state === 'stopped') r.stopped += n;
      else if (c.state === 'preempted') r.preempted += n;
      else if (c.state === 'unconfirmed') r.unconfirmed += n;
      else r.inProgress += n;
    }
    const missed = (await sql<{ area: string; n: number }>`SELECT area, COUNT(*) AS n FROM broadcast_missed
      ${where([...this.range('planned_at', q.from, q.to), ...(areas !== null ? [inList('area', areas)] : [])])}
      GROUP BY area`.execute(k)).rows;
    for (const m of missed) {
      const r = row(m.area);
      r.missed += Number(m.n);
      r.planned += Number(m.n);
    }
    const list = [...byArea.values()].sort((a, b) => (a.area < b.area ? -1 : a.area > b.area ? 1 : 0));
    const total = { planned: 0, played: 0, failed: 0, missed: 0, stopped: 0, preempted: 0, unconfirmed: 0, inProgress: 0 };
    for (const r of list) {
      for (const k of Object.keys(total) as Array<keyof typeof total>) total[k] += r[k];
    }
    return { ...(q.from !== undefined ? { from: q.from } : {}), ...(q.to !== undefined ? { to: q.to } : {}), areas: list, total };
  }
}

/** The media id of a broadcast's stored content (content_json), or null (a stream, or unreadable). */
function mediaIdOf(contentJson: string): string | null {
  try {
    const c = JSON.parse(contentJson) as { media?: MediaContent; stream?: StreamContent };
    return typeof c.media?.mediaId === 'string' ? c.media.mediaId : null;
  } catch {
    return null;
  }
}
