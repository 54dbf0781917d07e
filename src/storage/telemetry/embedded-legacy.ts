/**
 * Stores made before points (embedded-db.ts) kept one row per reading:
 * `readings` keyed (device, field, ts) and `recent` keyed (ts, device, field),
 * with the value in `v` and its kind in `k` (0 number, 1 boolean as 0/1,
 * 2 string). The writer converts such a store once, when it opens it, before
 * it accepts any write: the readings of each (device, ts) become one point.
 *
 * The conversion runs in steps of at most STEP_ROWS readings, each its own
 * transaction that inserts the points and deletes the readings they hold, so a
 * crash or power cut in the middle loses nothing and the next start goes on
 * where it stopped. A point is routed by the watermark like any write, and
 * merged if it exists (a (device, ts) whose readings were split between two
 * steps). The empty old tables are dropped at the end.
 */
import type Database from 'better-sqlite3';

/** Readings per conversion step (one transaction). */
const STEP_ROWS = 20_000;

type LegacyRow = { device: number; field: number; ts: number; v: number | string | null; k: number };

function hasTable(db: Database.Database, name: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
}

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

/** A legacy value as it is written in a point's JSON (embedded-db.ts jsonValue). */
function legacyJson(v: number | string, k: number): string {
  return k === 1 ? (v ? 'true' : 'false') : k === 2 ? JSON.stringify(String(v)) : String(v === 0 ? 0 : v);
}

class PointSink {
  private readonly upsert: Record<'points' | 'recent_points', Database.Statement>;
  private readonly watermark: number;
  constructor(db: Database.Database) {
    const up = (t: string): Database.Statement => db.prepare(`INSERT INTO ${t} (device, ts, p) VALUES (?, ?, ?)
      ON CONFLICT DO UPDATE SET p = json_patch(${t}.p, excluded.p)`);
    this.upsert = { points: up('points'), recent_points: up('recent_points') };
    this.watermark = (db.prepare("SELECT value FROM meta WHERE key = 'watermark'").pluck().get() as number | undefined) ?? Number.MIN_SAFE_INTEGER;
  }

  /** Writes the points of `rows` (any order): one per (device, ts). */
  write(rows: readonly LegacyRow[]): void {
    const byPoint = new Map<string, { device: number; ts: number; parts: string[] }>();
    for (const r of rows) {
      if (r.v === null) continue;
      const key = `${r.device}:${r.ts}`;
      let pt = byPoint.get(key);
      if (!pt) { pt = { device: r.device, ts: r.ts, parts: [] }; byPoint.set(key, pt); }
      pt.parts.push(`"${r.field}":${legacyJson(r.v, r.k)}`);
    }
    for (const pt of byPoint.values()) {
      this.upsert[pt.ts >= this.watermark ? 'recent_points' : 'points'].run(pt.device, pt.ts, `{${pt.parts.join(',')}}`);
    }
  }
}

/** `recent` is clustered by (ts, device, field): its first rows are one contiguous range. */
function convertRecent(db: Database.Database, sink: PointSink): void {
  const take = db.prepare('SELECT device, field, ts, v, k FROM recent ORDER BY ts, device, field LIMIT ?');
  const drop = db.prepare('DELETE FROM recent WHERE (ts, device, field) <= (?, ?, ?)');
  for (let done = false; !done;) {
    db.transaction(() => {
      const rows = take.all(STEP_ROWS) as LegacyRow[];
      if (!rows.length) { done = true; return; }
      sink.write(rows);
      const last = rows[rows.length - 1]!;
      drop.run(last.ts, last.device, last.field);
    }).immediate();
  }
}

/**
 * `readings` is clustered by (device, field, ts). Per device, a step takes the
 * time range in which no field has more than STEP_ROWS / fields readings, from
 * the oldest left: [start, end) with `end` the smallest ts past each field's
 * share, so every field's readings of that range are converted together.
 */
function convertReadings(db: Database.Database, sink: PointSink): void {
  const devices = db.prepare('SELECT DISTINCT device FROM series ORDER BY device').pluck().all() as number[];
  const fieldsOf = db.prepare('SELECT field FROM series WHERE device = ?').pluck();
  const nth = db.prepare('SELECT ts FROM readings WHERE device = ? AND field = ? ORDER BY ts LIMIT 1 OFFSET ?').pluck();
  const rowsOf = db.prepare('SELECT device, field, ts, v, k FROM readings WHERE device = ? AND field = ? AND ts < ?');
  const drop = db.prepare('DELETE FROM readings WHERE device = ? AND field = ? AND ts < ?');
  for (const dev of devices) {
    const fields = fieldsOf.all(dev) as number[];
    const share = Math.max(1, Math.floor(STEP_ROWS / Math.max(1, fields.length)));
    for (let done = false; !done;) {
      db.transaction(() => {
        let end = Number.MAX_SAFE_INTEGER;
        for (const f of fields) {
          const t = nth.get(dev, f, share) as number | undefined;
          if (t !== undefined && t < end) end = t;
        }
        const rows: LegacyRow[] = [];
        for (const f of fields) for (const r of rowsOf.all(dev, f, end) as LegacyRow[]) rows.push(r);
        sink.write(rows);
        for (const f of fields) drop.run(dev, f, end);
        done = end === Number.MAX_SAFE_INTEGER;
      }).immediate();
    }
  }
}

/**
 * Converts a store of per-reading rows into points (see the file comment).
 * Returns the readings converted; 0 for a store that has none.
 */
export function convertLegacyReadings(db: Database.Database): number {
  const hasReadings = hasTable(db, 'readings');
  const hasRecent = hasTable(db, 'recent');
  if (!hasReadings && !hasRecent) return 0;
  const count = (t: string): number => db.prepare(`SELECT COUNT(*) FROM ${t}`).pluck().get() as number;
  const total = (hasReadings ? count('readings') : 0) + (hasRecent ? count('recent') : 0);
  // Every (device, field) with readings gets its `series` row, so the steps below reach all of them.
  db.transaction(() => {
    for (const t of [hasReadings && 'readings', hasRecent && 'recent']) {
      if (t) db.exec(`INSERT OR IGNORE INTO series (device, field) SELECT DISTINCT device, field FROM ${t}`);
    }
  }).immediate();
  if (hasReadings && hasRecent) migrateFieldKinds(db);
  const sink = new PointSink(db);
  if (hasRecent) convertRecent(db, sink);
  if (hasReadings) convertReadings(db, sink);
  db.transaction(() => {
    // Left behind only by a row without a series, which the insert above rules out: kept, not dropped, if any.
    if (hasRecent && count('recent') === 0) db.exec('DROP TABLE recent');
    if (hasReadings && count('readings') === 0) db.exec('DROP TABLE readings');
  }).immediate();
  return total;
}
