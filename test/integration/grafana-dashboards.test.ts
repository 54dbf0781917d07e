/**
 * The Grafana dashboards of dashboards/ checked without Grafana.
 *
 * InfluxQL (dashboards/influxql): every query of every panel and template
 * variable is taken from the JSON, its Grafana variables and macros are
 * replaced the way Grafana's InfluxDB data source replaces them, and it runs
 * against a real InfluxDB 1.6 (Debian influxd) holding points written in
 * Keng's own line protocol (recordsToLines). Each answer is compared with an
 * expectation computed here from the seeded readings, for several selections
 * of the area, device and speaker variables; a query without an expectation,
 * or an expectation without a query, fails the test.
 *
 * Flux (dashboards/flux): no InfluxDB 2 runs here, so those are checked for
 * structure only: bucket variable, time range, measurement, area (or device)
 * filter, balanced brackets, known variables, the same panels as the InfluxQL
 * set. The Prometheus panels of the broadcast dashboards name only metrics
 * Keng registers.
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Scalar } from '../../src/core/events.js';
import { recordsToLines } from '../../src/storage/telemetry/line-protocol.js';
import type { TelemetryRecord } from '../../src/storage/telemetry/index.js';
import { influxdForFile } from '../helpers/influxd.js';

const ROOT = path.resolve(__dirname, '../..');
const DB = 'keng';
const MIN = 60_000;
const HOUR = 3_600_000;
const T0 = Date.UTC(2025, 10, 30, 0, 0, 0);
const T1 = T0 + 6 * HOUR; // the dashboard time range [T0, T1]; $__interval = 1h

// ---------------------------------------------------------------------------
// Dashboards

interface Dash { file: string; json: any }

function loadDir(dir: string): Dash[] {
  const abs = path.join(ROOT, 'dashboards', dir);
  return readdirSync(abs).filter((f) => f.endsWith('.json')).sort()
    .map((f) => ({ file: `dashboards/${dir}/${f}`, json: JSON.parse(readFileSync(path.join(abs, f), 'utf8')) }));
}
const INFLUXQL = loadDir('influxql');
const FLUX = loadDir('flux');

/** Panels, with those nested in collapsed rows. */
function panelsOf(d: any): any[] {
  return (d.panels as any[]).flatMap((p) => [p, ...((p.panels as any[] | undefined) ?? [])]);
}
function dsType(panel: any, target: any): string | undefined {
  return target.datasource?.type ?? panel.datasource?.type;
}
/** The English half of a "Vietnamese / English" title. */
function en(title: string): string {
  const i = title.indexOf(' / ');
  return i < 0 ? title : title.slice(i + 3);
}
function variables(d: any): any[] { return d.templating.list as any[]; }

// ---------------------------------------------------------------------------
// Seed: readings as Keng stores them (ingest sets area from the device's area)

const rec = (kind: string) => (deviceId: string, area: string | undefined, min: number, values: Record<string, Scalar>): TelemetryRecord =>
  ({ deviceId, kind, ...(area !== undefined ? { area } : {}), ts: T0 + min * MIN, values });
const S = rec('sensor');
const L = rec('speaker');
const spk = (volume: number, playing: boolean, rssi: number, power_source: string, battery_v: number, amp_temp_c: number, uptime_s: number): Record<string, Scalar> =>
  ({ volume, playing, rssi, power_source, battery_v, amp_temp_c, uptime_s });

