/**
 * Deleting points from the embedded store (schema: embedded-db.ts): retention
 * and the purge of one device. Each call is one short transaction of at most
 * `maxRows` points, so writes queued behind it wait little; the counts it
 * returns are readings (a point's fields), as the other stores count them.
 * The writer's caches (device ids, series, the count of recent points) are
 * kept true as rows go.
 */
import type Database from 'better-sqlite3';

/** The two tables a point lives in (embedded-db.ts: the watermark decides which). */
export type Home = 'points' | 'recent_points';

/** Key of a (device, field) pair in the writer's set of series. */
export function seriesKey(device: number, field: number): number { return device * 1_048_576 + field; }

/** What the deletes must keep true in the writer (embedded-db.ts EmbeddedWriter). */
export interface WriterCaches {
  readonly devices: Map<string, number>;
  readonly series: Set<number>;
  /** `n` points left `recent_points`. */
  recentRemoved(n: number): void;
}

export class PointDeletes {
  constructor(private readonly db: Database.Database, private readonly c: WriterCaches) {}

  /** Readings in the points of `table` that `where` selects (for the counts that retention and purge report). */
  private readingsIn(table: Home, where: string, ...args: unknown[]): number {
    return this.db.prepare(`SELECT COALESCE(SUM((SELECT COUNT(*) FROM json_each(p))), 0) FROM ${table} WHERE ${where}`).pluck().get(...args) as number;
  }

  /** Delete the points of `table` that `where` selects; returns readings deleted. */
  private deletePoints(table: Home, where: string, ...args: unknown[]): { points: number; readings: number } {
    const readings = this.readingsIn(table, where, ...args);
    const points = this.db.prepare(`DELETE FROM ${table} WHERE ${where}`).run(...args).changes;
    if (table === 'recent_points') this.c.recentRemoved(points);
    return { points, readings };
  }

  /**
   * Retention (telemetry.retentionDays): delete points older than `cutoff`, at most `maxRows`
   * per call, device by device from `cursor`. Each call is one short transaction so writes
   * queued behind it wait little. Returns readings deleted.
   */
  prune(cutoff: number, maxRows: number, cursor: number): { deleted: number; cursor: number; done: boolean } {
    const list = this.db.prepare('SELECT id FROM devices ORDER BY id').pluck().all() as number[];
    const bound = this.db.prepare('SELECT ts FROM points WHERE device = ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?').pluck();
    let rows = 0;
    let deleted = 0;
    let i = cursor;
    this.db.transaction(() => {
      // `recent_points` is clustered by ts: old points there (if any) are one range.
      const rb = this.db.prepare('SELECT ts FROM recent_points WHERE ts < ? ORDER BY ts LIMIT 1 OFFSET ?').pluck().get(cutoff, maxRows - 1) as number | undefined;
      const r = this.deletePoints('recent_points', 'ts <= ?', rb ?? cutoff - 1);
      rows += r.points; deleted += r.readings;
      for (; i < list.length && rows < maxRows; i++) {
        const dev = list[i]!;
        const b = bound.get(dev, cutoff, maxRows - rows - 1) as number | undefined;
        const d = b !== undefined ? this.deletePoints('points', 'device = ? AND ts <= ?', dev, b) : this.deletePoints('points', 'device = ? AND ts < ?', dev, cutoff);
        rows += d.points; deleted += d.readings;
        if (b !== undefined) break; // more may remain for this device
      }
    }).immediate();
    return { deleted, cursor: i, done: i >= list.length };
  }

  /**
   * Purge (types.ts TelemetryPurge): delete one device's readings with ts < `before` (all when null)
   * from `recent_points`, `points` and `dead_readings`, at most `maxRows` rows per call, in one short
   * transaction like a retention step. `done` once nothing is left; the last call also drops the
   * `series` rows of fields no point of the device holds any more, so "all fields of the device"
   * forgets its old fields, and, when nothing at all is left under the name, its entry in `devices`.
   */
  purgeDevice(name: string, before: number | null, maxRows: number): { readings: number; dead: number; done: boolean } {
    const lim = before ?? Number.MAX_SAFE_INTEGER;
    const dev = this.c.devices.get(name);
    let readings = 0;
    let dead = 0;
    let done = false;
    this.db.transaction(() => {
      dead = this.db.prepare(`DELETE FROM dead_readings WHERE (device, field, ts) IN
        (SELECT device, field, ts FROM dead_readings WHERE device = ? AND ts < ? LIMIT ?)`).run(name, lim, maxRows).changes;
      if (dev === undefined) { done = dead < maxRows; return; }
      const room = maxRows - dead;
      if (room <= 0) return;
      const b = this.db.prepare('SELECT ts FROM points WHERE device = ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?').pluck().get(dev, lim, room - 1) as number | undefined;
      const d = b !== undefined ? this.deletePoints('points', 'device = ? AND ts <= ?', dev, b) : this.deletePoints('points', 'device = ? AND ts < ?', dev, lim);
      readings += d.readings;
      if (b !== undefined) return; // more may remain
      // `recent_points` is clustered by ts, so finding the device there scans it: once, after `points`. It
      // holds only the last seconds of points (more while compaction catches up on a backlog).
      const where = '(ts, device) IN (SELECT ts, device FROM recent_points WHERE device = ? AND ts < ? LIMIT ?)';
      const r = this.deletePoints('recent_points', where, dev, lim, room - d.points);
      readings += r.readings;
      if (d.points + r.points >= room) return;
      // Which of the device's fields do its remaining points (if any) still hold? Stops at the first point
      // of each; a field held by none is read to the end once.
      const fields = new Set(this.db.prepare('SELECT field FROM series WHERE device = ?').pluck().all(dev) as number[]);
      const left = new Set(fields);
      let anyLeft = false;
      for (const table of ['recent_points', 'points'] as const) {
        for (const p of this.db.prepare(`SELECT p FROM ${table} WHERE device = ?`).pluck().iterate(dev) as IterableIterator<string>) {
          anyLeft = true;
          for (const f in JSON.parse(p) as object) left.delete(Number(f));
          if (!left.size) break;
        }
      }
      const dropSeries = this.db.prepare('DELETE FROM series WHERE device = ? AND field = ?');
      for (const f of left) { dropSeries.run(dev, f); this.c.series.delete(seriesKey(dev, f)); }
      // Nothing left under the name: its dictionary entry goes too (a later write of it makes a new one).
      if (!anyLeft) {
        this.db.prepare('DELETE FROM devices WHERE id = ?').run(dev);
        this.c.devices.delete(name);
      }
      done = true;
    }).immediate();
    return { readings, dead, done };
  }
}
