/**
 * The embedded store's SQLite schema and statements. Runs inside the worker
 * thread only (sqlite-worker.ts): one writer connection, one read-only one.
 *
 * Schema: integer dictionary ids for device and field names, one
 * WITHOUT ROWID table keyed (device, field, ts). `v` is declared without a
 * type on purpose: a declared "ANY" in a non-STRICT table gets NUMERIC
 * affinity, which would turn the string "12" into the number 12. `k` is the
 * value kind: 0 number (always bound as REAL), 1 boolean (0/1), 2 string.
 * `series` lists the (device, field) pairs present, so retention and
 * "all fields of a device" never scan the readings table.
 *
 * Field types (field-types.ts): `fields.k` is the kind of the field's first
 * stored value; a value of another kind is written to `dead_readings` in the
 * same transaction instead of `readings`/`recent`. The writer keeps one map
 * name → id*4 + kind, so the check costs no extra lookup per reading.
 *
 * The same (device, field, ts) again: the last value wins, as in InfluxDB
 * (it overwrites a point with the same series and time) and as in the latest
 * values (devices/presence.ts keeps the newest ts, the later value on a tie),
 * so history and latest values agree. An identical re-send changes nothing
 * and counts as a duplicate.
 *
 * Write amplification: with (device, field, ts) clustering, a commit that
 * carries one reading for each of N series dirties ~N b-tree pages (measured:
 * 400 readings of 400 series per commit ≈ 15k readings/s, CPU- and WAL-bound,
 * not fsync-bound). So recent readings first go to `recent`, clustered
 * (ts, device, field) — appends at the end of the b-tree — and a compaction
 * step moves them in (device, field, ts) order into `readings`, touching each
 * series' page once for many readings. Every (device, field, ts) has exactly
 * one home, decided by the watermark W kept in `meta`: ts >= W → `recent`,
 * ts < W → `readings`; compaction moves rows below a new W and raises W in the
 * same transaction, and W never decreases, so the insert's conflict clause
 * de-duplicates exactly. Queries (embedded-reader.ts) read both tables in one statement (one snapshot).
 */