const SEED: TelemetryRecord[] = [
  // The last soil_moisture, temperature and battery_v of dat-dong-1 in the range fall at three different times.
  S('dat-dong-1', '00004-dong', -30, { soil_moisture: 10, battery_v: 3.9 }), // before the range
  S('dat-dong-1', '00004-dong', 10, { soil_moisture: 30, temperature: 27, battery_v: 3.8 }),
  S('dat-dong-1', '00004-dong', 70, { soil_moisture: 32, temperature: 28 }),
  S('dat-dong-1', '00004-dong', 130, { soil_moisture: 31, temperature: 29, battery_v: 3.75 }),
  S('dat-dong-1', '00004-dong', 200, { temperature: 30 }),
  S('dat-dong-1', '00004-dong', 250, { soil_moisture: 28 }),
  S('dat-dong-1', '00004-dong', 420, { soil_moisture: 99, temperature: 40, battery_v: 4.2 }), // after the range
  S('khi-dong-1', '00004-dong', 25, { humidity: 80, soil_temperature: 24, pm2_5: 35, pm10: 50, rssi: -70, temperature: 26 }),
  S('khi-dong-1', '00004-dong', 95, { humidity: 70, soil_temperature: 25, pm2_5: 40, pm10: 62, rssi: -72, temperature: 29 }),
  S('dat-tay-1', '00004-tay', 20, { soil_moisture: 22, temperature: 26.5, battery_v: 3.5 }),
  S('dat-tay-1', '00004-tay', 80, { soil_moisture: 21, temperature: 27.5, battery_v: 3.45 }),
  S('dat-tay-1', '00004-tay', 260, { soil_moisture: 19, temperature: 31, battery_v: 3.38 }),
  // Moved from Đông to Tây: its points keep the area they were taken in.
  S('dat-chuyen', '00004-dong', 60, { soil_moisture: 45, humidity: 60 }),
  S('dat-chuyen', '00004-tay', 180, { soil_moisture: 47, humidity: 65 }),
  // Two rain gauges in Tây (rain by area averages per gauge), one at commune level with a water-level gauge.
  S('mua-tay', '00004-tay', 20, { rain_mm: 2.5 }),
  S('mua-tay', '00004-tay', 50, { rain_mm: 1 }),
  S('mua-tay-2', '00004-tay', 30, { rain_mm: 3 }),
  S('mua-tay-2', '00004-tay', 90, { rain_mm: 1 }),
  S('mua-xa', '00004', 15, { rain_mm: 1.5, water_level_cm: 120 }),
  S('mua-xa', '00004', 45, { rain_mm: 2, water_level_cm: 150 }),
  S('mua-xa', '00004', 75, { rain_mm: 0.5, water_level_cm: 210 }),
  S('mua-xa', '00004', 135, { rain_mm: 4, water_level_cm: 180, battery_v: 3.6 }),
  // Another commune, and a sensor registered without an area.
  S('dat-7', '00007', 30, { soil_moisture: 50, temperature: 25, battery_v: 3.7 }),
  S('dat-khong-vung', undefined, 40, { soil_moisture: 40, temperature: 24 }),
  S('tram-7', '00007', 50, { humidity: 75, rain_mm: 6, water_level_cm: 90, soil_temperature: 23, pm2_5: 20, pm10: 30, rssi: -66 }),
  L('loa-dong-1', '00004-dong', 5, spk(80, false, -60, 'ac', 12.8, 32, 1000)),
  L('loa-dong-1', '00004-dong', 35, spk(80, true, -61, 'ac', 12.8, 45, 2800)),
  L('loa-dong-1', '00004-dong', 65, spk(80, false, -62, 'ac', 12.7, 40, 4600)),
  L('loa-dong-1', '00004-dong', 185, spk(70, true, -75, 'battery', 12.1, 62, 11800)),
  L('loa-dong-1', '00004-dong', 305, spk(70, false, -74, 'battery', 11.9, 38, 300)), // restarted
  L('loa-tay-1', '00004-tay', 10, spk(90, true, -80, 'solar', 12.4, 50, 500)),
  L('loa-tay-1', '00004-tay', 40, spk(85, true, -82, 'solar', 12.0, 55, 2300)),
  L('loa-tay-1', '00004-tay', 130, spk(85, false, -88, 'solar', 11.5, 41, 7700)),
  // Mains-powered, no battery or amplifier sensor.
  L('loa-xa', '00004', 50, { volume: 60, playing: true, rssi: -55, power_source: 'ac', uptime_s: 90000 }),
  L('loa-xa', '00004', 55, { volume: 60, playing: false, rssi: -56, power_source: 'ac', uptime_s: 90300 }),
  L('loa-tay-2', '00004-tay', 100, spk(75, false, -70, 'battery', 12.3, 66, 3000)),
  L('loa-tay-2', '00004-tay', 220, spk(75, true, -71, 'battery', 12.2, 71, 10200)),
  L('loa-7', '00007', 30, spk(75, true, -90, 'battery', 12.2, 75, 4000)),
  L('loa-7-b', '00007', 45, spk(65, false, -65, 'solar', 11.2, 35, 800)),
  L('loa-khong-vung', undefined, 70, { volume: 50, playing: true, rssi: -58, power_source: 'ac', uptime_s: 5000 }),
];
const DEVICES = [...new Set(SEED.map((r) => r.deviceId))].sort();

// ---------------------------------------------------------------------------
// Variable selections, and Grafana's replacement of variables and macros

type Sel = 'All' | string[];
interface Scene { name: string; area: Sel; device: Sel | string; speaker: Sel }

const COMMUNE = ['00004', '00004-dong', '00004-tay'];
// The seed has readings of every field inside and outside each selection, so that every query's
// answer changes with the area variable (commune vs All) and with the device variables (commune vs picked).
const COMMUNE_ALL: Scene = { name: 'commune 00004 with its villages', area: COMMUNE, device: 'All', speaker: 'All' };
const ALL: Scene = { name: 'everything (All)', area: 'All', device: 'All', speaker: 'All' };
const COMMUNE_PICKED: Scene = { name: 'commune 00004, picked devices', area: COMMUNE, device: ['dat-dong-1', 'mua-tay', 'dat-chuyen'], speaker: ['loa-dong-1'] };
const SCENES: Scene[] = [
  COMMUNE_ALL, ALL, COMMUNE_PICKED,
  { name: 'one village, picked devices', area: ['00004-tay'], device: ['dat-tay-1', 'mua-tay', 'dat-chuyen'], speaker: ['loa-tay-1'] },
];
const deviceScenes = (): Scene[] => DEVICES.map((d) => ({ name: `device ${d}`, area: 'All', device: d, speaker: 'All' }));

