/**
 * Storage verification: every acknowledged reading must be readable back.
 * Reads each device's raw history through the REST API (paging by time: the
 * next page starts after the last ts returned) and checks every acknowledged
 * message's ts is there with all its fields.
 */
import { type KengApi, mapLimit } from '../../src/sim/index.js';

export interface VerifyResult {
  /** Readings (device, ts, field) returned by the history API in the run's time range. */
  storedReadings: number;
  storedPoints: number;
  ackedReadings: number;
  /** Acknowledged readings not found. */
  missingReadings: number;
  /** Up to 10 examples "device@ts". */
  missingExamples: string[];
  devicesChecked: number;
  queryMs: number;
}

export interface DeviceCheck {
  storedReadings: number;
  storedPoints: number;
  missing: number[];
}

/** Pure part: compares acknowledged ts against the points read back. */
export function checkDevice(acked: readonly number[], points: ReadonlyArray<{ ts: number; values: Record<string, unknown> }>, fields: readonly string[]): DeviceCheck {
  const complete = new Set<number>();
  let storedReadings = 0;
  for (const p of points) {
    let n = 0;
    for (const f of fields) if (p.values[f] !== undefined && p.values[f] !== null) n++;
    storedReadings += n;
    if (n === fields.length) complete.add(p.ts);
  }
  return { storedReadings, storedPoints: points.length, missing: acked.filter((ts) => !complete.has(ts)) };
}

export async function readAllPoints(api: KengApi, id: string, fields: string[], from: number, to: number): Promise<Array<{ ts: number; values: Record<string, unknown> }>> {
  const all: Array<{ ts: number; values: Record<string, unknown> }> = [];
  let cursor = from;
  for (let page = 0; page < 100_000; page++) {
    const points = await api.telemetry(id, { from: cursor, to, fields });
    if (points.length === 0) break;
    all.push(...points);
    const last = points[points.length - 1]!.ts;
    if (!Number.isFinite(last) || last + 1 <= cursor) throw new Error(`history of ${id}: paging made no progress at ts ${cursor}`);
    cursor = last + 1;
    if (cursor >= to) break;
  }
  return all;
}

export async function verifyViaApi(api: KengApi, ids: string[], ackedTs: number[][], fields: string[], from: number, to: number): Promise<VerifyResult> {
  const t0 = performance.now();
  const checks = await mapLimit(ids, 8, async (id, i) => checkDevice(ackedTs[i] ?? [], await readAllPoints(api, id, fields, from, to), fields));
  const missingExamples: string[] = [];
  let storedReadings = 0, storedPoints = 0, missing = 0, acked = 0;
  checks.forEach((c, i) => {
    storedReadings += c.storedReadings;
    storedPoints += c.storedPoints;
    missing += c.missing.length * fields.length;
    acked += (ackedTs[i]?.length ?? 0) * fields.length;
    for (const ts of c.missing.slice(0, 10 - missingExamples.length)) missingExamples.push(`${ids[i]}@${ts}`);
  });
  return {
    storedReadings, storedPoints, ackedReadings: acked, missingReadings: missing, missingExamples,
    devicesChecked: ids.length, queryMs: performance.now() - t0,
  };
}