import Database from 'better-sqlite3';
import { preparePrivateDb, tightenSqliteFiles } from '../../core/private-files.js';
import { FIELD_TYPE_CONFLICT, kindName, type SetAsideReading } from './field-types.js';
import type { TelemetryRecord, WriteResult } from './types.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS devices (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS fields (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, k INTEGER);
CREATE TABLE IF NOT EXISTS series (device INTEGER NOT NULL, field INTEGER NOT NULL, PRIMARY KEY (device, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS readings (
  device INTEGER NOT NULL, field INTEGER NOT NULL, ts INTEGER NOT NULL, v, k INTEGER NOT NULL,
  PRIMARY KEY (device, field, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent (
  device INTEGER NOT NULL, field INTEGER NOT NULL, ts INTEGER NOT NULL, v, k INTEGER NOT NULL,
  PRIMARY KEY (ts, device, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('watermark', -9007199254740991);
CREATE TABLE IF NOT EXISTS dead_readings (
  device TEXT NOT NULL, field TEXT NOT NULL, ts INTEGER NOT NULL, value, type TEXT NOT NULL,
  reason TEXT NOT NULL, detail TEXT, at INTEGER NOT NULL, PRIMARY KEY (device, field, ts)
) WITHOUT ROWID;
`;

/** `fields.k` not yet known (a field of a database made before types were kept, with no readings left). */
const K_UNKNOWN = 3;

/**
 * Databases made before field types were kept: add `fields.k` and fill it with
 * the kind of each field's earliest reading (one index seek per series; the
 * small `recent` table is read once).
 */
function migrateFieldKinds(db: Database.Database): void {
  const cols = db.prepare('PRAGMA table_info(fields)').all() as { name: string }[];
  if (cols.some((c) => c.name === 'k')) return;
  db.transaction(() => {
    db.exec('ALTER TABLE fields ADD COLUMN k INTEGER');
    const first = new Map<number, { ts: number; k: number }>();
    const keep = (field: number, ts: number, k: number): void => {
      const cur = first.get(field);
      if (!cur || ts < cur.ts) first.set(field, { ts, k });
    };
    const seek = db.prepare('SELECT ts, k FROM readings WHERE device = ? AND field = ? ORDER BY ts LIMIT 1');
    for (const s of db.prepare('SELECT device, field FROM series').all() as { device: number; field: number }[]) {
      const r = seek.get(s.device, s.field) as { ts: number; k: number } | undefined;
      if (r) keep(s.field, r.ts, r.k);
    }
    for (const r of db.prepare('SELECT field, MIN(ts) AS ts, k FROM recent GROUP BY field').all() as { field: number; ts: number; k: number }[]) keep(r.field, r.ts, r.k);
    const upd = db.prepare('UPDATE fields SET k = ? WHERE id = ?');
    for (const [field, r] of first) upd.run(r.k, field);
  }).immediate();
}

/** Readings stay in `recent` until they are this old (wall clock of the worker); only affects speed, not results. */
export const COMPACT_LAG_MS = 10_000;
/** A compaction step runs this often (sooner while a backlog remains); each step moves at most COMPACT_MAX_ROWS. */
const COMPACT_EVERY_MS = 2_000;
/**
 * A step holds the only write connection, so every commit (and PUBACK) queued
 * behind it waits for it. Measured on the 2-core bench machine (100 devices ×
 * 4 fields, ~90k readings/s): 200k-row steps took 0.6-0.7 s, long enough for
 * every device's in-flight window to fill and the broker to idle (-10..20%
 * msg/s whenever compaction ran); 50k-row steps take 0.1-0.23 s and cost
 * ~1 µs/row more (3.7 vs 2.8 µs: fewer rows per series page per step). The
 * worker runs the steps of a backlog one by one with queued writes between
 * them (sqlite-worker.ts), so a commit waits for at most one step. 10k-row
 * steps (~20-50 ms) measured better still: bench:ingest 28.7k msg/s with the
 * worst second at 19.8k (50k steps: 26.8k, worst second 12.8k), and the live
 * feed's p99 fell from ~275 to ~185 ms (its events follow the commits).
 */
export const COMPACT_MAX_ROWS = 10_000;

/** Rows per multi-row INSERT: 64 rows × 5 parameters measured fastest. */
const ROWS_PER_STMT = 64;

export function openDb(path: string, opts: { readonly?: boolean; sync?: 'full' | 'normal' } = {}): Database.Database {
  // Every reading (or the InfluxDB queue): the owner only, from creation on; -wal/-shm take the file's mode.
  if (!opts.readonly) preparePrivateDb(path);
  const db = new Database(path, { readonly: !!opts.readonly, fileMustExist: !!opts.readonly });
  db.pragma('busy_timeout = 5000');
  if (!opts.readonly) {
    db.pragma('journal_mode = WAL');
    tightenSqliteFiles(path);
    db.pragma(`synchronous = ${opts.sync === 'normal' ? 'NORMAL' : 'FULL'}`);
  }
  // A larger page cache keeps the hot leaf pages of many series in memory; sorts (compaction) stay in RAM.
  db.pragma('cache_size = -32768');
  db.pragma('temp_store = MEMORY');
  return db;
}

export class EmbeddedWriter {
  private readonly devices = new Map<string, number>();
  /** Field name → id * 4 + kind (K_UNKNOWN when not known yet). */
  private readonly fields = new Map<string, number>();
  private readonly series = new Set<number>();
  private readonly insertStmts = new Map<string, Database.Statement>();
  private watermark = Number.MIN_SAFE_INTEGER;
  private recentRows = 0;
  private lastCompact = Date.now();
  /** The last step was cut at COMPACT_MAX_ROWS: run the next one soon. */
  private backlog = false;
  private readonly db: Database.Database;
  private readonly insDevice: Database.Statement;
  private readonly insField: Database.Statement;
  private readonly setFieldKind: Database.Statement;
  private readonly insDead: Database.Statement;
  private readonly insSeries: Database.Statement;
  private readonly updRecent: Database.Statement;
  /** Existing readings that took a new value (see insert()), counted as written. */
  private overwritten = 0;
  private readonly updReadings: Database.Statement;

  constructor(path: string, sync: 'full' | 'normal') {
    this.db = openDb(path, { sync });
    this.db.exec(SCHEMA);
    migrateFieldKinds(this.db);
    this.insDevice = this.db.prepare('INSERT INTO devices (name) VALUES (?)');
    this.insField = this.db.prepare('INSERT INTO fields (name, k) VALUES (?, ?)');
    this.setFieldKind = this.db.prepare('UPDATE fields SET k = ? WHERE id = ?');
    this.insDead = this.db.prepare(`INSERT OR IGNORE INTO dead_readings (device, field, ts, value, type, reason, detail, at)
      VALUES (?, ?, ?, ?, ?, '${FIELD_TYPE_CONFLICT}', ?, ?)`);
    this.insSeries = this.db.prepare('INSERT OR IGNORE INTO series (device, field) VALUES (?, ?)');
    const upd = (t: string): string => `UPDATE ${t} SET v = ?, k = ? WHERE device = ? AND field = ? AND ts = ? AND (v IS NOT ? OR k IS NOT ?)`;
    this.updRecent = this.db.prepare(upd('recent'));
    this.updReadings = this.db.prepare(upd('readings'));
    this.loadDictionaries();
    this.watermark = (this.db.prepare("SELECT value FROM meta WHERE key = 'watermark'").get() as { value: number }).value;
    this.recentRows = (this.db.prepare('SELECT COUNT(*) AS n FROM recent').get() as { n: number }).n;
  }

  private loadDictionaries(): void {
    this.devices.clear(); this.fields.clear(); this.series.clear();
    for (const r of this.db.prepare('SELECT id, name FROM devices').all() as { id: number; name: string }[]) this.devices.set(r.name, r.id);
    for (const r of this.db.prepare('SELECT id, name, k FROM fields').all() as { id: number; name: string; k: number | null }[]) {
      this.fields.set(r.name, r.id * 4 + (r.k ?? K_UNKNOWN));
    }
    for (const r of this.db.prepare('SELECT device, field FROM series').all() as { device: number; field: number }[]) this.series.add(seriesKey(r.device, r.field));
  }

  private stmt(table: 'readings' | 'recent', rows: number): Database.Statement {
    const key = table + rows;
    let s = this.insertStmts.get(key);
    if (!s) {
      s = this.db.prepare(`INSERT OR IGNORE INTO ${table} (device, field, ts, v, k) VALUES ` + new Array(rows).fill('(?,?,?,?,?)').join(','));
      this.insertStmts.set(key, s);
    }
    return s;
  }

  /**
   * Insert `rows` rows of `p` (5 parameters each); a row whose (device, field,
   * ts) exists takes the new value (the last one wins). Returns rows inserted;
   * rows changed are added to `overwritten` (an identical re-send counts in
   * neither). The plain INSERT OR IGNORE is the common path: an upsert clause
   * on the multi-row insert cost ~20% of the writer's throughput; the per-row
   * UPDATE runs only for a chunk that held duplicates (re-sends).
   */
  private insert(table: 'readings' | 'recent', rows: number, p: (number | string)[]): number {
    const inserted = this.stmt(table, rows).run(rows * 5 === p.length ? p : p.slice(0, rows * 5)).changes;
    if (inserted === rows) return inserted;
    const upd = table === 'recent' ? this.updRecent : this.updReadings;
    let changed = 0;
    for (let i = 0; i < rows * 5; i += 5) changed += upd.run(p[i + 3], p[i + 4], p[i], p[i + 1], p[i + 2], p[i + 3], p[i + 4]).changes;
    this.overwritten += changed;
    return inserted;
  }

  private deviceId(name: string): number {
    let id = this.devices.get(name);
    if (id === undefined) { id = Number(this.insDevice.run(name).lastInsertRowid); this.devices.set(name, id); }
    return id;
  }

  /** id * 4 + kind of a field seen for the first time, or known without a kind: it takes `k`. */
  private fieldTyped(name: string, known: number | undefined, k: number): number {
    let fk: number;
    if (known === undefined) fk = Number(this.insField.run(name, k).lastInsertRowid) * 4 + k;
    else { fk = known - K_UNKNOWN + k; this.setFieldKind.run(k, (known - K_UNKNOWN) / 4); }
    this.fields.set(name, fk);
    return fk;
  }

  /** All fields of the store with their type (tests, diagnostics). */
  fieldTypes(): Record<string, string> {
    const o: Record<string, string> = {};
    for (const [name, fk] of this.fields) o[name] = kindName(fk & 3);
    return o;
  }

  /** One transaction per batch; one row per (device, field, ts), the last value wins. */
  write(records: readonly TelemetryRecord[]): WriteResult {
    return this.writeMany([records])[0]!;
  }

  /**
   * Several batches (requests that queued up while the previous commit ran) in
   * one transaction: one WAL sync for all of them; results per batch.
   */
  writeMany(batches: readonly (readonly TelemetryRecord[])[]): WriteResult[] {
    const recentP: (number | string)[] = new Array(ROWS_PER_STMT * 5);
    const oldP: (number | string)[] = new Array(ROWS_PER_STMT * 5);
    const results: WriteResult[] = [];
    const W = this.watermark;
    const now = Date.now();
    let toRecent = 0;
    const tx = this.db.transaction(() => {
      for (const records of batches) {
        let setAside: SetAsideReading[] | undefined;
        let total = 0;
        let inserted = 0;
        let nr = 0;
        let no = 0;
        for (const r of records) {
          const dev = this.deviceId(r.deviceId);
          const ts = Math.round(r.ts);
          const recent = ts >= W;
          for (const name in r.values) {
            const value = r.values[name]!;
            let v: number | string;
            let k: number;
            if (typeof value === 'number') { if (!Number.isFinite(value)) continue; v = value === 0 ? 0 : value; k = 0; } // -0 → 0, as line protocol writes it
            else if (typeof value === 'boolean') { v = value ? 1 : 0; k = 1; }
            else { v = value; k = 2; }
            let fk = this.fields.get(name);
            if (fk === undefined || (fk & 3) !== k) {
              if (fk === undefined || (fk & 3) === K_UNKNOWN) fk = this.fieldTyped(name, fk, k);
              else {
                this.insDead.run(r.deviceId, name, ts, v, kindName(k), `field is ${kindName(fk & 3)}, value is ${kindName(k)}`, now);
                (setAside ??= []).push({ deviceId: r.deviceId, ts: r.ts, field: name, value, reason: FIELD_TYPE_CONFLICT });
                continue;
              }
            }
            const f = (fk - (fk & 3)) / 4;
            const sk = seriesKey(dev, f);
            if (!this.series.has(sk)) { this.insSeries.run(dev, f); this.series.add(sk); }
            total++;
            if (recent) {
              const o = nr * 5;
              recentP[o] = dev; recentP[o + 1] = f; recentP[o + 2] = ts; recentP[o + 3] = v; recentP[o + 4] = k;
              if (++nr === ROWS_PER_STMT) { const c = this.insert('recent', nr, recentP); inserted += c; toRecent += c; nr = 0; }
            } else {
              const o = no * 5;
              oldP[o] = dev; oldP[o + 1] = f; oldP[o + 2] = ts; oldP[o + 3] = v; oldP[o + 4] = k;
              if (++no === ROWS_PER_STMT) { inserted += this.insert('readings', no, oldP); no = 0; }
            }
          }
        }
        if (nr > 0) { const c = this.insert('recent', nr, recentP); inserted += c; toRecent += c; }
        if (no > 0) inserted += this.insert('readings', no, oldP);
        const written = inserted + this.overwritten;
        this.overwritten = 0;
        results.push(setAside ? { written, duplicates: total - written, setAside } : { written, duplicates: total - written });
      }
    });
    try {
      tx.immediate();
    } catch (err) {
      // Rolled back: ids handed out inside the transaction do not exist; reload the caches.
      this.overwritten = 0;
      this.loadDictionaries();
      throw err;
    }
    this.recentRows += toRecent;
    return results;
  }

  /** True when a compaction step is due (called by the worker after replying). */
  compactionDue(now = Date.now()): boolean {
    return this.recentRows > 0 && (this.backlog || now - this.lastCompact >= COMPACT_EVERY_MS);
  }

  /**
   * Move rows older than `now - COMPACT_LAG_MS` (at most COMPACT_MAX_ROWS) from
   * `recent` into `readings` and raise the watermark, in one transaction.
   * Returns rows moved.
   */
  compact(now = Date.now(), maxRows = COMPACT_MAX_ROWS): number {
    this.lastCompact = now;
    let target = now - COMPACT_LAG_MS;
    if (target <= this.watermark) return 0;
    let moved = 0;
    let removed = 0;
    this.db.transaction(() => {
      // Bound the step: if more than COMPACT_MAX_ROWS rows lie below target, stop at the ts of the next row.
      const b = this.db.prepare('SELECT ts FROM recent WHERE ts < ? ORDER BY ts LIMIT 1 OFFSET ?').get(target, maxRows) as { ts: number } | undefined;
      this.backlog = !!b && b.ts > this.watermark;
      if (this.backlog) target = b!.ts;
      moved = this.db.prepare('INSERT OR IGNORE INTO readings (device, field, ts, v, k) SELECT device, field, ts, v, k FROM recent WHERE ts < ? ORDER BY device, field, ts').run(target).changes;
      removed = this.db.prepare('DELETE FROM recent WHERE ts < ?').run(target).changes;
      this.db.prepare("UPDATE meta SET value = ? WHERE key = 'watermark'").run(target);
    }).immediate();
    this.watermark = target;
    this.recentRows = Math.max(0, this.recentRows - removed);
    return moved;
  }

  /**
   * Retention (telemetry.retentionDays): delete readings older than `cutoff`, at most `maxRows`
   * per call, series by series from `cursor`. Each call is one short
   * transaction so writes queued behind it wait little.
   */
  prune(cutoff: number, maxRows: number, cursor: number): { deleted: number; cursor: number; done: boolean } {
    const list = this.db.prepare('SELECT device, field FROM series ORDER BY device, field').all() as { device: number; field: number }[];
    const bound = this.db.prepare('SELECT ts FROM readings WHERE device = ? AND field = ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?');
    const delUpTo = this.db.prepare('DELETE FROM readings WHERE device = ? AND field = ? AND ts <= ?');
    const delBefore = this.db.prepare('DELETE FROM readings WHERE device = ? AND field = ? AND ts < ?');
    let deleted = 0;
    let i = cursor;
    this.db.transaction(() => {
      // `recent` is clustered by ts: old rows there (if any) are one range.
      const rb = this.db.prepare('SELECT ts FROM recent WHERE ts < ? ORDER BY ts LIMIT 1 OFFSET ?').get(cutoff, maxRows - 1) as { ts: number } | undefined;
      deleted += this.db.prepare('DELETE FROM recent WHERE ts <= ?').run(rb ? rb.ts : cutoff - 1).changes;
      this.recentRows -= deleted;
      for (; i < list.length && deleted < maxRows; i++) {
        const s = list[i]!;
        const room = maxRows - deleted;
        const b = bound.get(s.device, s.field, cutoff, room - 1) as { ts: number } | undefined;
        if (b) { deleted += delUpTo.run(s.device, s.field, b.ts).changes; break; } // more may remain in this series
        deleted += delBefore.run(s.device, s.field, cutoff).changes;
      }
    }).immediate();
    return { deleted, cursor: i, done: i >= list.length };
  }

  /**
   * Purge (types.ts TelemetryPurge): delete one device's readings with ts < `before` (all when null)
   * from `recent`, `readings` and `dead_readings`, at most `maxRows` per call, in one short
   * transaction like a retention step. `done` once nothing is left; the last call also drops the
   * device's emptied `series` rows, so "all fields of the device" forgets its old fields, and, when
   * nothing at all is left under the name, its entry in `devices`.
   */
  purgeDevice(name: string, before: number | null, maxRows: number): { readings: number; dead: number; done: boolean } {
    const lim = before ?? Number.MAX_SAFE_INTEGER;
    const dev = this.devices.get(name);
    let readings = 0;
    let dead = 0;
    let done = false;
    this.db.transaction(() => {
      dead = this.db.prepare(`DELETE FROM dead_readings WHERE (device, field, ts) IN
        (SELECT device, field, ts FROM dead_readings WHERE device = ? AND ts < ? LIMIT ?)`).run(name, lim, maxRows).changes;
      if (dev === undefined) { done = dead < maxRows; return; }
      const fields = this.db.prepare('SELECT field FROM series WHERE device = ? ORDER BY field').pluck().all(dev) as number[];
      const bound = this.db.prepare('SELECT ts FROM readings WHERE device = ? AND field = ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?');
      const delUpTo = this.db.prepare('DELETE FROM readings WHERE device = ? AND field = ? AND ts <= ?');
      const delBefore = this.db.prepare('DELETE FROM readings WHERE device = ? AND field = ? AND ts < ?');
      let more = dead >= maxRows;
      for (const f of fields) {
        const room = maxRows - readings - dead;
        if (room <= 0) { more = true; break; }
        const b = bound.get(dev, f, lim, room - 1) as { ts: number } | undefined;
        if (b) { readings += delUpTo.run(dev, f, b.ts).changes; more = true; break; } // more may remain in this series
        readings += delBefore.run(dev, f, lim).changes;
      }
      if (more) return;
      // `recent` is clustered by ts, so finding the device there scans it: once, after `readings`. It holds
      // only the last seconds of readings (more while compaction catches up on a backlog).
      const r = this.db.prepare(`DELETE FROM recent WHERE (ts, device, field) IN
        (SELECT ts, device, field FROM recent WHERE device = ? AND ts < ? LIMIT ?)`).run(dev, lim, maxRows).changes;
      this.recentRows = Math.max(0, this.recentRows - r);
      readings += r;
      if (r >= maxRows) return;
      const inReadings = this.db.prepare('SELECT 1 FROM readings WHERE device = ? AND field = ? LIMIT 1');
      const inRecent = new Set(this.db.prepare('SELECT DISTINCT field FROM recent WHERE device = ?').pluck().all(dev) as number[]);
      const dropSeries = this.db.prepare('DELETE FROM series WHERE device = ? AND field = ?');
      let kept = 0;
      for (const f of fields) {
        if (inRecent.has(f) || inReadings.get(dev, f)) { kept++; continue; } // readings of a device registered again under the id
        dropSeries.run(dev, f);
        this.series.delete(seriesKey(dev, f));
      }
      // Nothing left under the name: its dictionary entry goes too (a later write of it makes a new one).
      if (kept === 0 && inRecent.size === 0) {
        this.db.prepare('DELETE FROM devices WHERE id = ?').run(dev);
        this.devices.delete(name);
      }
      done = true;
    }).immediate();
    return { readings, dead, done };
  }

  ping(): boolean { return this.db.prepare('SELECT 1 AS one').get() !== undefined; }
  close(): void {
    try { this.compact(Date.now()); } catch { /* best effort; rows stay in recent */ }
    this.db.close();
  }
}

function seriesKey(device: number, field: number): number { return device * 1_048_576 + field; }
