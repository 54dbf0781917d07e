/**
 * The field-type rule both telemetry stores apply, so that the history API
 * answers the same on both: within the telemetry measurement a field name
 * keeps the type (number, boolean, string) of its first stored value. A later
 * value of another type is not stored as a reading: it goes to the
 * `dead_readings` table with reason `field_type_conflict`, is counted, and the
 * other fields of its message are stored normally.
 *
 * Why: InfluxDB refuses a value whose type differs from the field's type
 * (400 "field type conflict"), and it refuses the whole line with it, taking
 * the message's other fields along. Checking before the line is built keeps
 * them. The embedded store could hold mixed types, but then the same data
 * would answer differently depending on the store.
 *
 * The check runs where the durable commit happens (the SQLite worker), and the
 * known types live in that same database, so a type is learned and the
 * readings that taught it are committed together or not at all.
 */
import type { Scalar } from '../../core/events.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import type { WriteResult } from './types.js';

/** Value kinds, as stored (embedded `k` column, record-pack.ts). */
export const K_NUMBER = 0;
export const K_BOOLEAN = 1;
export const K_STRING = 2;
/** A type Keng never writes (InfluxDB integer/unsigned from another writer): every value of ours conflicts. */
export const K_FOREIGN = 3;

export const FIELD_TYPE_CONFLICT = 'field_type_conflict';

export function kindOf(v: Scalar): number {
  return typeof v === 'number' ? K_NUMBER : typeof v === 'boolean' ? K_BOOLEAN : K_STRING;
}

export function kindName(k: number): string {
  return k === K_NUMBER ? 'number' : k === K_BOOLEAN ? 'boolean' : k === K_STRING ? 'string' : 'other';
}

/** InfluxDB's field type names (SHOW FIELD KEYS, error messages) → kind. */
export function kindOfInfluxType(t: string): number {
  switch (t) {
    case 'float': return K_NUMBER;
    case 'boolean': return K_BOOLEAN;
    case 'string': return K_STRING;
    default: return K_FOREIGN; // integer, unsigned: Keng writes numbers as floats
  }
}

/** A reading a store did not keep as a reading (it is in the dead-letter table instead). */
export interface SetAsideReading {
  deviceId: string;
  ts: number;
  field: string;
  value: Scalar;
  reason: typeof FIELD_TYPE_CONFLICT;
}

/**
 * InfluxDB's conflict message names the field and the type it already has:
 * `field type conflict: input field "rssi" on measurement "telemetry" is type string, already exists as type float`.
 */
export function parseConflictMessage(msg: string): { field: string; existing: string } | null {
  const m = /input field \\?"(.+?)\\?" on measurement .*? already exists as type (\w+)/.exec(msg);
  return m ? { field: m[1]!, existing: m[2]! } : null;
}

/**
 * Counts readings set aside by the field-type rule (a store's write result) and logs them once per
 * batch: the same for every store that applies the rule in its commit.
 */
export function reportSetAside(
  deps: { metrics: Pick<Metrics, 'readingsDeadLetteredTotal'>; logger: Pick<Logger, 'warn'> }, store: string, setAside: readonly SetAsideReading[] | undefined,
): void {
  if (!setAside?.length) return;
  deps.metrics.readingsDeadLetteredTotal.inc({ store, reason: FIELD_TYPE_CONFLICT }, setAside.length);
  deps.logger.warn({ readings: setAside.length, first: setAside[0] }, 'readings whose type differs from their field\'s were moved to the dead-letter table');
}

/**
 * Counts a committed batch: readings stored, duplicates skipped, readings set aside. The stores that
 * commit readings themselves (embedded, PostgreSQL) report a write the same way, so the counters mean
 * the same whichever store runs.
 */
export function reportWritten(
  deps: { metrics: Pick<Metrics, 'readingsStoredTotal' | 'duplicatesTotal' | 'readingsDeadLetteredTotal'>; logger: Pick<Logger, 'warn'> },
  store: string, res: WriteResult,
): void {
  if (res.written) deps.metrics.readingsStoredTotal.inc({ store }, res.written);
  if (res.duplicates) deps.metrics.duplicatesTotal.inc(res.duplicates);
  reportSetAside(deps, store, res.setAside);
}
