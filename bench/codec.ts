/**
 * Micro-benchmark of the telemetry codec (src/ingest/codec.ts), which runs
 * once per telemetry message. Build and run:
 *   npm run build && node dist/bench/codec.js [seconds-per-case]
 */
import { decodeTelemetry, type TelemetryLimits } from '../src/ingest/codec.js';

const limits: TelemetryLimits = { futureToleranceMs: 300_000, retentionDays: 365 };
const now = Date.now();

const cases: [string, Buffer][] = [
  ['flat, 4 fields', Buffer.from(JSON.stringify({ soil_moisture: 31.5, temperature: 24.1, humidity: 80, battery_v: 3.71 }))],
  ['{ts, values}, 4 fields', Buffer.from(JSON.stringify({ ts: now - 1000, values: { soil_moisture: 31.5, temperature: 24.1, humidity: 80, battery_v: 3.71 } }))],
  ['{ts: ISO, values}, 4 fields', Buffer.from(JSON.stringify({ ts: new Date(now - 1000).toISOString(), values: { soil_moisture: 31.5, temperature: 24.1, humidity: 80, playing: true } }))],
  ['backlog, 100 records x 4 fields', Buffer.from(JSON.stringify(Array.from({ length: 100 }, (_, i) => ({ ts: now - (100 - i) * 60_000, values: { soil_moisture: 31.5, temperature: 24.1, humidity: 80, battery_v: 3.71 } }))))],
  ['refused: bad field name', Buffer.from(JSON.stringify({ Soil: 31.5, temperature: 24.1, humidity: 80, battery_v: 3.71 }))],
  ['refused: 100k nested arrays', Buffer.from('['.repeat(100_000) + ']'.repeat(100_000))],
];

const seconds = Number(process.argv[2] ?? 1);
for (const [name, payload] of cases) {
  for (let i = 0; i < 20_000; i++) decodeTelemetry(payload, now, limits); // warm-up
  let n = 0;
  let sink = 0;
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  while (performance.now() < until) {
    for (let i = 0; i < 1000; i++) {
      const r = decodeTelemetry(payload, now, limits);
      sink += r.ok ? r.readings : 1;
    }
    n += 1000;
  }
  const s = (performance.now() - t0) / 1000;
  const perSec = n / s;
  console.log(`${name.padEnd(34)} ${String(payload.length).padStart(7)} B  ${Math.round(perSec).toLocaleString('en').padStart(12)} decodes/s  ${(1e6 / perSec).toFixed(2).padStart(8)} µs/decode${sink < 0 ? '' : ''}`);
}