/** Grafana's escapeRegex (@grafana/data), used by the InfluxDB data source for multi-value variables. */
const escapeRegex = (s: string): string => s.replace(/[\\^$*+?.()|[\]{}/]/g, '\\$&');

/** A variable's value as the InfluxDB data source writes it into a query (interpolateQueryExpr). */
function formatValue(def: any, value: Sel | string): string {
  if (value === 'All') {
    expect(def.includeAll, `${def.name} offers All`).toBe(true);
    return def.allValue as string; // a custom all value is inserted as it is
  }
  if (!def.multi && !def.includeAll) return value as string;
  const vals = (Array.isArray(value) ? value : [value]).map(escapeRegex);
  return vals.length === 1 ? vals[0]! : `(${vals.join('|')})`;
}

function render(d: any, query: string, scene: Scene): string {
  const defs = new Map(variables(d).map((v) => [v.name as string, v]));
  const values: Record<string, Sel | string> = { area: scene.area, device: scene.device, speaker: scene.speaker };
  const out = query
    .replaceAll('$timeFilter', `time >= ${T0}ms and time <= ${T1}ms`)
    .replaceAll('$__interval', '1h')
    .replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)/g, (m, a: string | undefined, b: string | undefined) => {
      const name = (a ?? b)!;
      const def = defs.get(name);
      if (!def) throw new Error(`${m} in "${query}" is not a variable of ${d.uid}`);
      const v = values[name];
      if (v === undefined) throw new Error(`no test value for $${name}`);
      return formatValue(def, v);
    });
  expect(out, 'every variable replaced').not.toMatch(/\$\{|\$\w/);
  return out;
}

// ---------------------------------------------------------------------------
// Expected answers, computed from SEED

type Row = Record<string, unknown>;
interface Series { tags: Record<string, string>; rows: Row[] }

const inRange = (r: TelemetryRecord): boolean => r.ts >= T0 && r.ts <= T1;
const areaOf = (r: TelemetryRecord): string => r.area ?? '';
function matches(sel: Sel | string, v: string): boolean {
  return sel === 'All' || (Array.isArray(sel) ? sel.includes(v) : sel === v);
}

/** Points of the scene: kind, area variable, and the device or speaker variable. */
function pick(scene: Scene, kind: 'sensor' | 'speaker', all = false): TelemetryRecord[] {
  const devSel = kind === 'sensor' ? scene.device : scene.speaker;
  return SEED.filter((r) => (all || inRange(r)) && r.kind === kind && matches(scene.area, areaOf(r)) && matches(devSel, r.deviceId));
}
const deviceRecs = (scene: Scene): TelemetryRecord[] => SEED.filter((r) => inRange(r) && r.deviceId === scene.device);

function tagsOf(r: TelemetryRecord, keys: string[]): Record<string, string> {
  return Object.fromEntries(keys.map((k) => [k, k === 'area' ? areaOf(r) : k === 'device_id' ? r.deviceId : r.kind]));
}
function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items) { const k = key(it); m.set(k, [...(m.get(k) ?? []), it]); }
  return m;
}
const bucket = (ts: number): number => Math.floor(ts / HOUR) * HOUR;

type Fn = 'mean' | 'sum' | 'max' | 'last' | 'count';
function agg(fn: Fn, pts: Array<{ ts: number; v: Scalar }>): Scalar {
  const nums = pts.map((p) => p.v as number);
  switch (fn) {
    case 'mean': return nums.reduce((a, b) => a + b, 0) / nums.length;
    case 'sum': return nums.reduce((a, b) => a + b, 0);
    case 'max': return Math.max(...nums);
    case 'count': return pts.length;
    case 'last': return [...pts].sort((a, b) => a.ts - b.ts).at(-1)!.v;
  }
}

/** `SELECT fn(field) ... GROUP BY time(1h), tags fill(none)`. */
function perBucket(recs: TelemetryRecord[], field: string, fn: Fn, tagKeys: string[], col: string = fn): Series[] {
  const withField = recs.filter((r) => field in r.values);
  return [...groupBy(withField, (r) => JSON.stringify(tagsOf(r, tagKeys))).values()].map((rs) => ({
    tags: tagsOf(rs[0]!, tagKeys),
    rows: [...groupBy(rs, (r) => String(bucket(r.ts))).entries()]
      .map(([b, xs]) => ({ time: Number(b), [col]: agg(fn, xs.map((x) => ({ ts: x.ts, v: x.values[field]! }))) }))
      .sort((a, b) => a.time - b.time),
  }));
}

/** `SELECT last(field) AS field ... GROUP BY tags`: the time is the reading's own. */
function lastOf(recs: TelemetryRecord[], field: string, tagKeys: string[]): Series[] {
  const withField = recs.filter((r) => field in r.values);
  return [...groupBy(withField, (r) => JSON.stringify(tagsOf(r, tagKeys))).values()].map((rs) => {
    const last = [...rs].sort((a, b) => a.ts - b.ts).at(-1)!;
    return { tags: tagsOf(last, tagKeys), rows: [{ time: last.ts, [field]: last.values[field] }] };
  });
}

