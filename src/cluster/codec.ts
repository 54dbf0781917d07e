/**
 * The wire form of one live-bus entry's readings: compact JSON, readings
 * grouped by runs of one device (device id, area and kind written once per
 * run), times as differences from the previous reading of the run.
 *
 *   [[deviceId, area, kind, [dt0, values0, dt1, values1, ...]], ...]
 *
 * dt0 is the run's first ts (ms since the epoch), then ts(i) - ts(i-1).
 * Order is kept. decodeReadings() checks every part: an entry is written by
 * another process, and a bad one must cost a counter, not a crash.
 */
import type { Scalar, TelemetryEvent } from '../core/events.js';

type Run = [string, string, string, Array<number | Record<string, Scalar>>];

export function encodeReadings(events: readonly TelemetryEvent[]): string {
  const runs: Run[] = [];
  let run: Run | null = null;
  let prev = 0;
  for (const e of events) {
    if (run === null || run[0] !== e.deviceId || run[1] !== e.area || run[2] !== e.kind) {
      run = [e.deviceId, e.area, e.kind, []];
      runs.push(run);
      prev = 0;
    }
    run[3].push(e.ts - prev, e.values);
    prev = e.ts;
  }
  return JSON.stringify(runs);
}

export class BadEntry extends Error {}

export function decodeReadings(body: string): TelemetryEvent[] {
  let runs: unknown;
  try { runs = JSON.parse(body); } catch { throw new BadEntry('not JSON'); }
  if (!Array.isArray(runs)) throw new BadEntry('not a list of runs');
  const out: TelemetryEvent[] = [];
  for (const run of runs) {
    if (!Array.isArray(run) || run.length !== 4) throw new BadEntry('a run is not [device, area, kind, readings]');
    const [deviceId, area, kind, list] = run as unknown[];
    if (typeof deviceId !== 'string' || typeof area !== 'string' || typeof kind !== 'string' || !Array.isArray(list) || list.length % 2 !== 0) {
      throw new BadEntry('a run has a bad device, area, kind or reading list');
    }
    let ts = 0;
    for (let i = 0; i < list.length; i += 2) {
      const dt: unknown = list[i];
      const values: unknown = list[i + 1];
      if (typeof dt !== 'number' || !Number.isSafeInteger(dt)) throw new BadEntry('a reading time is not an integer');
      ts += dt;
      if (!isValues(values)) throw new BadEntry('reading values are not an object of numbers, booleans and strings');
      out.push({ deviceId, area, kind, ts, values });
    }
  }
  return out;
}

function isValues(v: unknown): v is Record<string, Scalar> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  for (const k in v) {
    const x = (v as Record<string, unknown>)[k];
    if (typeof x === 'string' || typeof x === 'boolean' || (typeof x === 'number' && Number.isFinite(x))) continue;
    return false;
  }
  return true;
}

/** One entry's body and how many readings it carries. */
export interface EncodedPart { body: string; readings: number }

/**
 * The batch as entries of at most `maxBytes` each: one entry when it fits
 * (the usual case), otherwise halves, recursively, so a large commit never
 * makes one huge Redis entry. A single reading larger than the cap is left
 * out and counted in `tooLarge`.
 */
export function encodeParts(events: readonly TelemetryEvent[], maxBytes: number): { parts: EncodedPart[]; tooLarge: number } {
  const parts: EncodedPart[] = [];
  let tooLarge = 0;
  const go = (list: readonly TelemetryEvent[]): void => {
    if (list.length === 0) return;
    const body = encodeReadings(list);
    if (Buffer.byteLength(body, 'utf8') <= maxBytes) { parts.push({ body, readings: list.length }); return; }
    if (list.length === 1) { tooLarge++; return; }
    const mid = list.length >> 1;
    go(list.slice(0, mid));
    go(list.slice(mid));
  };
  go(events);
  return { parts, tooLarge };
}
