/**
 * Purging one device from the InfluxDB queue (outbox-db.ts; types.ts TelemetryPurge). Runs in the
 * queue's worker thread, in bounded chunks so that enqueues (and the PUBACKs waiting on them) are
 * held up at most one chunk.
 *
 * A queue row holds the lines of many devices: the device's lines (ts < `before`) are cut out and
 * the row rewritten with its counts, or deleted when nothing is left. The forwarder may have read
 * a row before it was rewritten; the store runs each chunk between two forwarder writes and purges
 * InfluxDB only after the queue (influx-store.ts), so such a write is purged there.
 */
import type Database from 'better-sqlite3';
import { escapeTag } from './line-protocol.js';
import { lineSummary, splitLines } from './line-split.js';

/** What a chunk took out of the queue (the caller adjusts its totals). */
export interface QueuePurgeChunk { readings: number; rows: number; bytes: number; lastId: number; done: boolean }

interface Body { body: string; lines: number; readings: number; bytes: number }

/** `body` without the device's lines with ts < before; null when it has none. */
export function withoutDevice(body: string, deviceId: string, before: number | null): Body | null {
  if (!body.includes('device_id=' + escapeTag(deviceId))) return null; // most rows: other devices only
  const kept: string[] = [];
  let readings = 0;
  let bytes = 0;
  let cut = false;
  for (const line of splitLines(body)) {
    const s = lineSummary(line);
    if (s && s.deviceId === deviceId && (before === null || s.ts < before)) { cut = true; continue; }
    kept.push(line);
    readings += s ? s.fields : 0;
    bytes += Buffer.byteLength(line) + 1; // as recordsToLines counts them
  }
  return cut ? { body: kept.join('\n'), lines: kept.length, readings, bytes } : null;
}

/** Queue rows with id > afterId, at most maxRows of them, in one transaction. */
export function purgeQueueChunk(db: Database.Database, deviceId: string, before: number | null, maxRows: number, afterId: number): QueuePurgeChunk {
  const rows = db.prepare('SELECT id, body, readings, bytes FROM queue WHERE id > ? ORDER BY id LIMIT ?')
    .all(afterId, maxRows) as { id: number; body: string; readings: number; bytes: number }[];
  const del = db.prepare('DELETE FROM queue WHERE id = ?');
  const upd = db.prepare('UPDATE queue SET body = ?, lines = ?, readings = ?, bytes = ? WHERE id = ?');
  const out: QueuePurgeChunk = { readings: 0, rows: 0, bytes: 0, lastId: rows.length ? rows[rows.length - 1]!.id : afterId, done: rows.length < maxRows };
  db.transaction(() => {
    for (const r of rows) {
      const b = withoutDevice(r.body, deviceId, before);
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
    for (const r of db.prepare('SELECT id, body, readings FROM dead').all() as { id: number; body: string; readings: number }[]) {
      const b = withoutDevice(r.body, deviceId, before);
      if (!b) continue;
      if (b.lines === 0) del.run(r.id); else upd.run(b.body, b.lines, b.readings, b.bytes, r.id);
      dead += r.readings - b.readings;
    }
    done = true;
  }).immediate();
  return { dead, done };
}