/** Speakers whose last `field` in the range (per device_id, any area) passes `ok`, as `SELECT count(...) FROM (subquery)`. */
function countLast(recs: TelemetryRecord[], field: string, ok: (v: Scalar) => boolean): Series[] {
  const lasts = lastOf(recs, field, ['device_id']).map((s) => s.rows[0]![field] as Scalar);
  const n = lasts.filter(ok).length;
  // No time: the outer query has no time condition, its time says nothing.
  return n === 0 ? [] : [{ tags: {}, rows: [{ count: n }] }];
}

/** Per area and hour: speakers that reported playing = true (fill(0) over the whole range for areas with any). */
function playingByArea(recs: TelemetryRecord[]): Series[] {
  const on = recs.filter((r) => r.values.playing === true);
  return [...groupBy(on, areaOf).entries()].map(([area, rs]) => {
    const rows: Row[] = [];
    for (let t = bucket(T0); t <= bucket(T1); t += HOUR) {
      rows.push({ time: t, count: new Set(rs.filter((r) => bucket(r.ts) === t).map((r) => r.deviceId)).size });
    }
    return { tags: { area }, rows };
  });
}

/** Rain by area: each gauge's sum per hour, averaged over the area's gauges. */
function rainByArea(recs: TelemetryRecord[]): Series[] {
  const sums = perBucket(recs, 'rain_mm', 'sum', ['area', 'device_id']);
  return [...groupBy(sums, (s) => s.tags.area!).entries()].map(([area, ss]) => {
    const byTime = groupBy(ss.flatMap((s) => s.rows), (r) => String(r.time));
    return {
      tags: { area },
      rows: [...byTime.entries()].map(([t, rs]) => ({ time: Number(t), mean: rs.reduce((a, r) => a + (r.sum as number), 0) / rs.length }))
        .sort((a, b) => a.time - b.time),
    };
  });
}

/** `SELECT mean(*)` / `count(*)` of one device per hour: one column per field (mean: numbers only). */
function wildcard(recs: TelemetryRecord[], fn: 'mean' | 'count'): Series[] {
  const rows = [...groupBy(recs, (r) => String(bucket(r.ts))).entries()].map(([b, rs]) => {
    const row: Row = { time: Number(b) };
    const fields = [...new Set(rs.flatMap((r) => Object.keys(r.values)))];
    for (const f of fields) {
      const pts = rs.filter((r) => f in r.values).map((r) => ({ ts: r.ts, v: r.values[f]! }));
      if (fn === 'mean' && typeof pts[0]!.v !== 'number') continue;
      row[`${fn}_${f}`] = agg(fn, pts);
    }
    return row;
  });
  return rows.length ? [{ tags: {}, rows: rows.sort((a, b) => (a.time as number) - (b.time as number)) }] : [];
}

/** `SELECT * ... ORDER BY time DESC LIMIT 100`: tags as columns, newest first. */
function recent(recs: TelemetryRecord[]): Series[] {
  const rows = [...recs].sort((a, b) => b.ts - a.ts).slice(0, 100)
    .map((r) => ({ time: r.ts, ...(r.area ? { area: r.area } : {}), device_id: r.deviceId, kind: r.kind, ...r.values }));
  return rows.length ? [{ tags: {}, rows }] : [];
}

/** SHOW TAG VALUES: the distinct values, sorted. */
function tagValues(recs: TelemetryRecord[], key: 'area' | 'device_id'): string[] {
  return [...new Set(recs.map((r) => (key === 'area' ? r.area : r.deviceId)).filter((v): v is string => !!v))].sort();
}

// Expectation per query: `${uid}: ${English title}` and the refId ('*' for every refId of the panel).
type Expect = (scene: Scene, refIndex: number) => Series[];
const SENSOR_LAST = ['soil_moisture', 'soil_temperature', 'temperature', 'humidity', 'rain_mm', 'water_level_cm', 'pm2_5', 'pm10', 'battery_v', 'rssi'];
const DEVICE_LAST = [...SENSOR_LAST.slice(0, 9), 'rssi', 'uptime_s', 'volume', 'playing', 'power_source', 'amp_temp_c'];
const SPEAKER_LAST = ['playing', 'volume', 'power_source', 'battery_v', 'rssi', 'amp_temp_c', 'uptime_s'];
const sn = (s: Scene): TelemetryRecord[] => pick(s, 'sensor');
const sp = (s: Scene): TelemetryRecord[] => pick(s, 'speaker');
const playing = (s: Scene): TelemetryRecord[] => sp(s).filter((r) => r.values.playing === true);
const lastPanel = (fields: string[], recs: (s: Scene) => TelemetryRecord[], tags: string[]): Expect =>
  (s, i) => lastOf(recs(s), fields[i]!, tags);

