/** Shared setup: Keng (and InfluxDB) started, bench devices registered. */
import { KengApi, registerSimDevices, simDeviceIds, type SimCredential } from '../../src/sim/index.js';
import { startInfluxd, type Influxd } from '../../tools/influxd.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import type { BenchStore } from './args.js';
import { clusterNodeEnv, startKeng, type KengProcess } from './keng-server.js';

export const BENCH_AREA = { code: 'bench', name: 'Benchmark devices', level: 'province' as const };
export const INFLUX_DB = 'keng';

export interface Setup {
  keng: KengProcess;
  influx: Influxd | null;
  /** Cluster mode (`--store postgres`): its database and bus. */
  cluster: { pg: PostgresServer; redis: RedisServer } | null;
  api: KengApi;
  devices: SimCredential[];
  registerMs: number;
  startMs: number;
}

export interface SetUpOptions {
  store: BenchStore; devices: number; keep: boolean; rateLimit: number; log: (s: string) => void;
  /** A node of a cluster whose database and bus the caller owns (bench/cluster.ts): not stopped by tearDown. */
  node?: { databaseUrl: string; redisUrl: string; nodeId: string };
  /** Device id prefix (default `bench-`): nodes sharing one database need distinct devices. */
  prefix?: string;
}

export async function setUp(o: SetUpOptions): Promise<Setup> {
  let influx: Influxd | null = null;
  const env: Record<string, string> = {
    KENG_MQTT_RATE_LIMIT_PER_SEC: String(o.rateLimit),
    KENG_MQTT_RATE_LIMIT_BURST: String(Math.round(o.rateLimit)),
  };
  if (o.store === 'influxdb') {
    influx = await startInfluxd({ keepData: o.keep });
    await influx.queryOrThrow(`CREATE DATABASE "${INFLUX_DB}"`);
    o.log(`influxd ${influx.url} (pid ${influx.pid})`);
    Object.assign(env, {
      KENG_TELEMETRY_STORE: 'influxdb', KENG_INFLUX_API: 'v1', KENG_INFLUX_URL: influx.url, KENG_INFLUX_DATABASE: INFLUX_DB,
    });
  } else {
    env.KENG_TELEMETRY_STORE = 'embedded';
  }
  let cluster: Setup['cluster'] = null;
  if (o.store === 'postgres') {
    // Cluster mode: `embedded` there means the cluster database (docs/cluster.md).
    cluster = { pg: await startPostgres(), redis: await startRedis() };
    o.log(`postgres ${cluster.pg.url} (pid ${cluster.pg.pid}), redis ${cluster.redis.url}`);
    Object.assign(env, clusterNodeEnv(cluster.pg.url, cluster.redis.url, 'bench'));
  }
  if (o.node) Object.assign(env, clusterNodeEnv(o.node.databaseUrl, o.node.redisUrl, o.node.nodeId));
  const t0 = performance.now();
  const keng = await startKeng({ env, keepData: o.keep });
  const startMs = performance.now() - t0;
  o.log(`keng pid ${keng.pid}: ${keng.httpUrl} ${keng.mqttUrl} data ${keng.dataDir} (ready in ${startMs.toFixed(0)} ms)`);
  const api = new KengApi(keng.httpUrl, keng.adminToken);
  await api.ensureArea(BENCH_AREA);
  const t1 = performance.now();
  let lastShown = 0;
  const reg = await registerSimDevices(api, simDeviceIds(o.prefix ?? 'bench-', o.devices), {
    area: BENCH_AREA.code, profileOf: () => 'soil', concurrency: 32,
    onProgress: (done, total) => {
      if (total >= 1000 && (done - lastShown >= 1000 || done === total)) { lastShown = done; o.log(`registered ${done}/${total}`); }
    },
  });
  const registerMs = performance.now() - t1;
  o.log(`registered ${reg.devices.length} devices in ${(registerMs / 1000).toFixed(1)} s`);
  return { keng, influx, cluster, api, devices: reg.devices, registerMs, startMs };
}

/** Stops Keng (timed: shutdown flushes) and InfluxDB. */
export async function tearDown(s: Setup): Promise<{ stopMs: number; exitCode: number | null }> {
  const t0 = performance.now();
  const exitCode = await s.keng.stop();
  const stopMs = performance.now() - t0;
  await s.influx?.stop();
  await s.cluster?.pg.destroy();
  await s.cluster?.redis.destroy();
  return { stopMs, exitCode };
}
