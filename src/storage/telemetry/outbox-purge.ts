/**
 * Purging one device from the InfluxDB queue (outbox-db.ts; types.ts TelemetryPurge). Runs in the
 * queue's worker thread, in chunks bounded in rows and time, so that enqueues (and the PUBACKs
 * waiting on them) are held up at most one chunk.
 *
 * A queue row holds the lines of many devices: the device's lines (ts < `before`) are cut out and
 * the row rewritten with its counts, or deleted when nothing is left. The forwarder may have read
 * a row before it was rewritten; the store runs each chunk between two forwarder writes and purges
 * InfluxDB only after the queue (influx-store.ts), so such a write is purged there.
 */
import { performance } from 'node:perf_hooks';
import type Database from 'better-sqlite3';
import { escapeTag } from './line-protocol.js';
import { lineSummary, splitLines } from './line-split.js';

/** What a chunk took out of the queue (the caller adjusts its totals). */
export interface QueuePurgeChunk { readings: number; rows: number; bytes: number; lastId: number; done: boolean }

interface Body { body: string; lines: number; readings: number; bytes: number }

/**
 * `row` without the device's lines with ts < before; null when it has none. Only lines that
 * mention the device are parsed (most rows and lines are other devices'); the counts of the row
 * are reduced by what was cut, in the units recordsToLines counts them.
 */
export function withoutDevice(row: Body, deviceId: string, before: number | null): Body | null {
  const needle = 'device_id=' + escapeTag(deviceId);
  if (!row.body.includes(needle)) return null;
  const lines = splitLines(row.body);
  const kept: string[] = [];
  let readings = 0;
  let bytes = 0;
  for (const line of lines) {
    if (line.includes(needle)) {
      const s = lineSummary(line);
      if (s && s.deviceId === deviceId && (before === null || s.ts < before)) {
        readings += s.fields;
        bytes += Buffer.byteLength(line) + 1;
        continue;
      }
    }
    kept.push(line);
  }
  if (kept.length === lines.length) return null;
  return { body: kept.join('\n'), lines: row.lines - (lines.length - kept.length), readings: row.readings - readings, bytes: row.bytes - bytes };
}

/**
 * Queue rows with id > afterId, one by one in one transaction, until `maxRows` rows or `budgetMs`
 * of work (a row holds up to influx.batchLines lines, so rows alone bound the step badly).
 */
export function purgeQueueChunk(db: Database.Database, deviceId: string, before: number | null, maxRows: number, afterId: number, budgetMs: number): QueuePurgeChunk {
  const next = db.prepare('SELECT id, body, lines, readings, bytes FROM queue WHERE id > ? ORDER BY id LIMIT 1');
  const del = db.prepare('DELETE FROM queue WHERE id = ?');
  const upd = db.prepare('UPDATE queue SET body = ?, lines = ?, readings = ?, bytes = ? WHERE id = ?');
  const out: QueuePurgeChunk = { readings: 0, rows: 0, bytes: 0, lastId: afterId, done: false };
  const until = performance.now() + budgetMs;
  db.transaction(() => {
    for (let n = 0; n < maxRows && (n === 0 || performance.now() < until); n++) {
      const r = next.get(out.lastId) as (Body & { id: number }) | undefined;
      if (!r) { out.done = true; return; }
      out.lastId = r.id;
      const b = withoutDevice(r, deviceId, before);
      if (!b) continue;
      if (b.lines === 0) { del.run(r.id); out.rows++; } else upd.run(b.body, b.lines, b.readings, b.bytes, r.id);
      out.readings += r.readings - b.readings;
      out.bytes += r.bytes - b.bytes;
    }
  }).immediate();
  return out;
}

/**
 * The device's dead letters: `dead_readings` chunk by chunk, then the whole rows of `dead` (kept by
 * earlier versions; few) rewritten like queue rows. Returns readings removed and whether all are.
 */
export function purgeDeadChunk(db: Database.Database, deviceId: string, before: number | null, maxRows: number): { dead: number; done: boolean } {
  const lim = before ?? Number.MAX_SAFE_INTEGER;
  let dead = 0;
  let done = false;
  db.transaction(() => {
    dead = db.prepare('DELETE FROM dead_readings WHERE id IN (SELECT id FROM dead_readings WHERE device = ? AND ts < ? LIMIT ?)')
      .run(deviceId, lim, maxRows).changes;
    if (dead >= maxRows) return;
    const del = db.prepare('DELETE FROM dead WHERE id = ?');
    const upd = db.prepare('UPDATE dead SET body = ?, lines = ?, readings = ?, bytes = ? WHERE id = ?');
    for (const r of db.prepare('SELECT id, body, lines, readings, bytes FROM dead').all() as (Body & { id: number })[]) {
      const b = withoutDevice(r, deviceId, before);
      if (!b) continue;
      if (b.lines === 0) del.run(r.id); else upd.run(b.body, b.lines, b.readings, b.bytes, r.id);
      dead += r.readings - b.readings;
    }
    done = true;
  }).immediate();
  return { dead, done };
}