const PANELS: Record<string, Expect> = {
  'keng-sensors-influxql: Soil moisture by area': (s) => perBucket(sn(s), 'soil_moisture', 'mean', ['area']),
  'keng-sensors-influxql: Temperature by area': (s) => perBucket(sn(s), 'temperature', 'mean', ['area']),
  'keng-sensors-influxql: Rain by area (mean per gauge)': (s) => rainByArea(sn(s)),
  'keng-sensors-influxql: Air humidity by area': (s) => perBucket(sn(s), 'humidity', 'mean', ['area']),
  'keng-sensors-influxql: Soil moisture': (s) => perBucket(sn(s), 'soil_moisture', 'mean', ['device_id']),
  'keng-sensors-influxql: Temperature': (s) => perBucket(sn(s), 'temperature', 'mean', ['device_id']),
  'keng-sensors-influxql: Rain per gauge': (s) => perBucket(sn(s), 'rain_mm', 'sum', ['device_id']),
  'keng-sensors-influxql: Water level': (s) => perBucket(sn(s), 'water_level_cm', 'mean', ['device_id']),
  'keng-sensors-influxql: Air humidity': (s) => perBucket(sn(s), 'humidity', 'mean', ['device_id']),
  'keng-sensors-influxql: Battery': (s) => perBucket(sn(s), 'battery_v', 'mean', ['device_id']),
  'keng-sensors-influxql: Last value per sensor, with the time of each reading': lastPanel(SENSOR_LAST, sn, ['area', 'device_id']),

  'keng-device-influxql: Last value of each field, with the time of each reading': lastPanel(DEVICE_LAST, deviceRecs, ['device_id']),
  'keng-device-influxql: Numeric fields': (s) => wildcard(deviceRecs(s), 'mean'),
  'keng-device-influxql: Readings per time bucket, by field': (s) => wildcard(deviceRecs(s), 'count'),
  'keng-device-influxql: Recent reports (newest first)': (s) => recent(deviceRecs(s)),

  'keng-speakers-influxql: Power source (last report)': (s, i) => countLast(sp(s), 'power_source', (v) => v === ['ac', 'battery', 'solar'][i]),
  'keng-speakers-influxql: Needs a look (last report)': (s, i) => [
    countLast(sp(s), 'rssi', (v) => (v as number) < -85),
    countLast(sp(s), 'amp_temp_c', (v) => (v as number) >= 70),
    countLast(sp(s), 'battery_v', (v) => (v as number) < 11.8),
  ][i]!,
  'keng-speakers-influxql: Last report per speaker, with the time of each reading': lastPanel(SPEAKER_LAST, sp, ['area', 'device_id']),
  'keng-speakers-influxql: Signal (RSSI)': (s) => perBucket(sp(s), 'rssi', 'mean', ['device_id']),
  'keng-speakers-influxql: Battery': (s) => perBucket(sp(s), 'battery_v', 'mean', ['device_id']),
  'keng-speakers-influxql: Amplifier temperature (max)': (s) => perBucket(sp(s), 'amp_temp_c', 'max', ['device_id']),
  'keng-speakers-influxql: Uptime': (s) => perBucket(sp(s), 'uptime_s', 'last', ['device_id']),
  'keng-speakers-influxql: Power source': (s) => perBucket(sp(s), 'power_source', 'last', ['device_id']),

  'keng-broadcasts-influxql: Speakers playing, by area': (s) => playingByArea(sp(s)),
  'keng-broadcasts-influxql: Volume while playing': (s) => perBucket(playing(s), 'volume', 'mean', ['device_id']),
  'keng-broadcasts-influxql: Playing, per speaker': (s) => perBucket(sp(s), 'playing', 'last', ['device_id']),
  'keng-broadcasts-influxql: Last playback report per speaker, with its time': lastPanel(['playing', 'volume'], sp, ['area', 'device_id']),
};

const VARIABLES: Record<string, (s: Scene) => string[]> = {
  'keng-sensors-influxql: $area': () => tagValues(SEED, 'area'),
  'keng-sensors-influxql: $device': (s) => tagValues(pick({ ...s, device: 'All' }, 'sensor', true), 'device_id'),
  'keng-device-influxql: $area': () => tagValues(SEED, 'area'),
  'keng-device-influxql: $device': (s) => tagValues(SEED.filter((r) => matches(s.area, areaOf(r))), 'device_id'),
  'keng-speakers-influxql: $area': () => tagValues(SEED, 'area'),
  'keng-speakers-influxql: $speaker': (s) => tagValues(pick({ ...s, speaker: 'All' }, 'speaker', true), 'device_id'),
  'keng-broadcasts-influxql: $area': () => tagValues(SEED, 'area'),
  'keng-broadcasts-influxql: $speaker': (s) => tagValues(pick({ ...s, speaker: 'All' }, 'speaker', true), 'device_id'),
};

// ---------------------------------------------------------------------------
// InfluxDB answers, normalised for comparison

/** Leaves out the time of answers whose expectation has none. */
function withoutTimeWhereUnexpected(got: Series[], want: Series[]): Series[] {
  return got.map((s, i) => ({ ...s, rows: s.rows.map((r, j) => {
    const w = want[i]?.rows[j];
    if (w && !('time' in w)) { const { time: _time, ...rest } = r; return rest; }
    return r;
  }) }));
}

