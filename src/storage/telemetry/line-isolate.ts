/**
 * Finding the readings InfluxDB refuses in a rejected write, shared by the forwarders of the
 * on-disk queue (forwarder.ts) and of the PostgreSQL outbox (pg-outbox-forwarder.ts): the lines
 * are re-sent in halves, a rejected half is halved again, a rejected line is re-sent as one line
 * per field, and only a rejected single-field line is kept as rejected. Re-sending is idempotent
 * (InfluxDB overwrites a point with the same series and time), so one field's conflict cannot take
 * the other fields of its line, or other lines, with it.
 */
import type { InfluxBackend, WriteOutcome } from './influx-backend.js';
import { splitLine } from './line-split.js';
import type { RejectedLine } from './outbox-db.js';

export interface IsolateDeps {
  backend: InfluxBackend;
  signal: AbortSignal;
  /** Checked before every re-send: false stops (the caller keeps the batch and tries all of it again later). */
  keepGoing(): boolean | Promise<boolean>;
  /** A re-send failed (retryable or rejected), for the caller's error state and metrics. */
  onFailure(out: WriteOutcome & { ok: false }): void;
}

/**
 * `lines` were rejected together (`out`): adds each rejected single-field line to `rejected`.
 * False when the server became unreachable meanwhile or `keepGoing` said stop.
 */
export async function findRejected(d: IsolateDeps, lines: string[], out: WriteOutcome & { ok: false }, rejected: RejectedLine[]): Promise<boolean> {
  let parts: string[][];
  if (lines.length > 1) {
    const mid = lines.length >> 1;
    parts = [lines.slice(0, mid), lines.slice(mid)];
  } else {
    const p = lines.length === 1 ? splitLine(lines[0]!) : null;
    if (!p || p.fields.length < 2) {
      if (lines.length === 1) rejected.push({ line: lines[0]!, status: out.status, error: out.message });
      return true;
    }
    parts = p.fields.map((f) => [`${p.prefix} ${f} ${p.ts}`]);
  }
  for (const part of parts) {
    if (!await d.keepGoing()) return false;
    const o = await d.backend.write(part.join('\n'), part.length, d.signal);
    if (o.ok) continue;
    d.onFailure(o);
    if (o.retry) return false;
    if (!await findRejected(d, part, o, rejected)) return false;
  }
  return true;
}
