/**
 * Compact hand-off of a telemetry batch to a SQLite worker thread.
 *
 * postMessage structured-clones its argument on the sending thread, which is
 * the broker's event loop. Cloning ~3,000 record objects per group commit
 * (every device id, kind and field name written out again for each record)
 * cost ~4% of that thread at 20,000 messages/s. Packed, a batch is one
 * Float64Array (transferred, not copied) plus a short table of the distinct
 * strings in it: device ids, kinds, areas, field names and string values.
 *
 * Layout of `nums`, per record:
 *   device string index, kind string index, area string index, ts, field count n,
 *   then n × (field string index, value kind, value)
 * value kind 0 = number (the value), 1 = boolean (0/1), 2 = string (string index).
 */
import type { Scalar } from '../../core/events.js';
import type { TelemetryRecord } from './types.js';

export interface PackedRecords {
  packed: 1;
  /** Records in the batch. */
  count: number;
  strings: string[];
  nums: Float64Array;
}

export function isPacked(x: unknown): x is PackedRecords {
  return typeof x === 'object' && x !== null && (x as { packed?: unknown }).packed === 1;
}

export function packRecords(records: readonly TelemetryRecord[]): PackedRecords {
  const ids = new Map<string, number>();
  const strings: string[] = [];
  const intern = (s: string): number => {
    let i = ids.get(s);
    if (i === undefined) { i = strings.length; strings.push(s); ids.set(s, i); }
    return i;
  };
  // Records of one device tend to come in a row with the same kind, area and field names in the same
  // order (one firmware): those are compared with the previous record's before any map lookup.
  let lastDevice = ''; let lastDeviceIx = -1;
  let lastKind = ''; let lastKindIx = -1;
  let lastArea = ''; let lastAreaIx = -1;
  const lastKeys: string[] = []; const lastKeyIx: number[] = [];
  // Typical record: 4 fields → 5 + 4 × 3 = 17 slots; grown if a batch has more.
  let nums = new Float64Array(Math.max(64, records.length * 17));
  let o = 0;
  for (const r of records) {
    if (o + 5 > nums.length) nums = grow(nums, o + 5);
    const d = r.deviceId;
    if (d !== lastDevice || lastDeviceIx < 0) { lastDevice = d; lastDeviceIx = intern(d); }
    const kind = r.kind;
    if (kind !== lastKind || lastKindIx < 0) { lastKind = kind; lastKindIx = intern(kind); }
    const area = r.area ?? '';
    if (area !== lastArea || lastAreaIx < 0) { lastArea = area; lastAreaIx = intern(area); }
    nums[o++] = lastDeviceIx;
    nums[o++] = lastKindIx;
    nums[o++] = lastAreaIx;
    nums[o++] = r.ts;
    const countAt = o++;
    const values = r.values;
    let n = 0;
    for (const k in values) {
      if (o + 3 > nums.length) nums = grow(nums, o + 3);
      const v = values[k]!;
      let ki: number;
      if (lastKeys[n] === k) ki = lastKeyIx[n]!;
      else { ki = intern(k); lastKeys[n] = k; lastKeyIx[n] = ki; }
      n++;
      nums[o++] = ki;
      if (typeof v === 'number') { nums[o++] = 0; nums[o++] = v; }
      else if (typeof v === 'boolean') { nums[o++] = 1; nums[o++] = v ? 1 : 0; }
      else { nums[o++] = 2; nums[o++] = intern(v); }
    }
    nums[countAt] = n;
  }
  // A copy of the used part: the transfer then moves exactly what is needed.
  return { packed: 1, count: records.length, strings, nums: o === nums.length ? nums : nums.slice(0, o) };
}

function grow(nums: Float64Array<ArrayBuffer>, need: number): Float64Array<ArrayBuffer> {
  const bigger = new Float64Array(Math.max(need, nums.length * 2));
  bigger.set(nums);
  return bigger;
}

export function unpackRecords(p: PackedRecords): TelemetryRecord[] {
  const { nums, strings } = p;
  const out: TelemetryRecord[] = new Array<TelemetryRecord>(p.count);
  let o = 0;
  for (let i = 0; i < p.count; i++) {
    const deviceId = strings[nums[o++]!]!;
    const kind = strings[nums[o++]!]!;
    const area = strings[nums[o++]!]!;
    const ts = nums[o++]!;
    const n = nums[o++]!;
    const values: Record<string, Scalar> = {};
    for (let j = 0; j < n; j++) {
      const name = strings[nums[o++]!]!;
      const k = nums[o++]!;
      const v = nums[o++]!;
      const value = k === 0 ? v : k === 1 ? v !== 0 : strings[v]!;
      // A plain assignment to "__proto__" would set the prototype instead of a field (codec.ts
      // never lets such a name through, but this layer does not rely on it).
      if (name === '__proto__') Object.defineProperty(values, name, { value, enumerable: true, writable: true, configurable: true });
      else values[name] = value;
    }
    out[i] = { deviceId, kind, area, ts, values }; // one shape for every record ('' = no area)
  }
  return out;
}