/** Numbers to 10 significant digits (InfluxDB and JS may sum in another order); nulls left out. */
function norm(v: unknown): unknown { return typeof v === 'number' ? Number(v.toPrecision(10)) : v; }
function normSeries(list: Series[]): Series[] {
  return list
    .map((s) => ({ tags: s.tags, rows: s.rows.map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [k, norm(v)]))) }))
    .sort((a, b) => JSON.stringify(a.tags).localeCompare(JSON.stringify(b.tags)));
}
function answer(reply: any, opts: { dropZero?: boolean } = {}): Series[] {
  const res = reply.results?.[0];
  if (reply.error || res?.error) throw new Error(`InfluxDB error: ${reply.error ?? res.error}`);
  return ((res?.series ?? []) as Array<{ tags?: Record<string, string>; columns: string[]; values: unknown[][] }>).map((s) => ({
    tags: s.tags ?? {},
    rows: s.values.map((vals) => Object.fromEntries(s.columns.map((c, i) => [c, vals[i]])
      .filter(([, v]) => !(opts.dropZero && v === 0)))),
  }));
}

const fx = influxdForFile('keng-grafana-');
async function run(q: string): Promise<any> { return fx.influxd.query(q, DB); }

beforeAll(async () => {
  await fx.influxd.queryOrThrow(`CREATE DATABASE "${DB}"`);
  const lines: string[] = [];
  // Keng's own encoder: the points have exactly the tags and field types Keng writes.
  recordsToLines('telemetry', SEED, lines);
  const res = await fetch(`${fx.influxd.url}/write?db=${DB}&precision=ms`, { method: 'POST', body: lines.join('\n') });
  expect(res.status, await res.text()).toBe(204);
});

// ---------------------------------------------------------------------------

interface Found { key: string; panel: any; targets: any[] }

function influxqlPanels(d: any): Found[] {
  return panelsOf(d).filter((p) => (p.targets as any[] | undefined)?.some((t) => dsType(p, t) === 'influxdb'))
    .map((p) => ({ key: `${d.uid}: ${en(p.title)}`, panel: p, targets: (p.targets as any[]).filter((t) => dsType(p, t) === 'influxdb') }));
}
const scenesFor = (uid: string): Scene[] => (uid.startsWith('keng-device-') ? deviceScenes() : SCENES);

