/**
 * The embedded store's SQLite schema and statements. Runs inside the worker
 * thread only (sqlite-worker.ts): one writer connection, one read-only one.
 *
 * Schema: integer dictionary ids for device and field names; one row per
 * *point* (a device's readings at one timestamp, i.e. one record of a
 * message) in a WITHOUT ROWID table keyed (device, ts). `p` holds the
 * point's fields as a JSON object keyed by field id (`{"3":21.5,"7":true}`):
 * JSON keeps a value's kind (number, boolean, string), and SQLite reads it
 * with json_each in the history queries (embedded-reader.ts). `series` lists
 * the (device, field) pairs present, so "all fields of a device" never scans
 * the points.
 *
 * Why one row per point, not per reading: the writer thread's cost is mostly
 * b-tree work per row, and a compaction step (below) copied every reading
 * twice. Measured with the writer alone (150 messages × 4 readings per
 * commit, synchronous=FULL, compaction included): one row per reading cost
 * 2.3-2.4 µs per reading at 20 devices, 60-72 % of it compaction; one row per
 * point cut that by 36-39 % at 20 devices and 48 % at 100. Queries parse each
 * point's JSON, yet reading a benchmark's readings back through the history
 * API got faster (~290,000 → ~430,000 readings/s): fewer rows to visit.
 *
 * Field types (field-types.ts): `fields.k` is the kind of the field's first
 * stored value; a value of another kind is written to `dead_readings` in the
 * same transaction instead of the point. The writer keeps one map
 * name → id*4 + kind, so the check costs no extra lookup per reading.
 *
 * The same (device, field, ts) again: the last value wins, as in InfluxDB
 * (it overwrites a point with the same series and time) and as in the latest
 * values (devices/presence.ts keeps the newest ts, the later value on a tie),
 * so history and latest values agree. A point that exists already is merged
 * field by field (fields not in the new one keep their values). An identical
 * re-send changes nothing and counts as a duplicate.
 *
 * Write amplification: with (device, ts) clustering, a commit that carries
 * points of N devices dirties ~N b-tree pages. So recent points first go to
 * `recent_points`, clustered (ts, device) — appends at the end of the
 * b-tree — and a compaction step moves them in (device, ts) order into
 * `points`, touching each device's pages once for many points. Every
 * (device, ts) has exactly one home, decided by the watermark W kept in
 * `meta`: ts >= W → `recent_points`, ts < W → `points`; compaction moves rows
 * below a new W and raises W in the same transaction, and W never decreases,
 * so a point is merged with the one row that can hold it. Queries
 * (embedded-reader.ts) read both tables in one statement (one snapshot).
 *
 * Stores made before points (one row per reading in `readings`/`recent`) are
 * converted once when the writer opens them (embedded-legacy.ts).
 */
