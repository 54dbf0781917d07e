/**
 * The cluster live bus (src/cluster) on a throw-away redis-server: the entry
 * codec's cost, then two adapters (node "a" publishing committed batches at a
 * steady rate, node "b" reading them) in one process. Build and run:
 *   npm run build && node dist/bench/cluster-bus.js [readings-per-s] [readings-per-batch] [seconds]
 */
import { decodeReadings, encodeReadings } from '../src/cluster/codec.js';
import { RedisClusterBus } from '../src/cluster/index.js';
import { Metrics, createLogger, systemClock, type TelemetryEvent } from '../src/core/index.js';
import { startRedis } from '../tools/redis.js';

const rate = Number(process.argv[2] ?? 10_000);
const perBatch = Number(process.argv[3] ?? 200);
const seconds = Number(process.argv[4] ?? 5);

const readings = (n: number, t0: number): TelemetryEvent[] => Array.from({ length: n }, (_, i) => ({
  deviceId: `soil-${i % 50}`, area: 'va1', kind: 'sensor', ts: t0 + i,
  values: { soil_moisture: 31.5 + i, temperature: 24.1, battery: 3.71, pump_on: i % 2 === 0 },
}));

const sample = readings(perBatch, Date.now());
let body = '';
let t = performance.now();
for (let i = 0; i < 1000; i++) body = encodeReadings(sample);
const encMs = (performance.now() - t) / 1000;
t = performance.now();
for (let i = 0; i < 1000; i++) decodeReadings(body);
const decMs = (performance.now() - t) / 1000;
console.log(`codec, ${perBatch} readings x 4 fields: ${body.length} B (${(body.length / perBatch).toFixed(0)} B/reading, plain JSON ${(JSON.stringify(sample).length / perBatch).toFixed(0)}); encode ${encMs.toFixed(3)} ms, decode ${decMs.toFixed(3)} ms`);

const redis = await startRedis();
const logger = createLogger('warn');
let received = 0;
const delays: number[] = [];
const node = (nodeId: string, remote: (e: readonly TelemetryEvent[]) => void): RedisClusterBus =>
  new RedisClusterBus({ url: redis.url, nodeId, remote, logger, clock: systemClock, metrics: new Metrics({ defaultMetrics: false }) });
const a = node('a', () => undefined);
const b = node('b', (e) => { received += e.length; delays.push(Date.now() - e[0]!.ts); });
await a.start();
await b.start();
await new Promise((r) => setTimeout(r, 1000));

let sent = 0;
const cpu0 = process.cpuUsage();
const t0 = Date.now();
await new Promise<void>((resolve) => {
  const timer = setInterval(() => {
    a.publish(readings(perBatch, Date.now()));
    sent += perBatch;
    if (Date.now() - t0 >= seconds * 1000) { clearInterval(timer); resolve(); }
  }, 1000 / (rate / perBatch));
});
await new Promise((r) => setTimeout(r, 1500));
const cpu = process.cpuUsage(cpu0);
delays.sort((x, y) => x - y);
const pct = (p: number): number => delays[Math.min(delays.length - 1, Math.floor(delays.length * p))] ?? NaN;
console.log(`${rate} readings/s in batches of ${perBatch}, ${seconds} s: sent ${sent}, received ${received}; delay p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms; `
  + `CPU of this process (both nodes and the generator) ${((cpu.user + cpu.system) / 1000 / (Date.now() - t0) * 100).toFixed(0)}%`);
await a.stop();
await b.stop();
await redis.destroy();