describe('InfluxQL dashboards: every query against InfluxDB 1.6 with seeded data', () => {
  it('has an expectation for every panel and template variable query, and a query for every expectation', () => {
    const panelKeys = INFLUXQL.flatMap((d) => influxqlPanels(d.json).map((f) => f.key)).sort();
    expect(panelKeys).toEqual(Object.keys(PANELS).sort());
    const varKeys = INFLUXQL.flatMap((d) => variables(d.json).filter((v) => v.type === 'query').map((v) => `${d.json.uid}: $${v.name}`)).sort();
    expect(varKeys).toEqual(Object.keys(VARIABLES).sort());
    expect(INFLUXQL.map((d) => d.json.uid).sort()).toEqual(['keng-broadcasts-influxql', 'keng-device-influxql', 'keng-sensors-influxql', 'keng-speakers-influxql']);
  });

  for (const { file, json: d } of INFLUXQL) {
    it(`${file}: every panel query returns the expected series`, async () => {
      for (const f of influxqlPanels(d)) {
        const withData = new Set<number>();
        const answers = new Map<string, string>();
        for (const scene of scenesFor(d.uid)) {
          for (const [i, t] of f.targets.entries()) {
            const q = render(d, t.query as string, scene);
            const reply = await run(q);
            const want = normSeries(PANELS[f.key]!(scene, i));
            const got = normSeries(answer(reply, { dropZero: /count\(\*\)/.test(q) }));
            expect(withoutTimeWhereUnexpected(got, want), `${f.key} ${t.refId} [${scene.name}]\n${q}`).toEqual(want);
            if (want.length) withData.add(i);
            answers.set(`${i} ${scene.name}`, JSON.stringify(want));
          }
        }
        if (!d.uid.startsWith('keng-device-')) {
          for (const i of f.targets.keys()) {
            const a = (s: Scene): string => answers.get(`${i} ${s.name}`)!;
            expect(a(ALL), `${f.key} ${f.targets[i].refId}: the area variable changes the answer`).not.toBe(a(COMMUNE_ALL));
            expect(a(COMMUNE_PICKED), `${f.key} ${f.targets[i].refId}: the device variable changes the answer`).not.toBe(a(COMMUNE_ALL));
          }
        }
        // Guards against expectations that are trivially empty: each target returns data for some selection.
        expect(withData.size, `${f.key}: every target returns data for some selection`).toBe(f.targets.length);
      }
    });

    it(`${file}: every template variable query returns the expected values`, async () => {
      for (const v of variables(d).filter((x) => x.type === 'query')) {
        expect(v.datasource).toEqual({ type: 'influxdb', uid: '${DS_INFLUXDB}' });
        for (const scene of SCENES) {
          const q = render(d, v.query as string, scene);
          const got = answer(await run(q)).flatMap((s) => s.rows.map((r) => r.value as string));
          const want = VARIABLES[`${d.uid}: $${v.name}`]!(scene);
          expect(got, `${d.uid} $${v.name} [${scene.name}]\n${q}`).toEqual(want);
          expect(want.length).toBeGreaterThan(0);
        }
      }
    });
  }

  it('the last-value table shows each reading\'s own time, not the time range', async () => {
    const d = INFLUXQL.find((x) => x.json.uid === 'keng-sensors-influxql')!.json;
    const f = influxqlPanels(d).find((x) => x.key.endsWith('Last value per sensor, with the time of each reading'))!;
    const byField: Record<string, unknown> = {};
    for (const [i, t] of f.targets.entries()) {
      const series = answer(await run(render(d, t.query as string, COMMUNE_ALL)));
      const mine = series.find((s) => s.tags.device_id === 'dat-dong-1');
      if (mine) byField[SENSOR_LAST[i]!] = mine.rows[0];
    }
    // Last soil moisture, temperature and battery of dat-dong-1 in the range, each at its own time;
    // the readings before and after the range are not taken.
    expect(byField).toEqual({
      soil_moisture: { time: T0 + 250 * MIN, soil_moisture: 28 },
      temperature: { time: T0 + 200 * MIN, temperature: 30 },
      battery_v: { time: T0 + 130 * MIN, battery_v: 3.75 },
    });
    // Why one query per field: two selectors in one statement return the start of the range as the time.
    const both = answer(await run(`SELECT last("soil_moisture"), last("battery_v") FROM "telemetry" WHERE "device_id" = 'dat-dong-1' AND time >= ${T0}ms AND time <= ${T1}ms`));
    expect(both[0]!.rows[0]!.time).toBe(T0);
  });

  it('spot checks: area selection, devices without an area, rain per gauge, speakers', async () => {
    const sensors = INFLUXQL.find((x) => x.json.uid === 'keng-sensors-influxql')!.json;
    const soil = influxqlPanels(sensors).find((x) => x.key.endsWith(': Soil moisture'))!.targets[0];
    const devicesIn = async (scene: Scene): Promise<string[]> =>
      answer(await run(render(sensors, soil.query as string, scene))).map((s) => s.tags.device_id!).sort();
    expect(await devicesIn(COMMUNE_ALL)).toEqual(['dat-chuyen', 'dat-dong-1', 'dat-tay-1']);
    // All also covers the other commune and a device without an area.
    expect(await devicesIn(ALL)).toEqual(['dat-7', 'dat-chuyen', 'dat-dong-1', 'dat-khong-vung', 'dat-tay-1']);

    const rain = influxqlPanels(sensors).find((x) => x.key.endsWith('Rain by area (mean per gauge)'))!.targets[0];
    const tay = answer(await run(render(sensors, rain.query as string, COMMUNE_ALL))).find((s) => s.tags.area === '00004-tay')!;
    expect(tay.rows[0]).toEqual({ time: T0, mean: 3.25 }); // (2.5 + 1) and 3 mm, averaged over two gauges

    const fleet = INFLUXQL.find((x) => x.json.uid === 'keng-speakers-influxql')!.json;
    const power = influxqlPanels(fleet).find((x) => x.key.endsWith('Power source (last report)'))!;
    const counts = async (scene: Scene): Promise<unknown[]> => Promise.all(power.targets.map(async (t) =>
      answer(await run(render(fleet, t.query as string, scene)))[0]?.rows[0]?.count ?? 0));
    // ac: loa-xa; battery: loa-dong-1 (since 185 min), loa-tay-2; solar: loa-tay-1
    expect(await counts(COMMUNE_ALL)).toEqual([1, 2, 1]);
    expect(await counts(ALL)).toEqual([2, 3, 2]);
  });
});

// ---------------------------------------------------------------------------

/** Round, square and curly brackets balance outside Flux strings and regex literals. */
function balanced(flux: string): boolean {
  const stack: string[] = [];
  const pairs: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  for (let i = 0; i < flux.length; i++) {
    const c = flux[i]!;
    if (c === '"') { for (i++; i < flux.length && flux[i] !== '"'; i++) if (flux[i] === '\\') i++; continue; }
    if (c === '/' && /[=!]~\s*$/.test(flux.slice(0, i))) { for (i++; i < flux.length && flux[i] !== '/'; i++) if (flux[i] === '\\') i++; continue; }
    if ('([{'.includes(c)) stack.push(c);
    else if (c in pairs && stack.pop() !== pairs[c]) return false;
  }
  return stack.length === 0;
}

function fluxTargets(d: any): Array<{ panel: any; target: any }> {
  return panelsOf(d).flatMap((p) => ((p.targets as any[] | undefined) ?? []).filter((t) => dsType(p, t) === 'influxdb').map((t) => ({ panel: p, target: t })));
}

