/** Command-line flags of bench/ingest.ts. */
import { parseArgs } from 'node:util';
import { DEFAULT_SHAPES, parseShapes, type Shape } from './shapes.js';

/** Where Keng keeps readings in a run: `postgres` is cluster mode's store (a throw-away PostgreSQL and Redis). */
export type BenchStore = 'embedded' | 'influxdb' | 'postgres';

export interface BenchArgs {
  /** Devices × messages in flight per device, each run against Keng (and the baseline). */
  shapes: Shape[];
  /** Runs of every shape (the order of Keng and baseline alternates). */
  rounds: number;
  /** Also run each shape against a bare aedes broker (bench/bare-aedes.ts). */
  baseline: boolean;
  durationSec: number;
  warmupSec: number;
  stores: BenchStore[];
  /** >0: idle-connections mode with this many devices. */
  idle: number;
  rampPerSec: number;
  workers: number;
  keep: boolean;
  rateLimit: number;
  /** Load generator: `raw` (lean MQTT client, bench/lib/raw-device.ts) or `mqttjs` (src/sim SensorSim). */
  generator: 'raw' | 'mqttjs';
}

export const USAGE = `usage: node dist/bench/ingest.js [--shapes 200x1,20x20,100x64 | --devices N --window W]
                               [--rounds 1] [--baseline aedes|none] [--duration 20] [--warmup 3]
                               [--store embedded|influxdb|postgres|both] [--workers 1] [--ramp 500]
                               [--generator raw|mqttjs]
       node dist/bench/ingest.js --idle 5000 [--ramp 1000]
  --shapes       devices x messages in flight per device, comma-separated (default 200x1,20x20,100x64)
  --devices/--window  one shape instead (a missing one defaults to 100 / 64)
  --baseline     aedes (default): run each shape against a bare aedes broker too, and print the ratio
  --keep         keep the temporary data directories
  --rate-limit   per-device message rate given to the server (default: effectively unlimited)
  --generator    raw (default: lean MQTT 3.1.1 client, pipelined frames) or mqttjs (the mqtt.js simulator)`;

export function parseBenchArgs(argv: string[]): BenchArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      shapes: { type: 'string' },
      devices: { type: 'string' },
      window: { type: 'string' },
      rounds: { type: 'string', default: '1' },
      baseline: { type: 'string', default: 'aedes' },
      duration: { type: 'string', default: '20' },
      warmup: { type: 'string', default: '3' },
      store: { type: 'string', default: 'embedded' },
      idle: { type: 'string', default: '0' },
      ramp: { type: 'string' },
      workers: { type: 'string', default: '1' },
      keep: { type: 'boolean', default: false },
      'rate-limit': { type: 'string', default: '1000000' },
      generator: { type: 'string', default: 'raw' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) throw new UsageError('');
  const idle = num('idle', values.idle, 0, 100_000);
  const store = values.store;
  const generator = values.generator;
  if (generator !== 'raw' && generator !== 'mqttjs') throw new UsageError(`--generator must be raw or mqttjs (got "${generator}")`);
  if (!['embedded', 'influxdb', 'postgres', 'both'].includes(store)) throw new UsageError(`--store must be embedded, influxdb, postgres or both (got "${store}")`);
  if (values.baseline !== 'aedes' && values.baseline !== 'none') throw new UsageError(`--baseline must be aedes or none (got "${values.baseline}")`);
  let shapes: Shape[];
  if (values.devices !== undefined || values.window !== undefined) {
    if (values.shapes !== undefined) throw new UsageError('--shapes and --devices/--window exclude each other');
    shapes = [{ devices: num('devices', values.devices ?? '100', 1, 100_000), window: num('window', values.window ?? '64', 1, 65_535) }];
  } else if (values.shapes !== undefined) {
    try { shapes = parseShapes(values.shapes); } catch (err) { throw new UsageError(`--shapes: ${(err as Error).message}`); }
    for (const sh of shapes) { num('devices', String(sh.devices), 1, 100_000); num('window', String(sh.window), 1, 65_535); }
  } else {
    shapes = DEFAULT_SHAPES;
  }
  return {
    shapes,
    rounds: num('rounds', values.rounds, 1, 100),
    baseline: values.baseline === 'aedes',
    durationSec: num('duration', values.duration, 1, 3600),
    warmupSec: num('warmup', values.warmup, 0, 600),
    stores: store === 'both' ? ['embedded', 'influxdb'] : [store as BenchStore],
    idle,
    rampPerSec: num('ramp', values.ramp ?? (idle ? '1000' : '500'), 1, 1_000_000),
    workers: num('workers', values.workers, 1, 16),
    keep: values.keep,
    rateLimit: num('rate-limit', values['rate-limit'], 1, 1e9),
    generator,
  };
}

export class UsageError extends Error {}

function num(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number from ${min} to ${max} (got "${v}")`);
  return n;
}