import Database from 'better-sqlite3';
import { preparePrivateDb, tightenSqliteFiles } from '../../core/private-files.js';
import { PointDeletes, seriesKey, type Home } from './embedded-delete.js';
import { convertLegacyReadings } from './embedded-legacy.js';
import { FIELD_TYPE_CONFLICT, kindName, type SetAsideReading } from './field-types.js';
import { isPacked, packRecords, type PackedRecords } from './record-pack.js';
import type { TelemetryRecord, WriteResult } from './types.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS devices (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS fields (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, k INTEGER);
CREATE TABLE IF NOT EXISTS series (device INTEGER NOT NULL, field INTEGER NOT NULL, PRIMARY KEY (device, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS points (device INTEGER NOT NULL, ts INTEGER NOT NULL, p TEXT NOT NULL, PRIMARY KEY (device, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent_points (ts INTEGER NOT NULL, device INTEGER NOT NULL, p TEXT NOT NULL, PRIMARY KEY (ts, device)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('watermark', -9007199254740991);
CREATE TABLE IF NOT EXISTS dead_readings (
  device TEXT NOT NULL, field TEXT NOT NULL, ts INTEGER NOT NULL, value, type TEXT NOT NULL,
  reason TEXT NOT NULL, detail TEXT, at INTEGER NOT NULL, PRIMARY KEY (device, field, ts)
) WITHOUT ROWID;
`;

/** `fields.k` not yet known (a field of a store made before types were kept, with no readings left). */
const K_UNKNOWN = 3;

/** Points stay in `recent_points` until they are this old (wall clock of the worker); only affects speed, not results. */
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

/** Points per multi-row INSERT. */
const ROWS_PER_STMT = 64;

/**
 * Page cache of a connection that writes (the writer, the InfluxDB outbox), in KiB. Small on purpose:
 * a commit can cost SQLite a walk over the connection's whole page cache once the database has free
 * pages, which a store that deletes (compaction, retention, a drained outbox) always has. A leaf
 * split that takes a free page numbered below its sibling's swaps the two page numbers through
 * a temporary one, the lock-byte page (page 262,145 with 4 KiB pages: balance_nonroot in btree.c);
 * the pager then drops every cached page above the database size at the commit
 * (pager_end_transaction → pcache1TruncateUnsafe), and with that temporary page number above a
 * database smaller than 1 GiB it scans the whole hash table and every page in it. On the 2-core
 * bench machine that walk was 12.7 % of the writer thread's CPU at 20 devices × 20 in flight with a
 * 32 MiB cache. With 4 MiB the writer alone spends 5–14 % less CPU per commit at 20 devices and
 * 8–12 % less at 1,000 (compaction included; `npm run bench:writer`, docs/benchmarks.md). What the writer
 * touches fits: the right edge of `recent_points`, the dictionaries, and one leaf per device while
 * a compaction step runs.
 */
export const WRITER_CACHE_KIB = 4_096;
/** Page cache of the read-only connection (history queries): large, the hot leaves of many series stay in memory. */
export const READER_CACHE_KIB = 32_768;

export function openDb(path: string, opts: { readonly?: boolean; sync?: 'full' | 'normal'; cacheKiB?: number } = {}): Database.Database {
  // Every reading (or the InfluxDB queue): the owner only, from creation on; -wal/-shm take the file's mode.
  if (!opts.readonly) preparePrivateDb(path);
  const db = new Database(path, { readonly: !!opts.readonly, fileMustExist: !!opts.readonly });
  db.pragma('busy_timeout = 5000');
  if (!opts.readonly) {
    db.pragma('journal_mode = WAL');
    tightenSqliteFiles(path);
    db.pragma(`synchronous = ${opts.sync === 'normal' ? 'NORMAL' : 'FULL'}`);
  }
  db.pragma(`cache_size = -${Math.max(64, Math.floor(opts.cacheKiB ?? (opts.readonly ? READER_CACHE_KIB : WRITER_CACHE_KIB)))}`);
  // Sorts (a compaction step's ORDER BY) stay in RAM.
  db.pragma('temp_store = MEMORY');
  return db;
}

/** A point's value in its JSON object: numbers as JavaScript writes them (shortest round trip), -0 as 0. */
function jsonValue(v: number | string, k: number): string {
  return k === 0 ? String(v) : k === 1 ? (v !== 0 ? 'true' : 'false') : JSON.stringify(v);
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
  private readonly getPoint: Record<Home, Database.Statement>;
  private readonly setPoint: Record<Home, Database.Statement>;
  private readonly addPoint: Record<Home, Database.Statement>;
  private readonly deletes: PointDeletes;

  /** `cacheKiB`: the connection's page cache (WRITER_CACHE_KIB; benchmarks compare others). */
  constructor(path: string, sync: 'full' | 'normal', cacheKiB = WRITER_CACHE_KIB) {
    this.db = openDb(path, { sync, cacheKiB });
    this.db.exec(SCHEMA);
    convertLegacyReadings(this.db);
    this.insDevice = this.db.prepare('INSERT INTO devices (name) VALUES (?)');
    this.insField = this.db.prepare('INSERT INTO fields (name, k) VALUES (?, ?)');
    this.setFieldKind = this.db.prepare('UPDATE fields SET k = ? WHERE id = ?');
    this.insDead = this.db.prepare(`INSERT OR IGNORE INTO dead_readings (device, field, ts, value, type, reason, detail, at)
      VALUES (?, ?, ?, ?, ?, '${FIELD_TYPE_CONFLICT}', ?, ?)`);
    this.insSeries = this.db.prepare('INSERT OR IGNORE INTO series (device, field) VALUES (?, ?)');
    const each = (f: (t: Home) => string): Record<Home, Database.Statement> =>
      ({ points: this.db.prepare(f('points')), recent_points: this.db.prepare(f('recent_points')) });
    this.getPoint = each((t) => `SELECT p FROM ${t} WHERE device = ? AND ts = ?`);
    this.setPoint = each((t) => `UPDATE ${t} SET p = ? WHERE device = ? AND ts = ?`);
    this.addPoint = each((t) => `INSERT INTO ${t} (device, ts, p) VALUES (?, ?, ?)`);
    this.deletes = new PointDeletes(this.db, {
      devices: this.devices, series: this.series, recentRemoved: (n) => { this.recentRows = Math.max(0, this.recentRows - n); },
    });
    this.loadDictionaries();
    this.watermark = (this.db.prepare("SELECT value FROM meta WHERE key = 'watermark'").get() as { value: number }).value;
    this.recentRows = (this.db.prepare('SELECT COUNT(*) AS n FROM recent_points').get() as { n: number }).n;
  }

  private loadDictionaries(): void {
    this.devices.clear(); this.fields.clear(); this.series.clear();
    for (const r of this.db.prepare('SELECT id, name FROM devices').all() as { id: number; name: string }[]) this.devices.set(r.name, r.id);
    for (const r of this.db.prepare('SELECT id, name, k FROM fields').all() as { id: number; name: string; k: number | null }[]) {
      this.fields.set(r.name, r.id * 4 + (r.k ?? K_UNKNOWN));
    }
    for (const r of this.db.prepare('SELECT device, field FROM series').all() as { device: number; field: number }[]) this.series.add(seriesKey(r.device, r.field));
  }

  private stmt(table: Home, rows: number): Database.Statement {
    const key = table + rows;
    let s = this.insertStmts.get(key);
    if (!s) {
      s = this.db.prepare(`INSERT INTO ${table} (device, ts, p) VALUES ` + new Array(rows).fill('(?,?,?)').join(','));
      this.insertStmts.set(key, s);
    }
    return s;
  }

  /**
   * Insert `rows` points of `p` (device, ts, JSON: 3 parameters each) whose
   * field counts are in `n`. Returns readings written: every field of a new
   * point, and the fields a merge changed. The common path is one multi-row
   * INSERT; a chunk that meets an existing point (a re-send) fails on the
   * primary key, which undoes that statement alone (SQLite's ABORT), and is
   * done again point by point, merging (the last value wins). An upsert clause
   * on the common path would cost every commit, and could not tell an
   * identical re-send (a duplicate) from a new value.
   */
  private insertChunk(table: Home, rows: number, p: (number | string)[], n: number[]): number {
    const params = rows * 3 === p.length ? p : p.slice(0, rows * 3);
    try {
      this.stmt(table, rows).run(params);
      if (table === 'recent_points') this.recentRows += rows;
      let w = 0;
      for (let i = 0; i < rows; i++) w += n[i]!;
      return w;
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') throw err;
    }
    let written = 0;
    for (let i = 0; i < rows * 3; i += 3) {
      const dev = p[i] as number; const ts = p[i + 1] as number; const json = p[i + 2] as string;
      const old = this.getPoint[table].get(dev, ts) as { p: string } | undefined;
      if (!old) {
        this.addPoint[table].run(dev, ts, json);
        if (table === 'recent_points') this.recentRows++;
        written += n[i / 3]!;
        continue;
      }
      const merged = JSON.parse(old.p) as Record<string, unknown>;
      const incoming = JSON.parse(json) as Record<string, unknown>;
      let changed = 0;
      for (const f in incoming) if (merged[f] !== incoming[f]) { merged[f] = incoming[f]; changed++; }
      if (changed) this.setPoint[table].run(JSON.stringify(merged), dev, ts);
      written += changed;
    }
    return written;
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

  /** One transaction per batch; one row per (device, ts), the last value of each field wins. */
  write(records: readonly TelemetryRecord[] | PackedRecords): WriteResult {
    return this.writeMany([records])[0]!;
  }

  /**
   * Several batches (requests that queued up while the previous commit ran) in
   * one transaction: one WAL sync for all of them; results per batch.
   *
   * Batches arrive packed from the broker thread (record-pack.ts) and are read
   * in that form: no record or values object is made per message, and names
   * are looked up once per batch by their index in the batch's string table
   * (a batch repeats a handful of device and field names hundreds of times).
   */
  writeMany(batches: readonly (readonly TelemetryRecord[] | PackedRecords)[]): WriteResult[] {
    const recentP: (number | string)[] = new Array(ROWS_PER_STMT * 3);
    const oldP: (number | string)[] = new Array(ROWS_PER_STMT * 3);
    const recentN: number[] = new Array(ROWS_PER_STMT);
    const oldN: number[] = new Array(ROWS_PER_STMT);
    const results: WriteResult[] = [];
    const W = this.watermark;
    const now = Date.now();
    const recentBefore = this.recentRows;
    const tx = this.db.transaction(() => {
      for (const batch of batches) {
        const { strings, nums, count } = isPacked(batch) ? batch : packRecords(batch);
        // Per string index: the device's id, the field's id * 4 + kind, the field's JSON key.
        const devOf: (number | undefined)[] = new Array(strings.length);
        const fkOf: (number | undefined)[] = new Array(strings.length);
        const keyOf: (string | undefined)[] = new Array(strings.length);
        let setAside: SetAsideReading[] | undefined;
        let total = 0;
        let written = 0;
        let nr = 0;
        let no = 0;
        let o = 0;
        for (let i = 0; i < count; i++) {
          const devIx = nums[o]!;
          const rawTs = nums[o + 3]!;
          const n = nums[o + 4]!;
          o += 5;
          const dev = devOf[devIx] ?? (devOf[devIx] = this.deviceId(strings[devIx]!));
          const ts = Math.round(rawTs);
          let json = '';
          let fieldsIn = 0;
          for (let j = 0; j < n; j++, o += 3) {
            const nameIx = nums[o]!;
            const k = nums[o + 1]!;
            const raw = nums[o + 2]!;
            let v: number | string;
            if (k === 0) { if (!Number.isFinite(raw)) continue; v = raw === 0 ? 0 : raw; } // -0 → 0, as line protocol writes it
            else if (k === 1) v = raw;
            else v = strings[raw]!;
            let fk = fkOf[nameIx];
            if (fk === undefined || (fk & 3) !== k) {
              const name = strings[nameIx]!;
              fk = this.fields.get(name);
              if (fk === undefined || (fk & 3) === K_UNKNOWN) fk = this.fieldTyped(name, fk, k);
              else if ((fk & 3) !== k) {
                const value = k === 1 ? raw !== 0 : v;
                this.insDead.run(strings[devIx]!, name, ts, v, kindName(k), `field is ${kindName(fk & 3)}, value is ${kindName(k)}`, now);
                (setAside ??= []).push({ deviceId: strings[devIx]!, ts: rawTs, field: name, value, reason: FIELD_TYPE_CONFLICT });
                continue;
              }
              // Only a name not cached yet gets here (a cached one of another kind went to dead_readings above).
              fkOf[nameIx] = fk; keyOf[nameIx] = '"' + (fk - (fk & 3)) / 4 + '":';
            }
            const f = (fk - (fk & 3)) / 4;
            const sk = seriesKey(dev, f);
            if (!this.series.has(sk)) { this.insSeries.run(dev, f); this.series.add(sk); }
            json += (fieldsIn++ === 0 ? '{' : ',') + keyOf[nameIx]! + jsonValue(v, k);
          }
          if (fieldsIn === 0) continue;
          json += '}';
          total += fieldsIn;
          if (ts >= W) {
            const q = nr * 3;
            recentP[q] = dev; recentP[q + 1] = ts; recentP[q + 2] = json; recentN[nr] = fieldsIn;
            if (++nr === ROWS_PER_STMT) { written += this.insertChunk('recent_points', nr, recentP, recentN); nr = 0; }
          } else {
            const q = no * 3;
            oldP[q] = dev; oldP[q + 1] = ts; oldP[q + 2] = json; oldN[no] = fieldsIn;
            if (++no === ROWS_PER_STMT) { written += this.insertChunk('points', no, oldP, oldN); no = 0; }
          }
        }
        if (nr > 0) written += this.insertChunk('recent_points', nr, recentP, recentN);
        if (no > 0) written += this.insertChunk('points', no, oldP, oldN);
        results.push(setAside ? { written, duplicates: total - written, setAside } : { written, duplicates: total - written });
      }
    });
    try {
      tx.immediate();
    } catch (err) {
      // Rolled back: ids handed out inside the transaction do not exist; reload the caches.
      this.recentRows = recentBefore;
      this.loadDictionaries();
      throw err;
    }
    return results;
  }

  /** True when a compaction step is due (called by the worker after replying). */
  compactionDue(now = Date.now()): boolean {
    return this.recentRows > 0 && (this.backlog || now - this.lastCompact >= COMPACT_EVERY_MS);
  }

  /**
   * Move points older than `now - COMPACT_LAG_MS` (at most COMPACT_MAX_ROWS)
   * from `recent_points` into `points` and raise the watermark, in one
   * transaction. Returns points moved.
   */
  compact(now = Date.now(), maxRows = COMPACT_MAX_ROWS): number {
    this.lastCompact = now;
    let target = now - COMPACT_LAG_MS;
    if (target <= this.watermark) return 0;
    let moved = 0;
    let removed = 0;
    this.db.transaction(() => {
      // Bound the step: if more than COMPACT_MAX_ROWS rows lie below target, stop at the ts of the next row.
      const b = this.db.prepare('SELECT ts FROM recent_points WHERE ts < ? ORDER BY ts LIMIT 1 OFFSET ?').get(target, maxRows) as { ts: number } | undefined;
      this.backlog = !!b && b.ts > this.watermark;
      if (this.backlog) target = b!.ts;
      // The watermark rule leaves no point of this range in `points`; the merge is there so that a
      // broken rule could never drop one.
      moved = this.db.prepare(`INSERT INTO points (device, ts, p) SELECT device, ts, p FROM recent_points WHERE ts < ? ORDER BY device, ts
        ON CONFLICT (device, ts) DO UPDATE SET p = json_patch(points.p, excluded.p)`).run(target).changes;
      removed = this.db.prepare('DELETE FROM recent_points WHERE ts < ?').run(target).changes;
      this.db.prepare("UPDATE meta SET value = ? WHERE key = 'watermark'").run(target);
    }).immediate();
    this.watermark = target;
    this.recentRows = Math.max(0, this.recentRows - removed);
    return moved;
  }

  /** Retention step (embedded-delete.ts). */
  prune(cutoff: number, maxRows: number, cursor: number): { deleted: number; cursor: number; done: boolean } {
    return this.deletes.prune(cutoff, maxRows, cursor);
  }

  /** One step of a device purge (embedded-delete.ts). */
  purgeDevice(name: string, before: number | null, maxRows: number): { readings: number; dead: number; done: boolean } {
    return this.deletes.purgeDevice(name, before, maxRows);
  }

  ping(): boolean { return this.db.prepare('SELECT 1 AS one').get() !== undefined; }
  close(): void {
    try { this.compact(Date.now()); } catch { /* best effort; points stay in recent_points */ }
    this.db.close();
  }
}