describe('Flux dashboards (structure only: no InfluxDB 2 here)', () => {
  it('the four dashboards, with the same panels as their InfluxQL versions', () => {
    expect(FLUX.map((d) => d.json.uid).sort()).toEqual(['keng-broadcasts-flux', 'keng-device-flux', 'keng-sensors-flux', 'keng-speakers-flux']);
    for (const { json: d } of FLUX) {
      const twin = INFLUXQL.find((x) => x.json.uid === d.uid.replace(/-flux$/, '-influxql'))!.json;
      expect(panelsOf(d).map((p) => en(p.title))).toEqual(panelsOf(twin).map((p) => en(p.title)));
    }
  });

  for (const { file, json: d } of FLUX) {
    it(`${file}: every panel has a Flux query on the bucket variable, the time range, the measurement and the area (or device) filter`, () => {
      const defs = new Map(variables(d).map((v) => [v.name as string, v]));
      expect(defs.get('bucket')?.type).toBe('query');
      const found = fluxTargets(d);
      expect(found.length).toBeGreaterThan(3);
      for (const { panel, target } of found) {
        const q = target.query as string;
        const where = `${d.uid}: ${panel.title} ${target.refId}`;
        expect(q, where).toContain('from(bucket: "${bucket}")');
        expect(q, where).toContain('|> range(start: v.timeRangeStart, stop: v.timeRangeStop)');
        expect(q, where).toContain('r._measurement == "telemetry"');
        if (d.uid === 'keng-device-flux') {
          // One device's whole history, whichever area it was in (docs/telemetry-storage.md).
          expect(q, where).toContain('r.device_id == "${device}"');
        } else {
          expect(q, where).toContain('(if exists r.area then r.area else "") =~ /^${area:regex}$/');
        }
        expect(q, where).not.toMatch(/\bSELECT\b|\$timeFilter/);
        expect(balanced(q), `${where}: brackets balance`).toBe(true);
        // Variables: defined, and multi-value ones only in regex form inside a regex literal.
        for (const m of q.matchAll(/\$\{(\w+)(?::(\w+))?\}/g)) {
          const def = defs.get(m[1]!);
          expect(def, `${where}: \${${m[1]}} is a variable`).toBeDefined();
          if (def.multi) expect(m[2], `${where}: \${${m[1]}} uses :regex`).toBe('regex');
        }
        expect(q.replace(/\$\{\w+(?::\w+)?\}/g, ''), `${where}: no bare $variables`).not.toMatch(/\$[A-Za-z_]/);
      }
      for (const v of variables(d).filter((x) => x.type === 'query')) {
        expect(balanced(v.query as string), `${d.uid} $${v.name}`).toBe(true);
        if (v.name !== 'bucket') expect(v.query, `${d.uid} $${v.name}`).toContain('bucket: "${bucket}"');
      }
    });
  }
});

// ---------------------------------------------------------------------------

describe('every dashboard', () => {
  const all = [...INFLUXQL, ...FLUX];

  it('imports and provisions alike: no __inputs, data sources through variables, unique uids and panel ids', () => {
    expect(new Set(all.map((d) => d.json.uid)).size).toBe(all.length);
    for (const { file, json: d } of all) {
      expect(d.__inputs, file).toBeUndefined();
      expect(d.schemaVersion, file).toBeGreaterThanOrEqual(39);
      expect(d.id, file).toBeNull();
      expect(d.tags, file).toContain('keng');
      const dsVars = variables(d).filter((v) => v.type === 'datasource').map((v) => `${v.name}:${v.query}`);
      expect(dsVars, file).toContain('DS_INFLUXDB:influxdb');
      const ids = panelsOf(d).map((p) => p.id);
      expect(new Set(ids).size, `${file} panel ids`).toBe(ids.length);
      for (const p of panelsOf(d)) {
        for (const ds of [p.datasource, ...((p.targets as any[] | undefined) ?? []).map((t) => t.datasource)].filter(Boolean)) {
          expect(['${DS_INFLUXDB}', '${DS_PROMETHEUS}'], `${file}: ${p.title}`).toContain(ds.uid);
          if (ds.uid === '${DS_PROMETHEUS}') expect(dsVars, file).toContain('DS_PROMETHEUS:prometheus');
        }
      }
    }
  });

  it('Prometheus panels name only metrics Keng registers', () => {
    const src = readdirSync(path.join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts')).map((f) => readFileSync(path.join(ROOT, 'src', f), 'utf8')).join('\n');
    let seen = 0;
    for (const { file, json: d } of all) {
      for (const p of panelsOf(d)) {
        for (const t of ((p.targets as any[] | undefined) ?? []).filter((x) => dsType(p, x) === 'prometheus')) {
          for (const m of (t.expr as string).matchAll(/\bkeng_\w+/g)) {
            const name = m[0].replace(/_(bucket|sum|count)$/, '');
            expect(src, `${file}: ${p.title}: ${name}`).toContain(`'${name}'`);
            seen++;
          }
        }
      }
    }
    expect(seen).toBeGreaterThan(5);
  });
});
