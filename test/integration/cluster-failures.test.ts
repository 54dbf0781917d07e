/**
 * Cluster mode under failures, with real parts only: two Keng processes
 * (dist/src/main.js) on one PostgreSQL database and one Redis, behind HAProxy
 * (send-proxy-v2, /readyz checks every 200 ms, on-marked-down
 * shutdown-sessions), and 200 devices publishing QoS 1 through HAProxy that
 * resend whatever got no PUBACK (test/helpers/cluster-fleet.ts).
 *
 * What is asserted is safety, not speed: every PUBACKed reading is in
 * PostgreSQL exactly once with the value sent, nothing else is stored, and
 * every device is connected at the end. Timings are printed (docs/cluster.md
 * "Tested failures") and only bounded, generously, for a loaded 2-core machine.
 *
 *  1. The node with the most devices SIGKILLed mid-ingest.
 *  2. A rolling restart (SIGTERM, start again, wait for UP; then the other).
 *  3. Node 1 cut from PostgreSQL (a blackhole that stops forwarding).
 *  4. Node 1 cut from Redis.
 *
 * Needs a build (npx tsc -p tsconfig.json).
 */
import type { Socket } from 'socket.io-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startBlackhole, type Blackhole } from '../../tools/blackhole.js';
import type { Haproxy } from '../../tools/haproxy.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { startRedis, type RedisServer } from '../../tools/redis.js';
import { alive, auditStored, Cluster, liveFeed, metric, pct, readyz, removeClusterDirs, seedCluster, sleep, within, type Seed } from '../helpers/cluster.js';
import { Fleet } from '../helpers/cluster-fleet.js';
import { proxyV2 } from '../helpers/proxy-header.js';

const DEVICES = Array.from({ length: 200 }, (_, i) => `fd-${String(i).padStart(3, '0')}`);
/** Not in the fleet: they connect around HAProxy to one chosen node (or through it to the emptier one). */
const PROBE = 'probe-1';
const PROBE2 = 'probe-2';

let pg: PostgresServer;
let redis: RedisServer;
let seed: Seed;
let fleetSecrets: Record<string, string> = {};
let dbSeq = 0;

let cluster: Cluster | null = null;
let fleet: Fleet | null = null;
const holes: Blackhole[] = [];
const sockets: Socket[] = [];
const extraFleets: Fleet[] = [];

beforeAll(async () => {
  [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
  seed = await seedCluster([...DEVICES, PROBE, PROBE2]);
  fleetSecrets = Object.fromEntries(DEVICES.map((id) => [id, seed.secrets[id]!]));
}, 300_000);

afterEach(async () => {
  for (const s of sockets.splice(0)) s.disconnect();
  await fleet?.close();
  for (const f of extraFleets.splice(0)) await f.close();
  await cluster?.destroy();
  for (const h of holes.splice(0)) await h.close();
  fleet = null;
  cluster = null;
});

afterAll(async () => {
  await redis?.destroy();
  await pg?.destroy();
  removeClusterDirs();
});

/** A fresh database per test, two nodes, HAProxy over them, the fleet connected (about half on each node). */
async function setup(o: { n1Database?: (url: string) => Promise<string>; n1Redis?: () => Promise<string> } = {}): Promise<{ c: Cluster; hp: Haproxy; f: Fleet; db: string }> {
  const db = `failures_${++dbSeq}`;
  const url = await pg.createDatabase(db);
  const c = new Cluster(seed, url, redis.url);
  cluster = c;
  await c.start('n1', { databaseUrl: o.n1Database ? await o.n1Database(url) : undefined, redisUrl: o.n1Redis ? await o.n1Redis() : undefined });
  await c.start('n2');
  const hp = await c.haproxy();
  const f = new Fleet(fleetSecrets, { port: hp.mqttPort, periodMs: 500, window: 10, t0: Date.now() - 86_400_000 });
  fleet = f;
  await f.connect();
  const per = await c.connections();
  expect(per.n1! + per.n2!).toBe(DEVICES.length);
  expect(Math.min(per.n1!, per.n2!)).toBeGreaterThan(DEVICES.length / 4); // leastconn spread them
  return { c, hp, f, db };
}

/** The end of every scenario: all produced acknowledged, all stored once, nothing else stored, every device connected. */
async function assertSafe(label: string, c: Cluster, f: Fleet, db: string, others: Fleet[] = []): Promise<void> {
  await f.settle(180_000);
  for (const o of others) await o.settle(60_000);
  const a = await auditStored(pg, db, [f, ...others]);
  expect(a.missing.slice(0, 10)).toEqual([]);
  expect(a.multiple).toBe(0);
  expect(a.unexpected).toBe(0);
  const produced = [f, ...others].reduce((n, x) => n + x.produced(), 0);
  expect(a.acked).toBe(produced);
  expect(a.rows).toBe(produced * 2);
  expect(f.connected()).toBe(DEVICES.length);
  const devices = DEVICES.length + others.reduce((n, x) => n + x.devices.length, 0);
  await within(`${label}: the nodes count every device`, 30_000, async () => Object.values(await c.connections()).reduce((x, y) => x + y, 0) === devices);
  console.log(`[${label}] ${a.acked} messages (${a.rows} readings) acknowledged, each stored exactly once (${f.resent()} sent again after a lost connection); ${f.connected()}/${DEVICES.length} devices connected`);
}

function moveStats(f: Fleet): string {
  const m = f.moves();
  return `${m.length} reconnections, p50 ${pct(m, 0.5)} ms, p90 ${pct(m, 0.9)} ms, max ${m.length ? Math.max(...m) : NaN} ms`;
}

describe('cluster mode under failures (2 nodes, PostgreSQL, Redis, HAProxy, 200 devices)', () => {
  it('1. the node with the most devices SIGKILLed mid-ingest: every PUBACKed reading stored once, every device on the survivor', async () => {
    const { c, hp, f, db } = await setup();
    f.startProducing();
    await within('ingest under way', 60_000, () => f.acks >= 2_000);
    const per = await c.connections();
    const victim = per.n1! >= per.n2! ? 'n1' : 'n2';
    const survivor = victim === 'n1' ? 'n2' : 'n1';
    const v = c.node(victim).k;
    const ackedBefore = f.ackedTotal();
    const killedAt = Date.now();
    v.proc.kill('SIGKILL');
    expect((await v.exited).signal).toBe('SIGKILL');
    await hp.waitForServer(victim, 'DOWN', 30_000);
    const allOnSurvivor = await within('every device on the survivor', 90_000, async () =>
      f.connected() === DEVICES.length && (await metric(c.node(survivor).k, 'keng_mqtt_connections')) === DEVICES.length, 100);
    console.log(`[1] SIGKILL ${victim} (${per[victim]} devices, ${ackedBefore} messages acknowledged so far); all ${DEVICES.length} devices on ${survivor} ${Date.now() - killedAt} ms later (${allOnSurvivor} ms of polling); moves: ${moveStats(f)}`);
    await sleep(3_000); // the devices publish on the survivor
    await assertSafe('1', c, f, db);
    expect(f.ackedTotal()).toBeGreaterThan(ackedBefore);
  }, 420_000);

  it('2. rolling restart (SIGTERM n1, start, UP; then n2): every PUBACKed reading stored once, every device connected', async () => {
    const { c, hp, f, db } = await setup();
    f.startProducing();
    await within('ingest under way', 60_000, () => f.acks >= 1_000);
    const steps: string[] = [];
    for (const name of ['n1', 'n2']) {
      const other = name === 'n1' ? 'n2' : 'n1';
      const n = c.node(name);
      const onIt = (await c.connections())[name]!;
      const t = Date.now();
      n.k.proc.kill('SIGTERM');
      expect((await n.k.exited).code).toBe(0);
      const stopped = Date.now() - t;
      await hp.waitForServer(name, 'DOWN', 30_000);
      await within(`every device on ${other}`, 90_000, async () =>
        f.connected() === DEVICES.length && (await metric(c.node(other).k, 'keng_mqtt_connections')) === DEVICES.length);
      const moved = Date.now() - t;
      await c.restart(name);
      await hp.waitForServer(name, 'UP', 60_000);
      steps.push(`${name}: ${onIt} devices, stopped in ${stopped} ms, all on ${other} after ${moved} ms, UP again after ${Date.now() - t} ms`);
      await sleep(2_000); // the devices publish on the other node meanwhile
    }
    console.log(`[2] rolling restart: ${steps.join('; ')}; moves: ${moveStats(f)}`);
    // n2 went last: everything is on the restarted n1, which ingests.
    expect(await metric(c.node('n1').k, 'keng_readings_accepted_total')).toBeGreaterThan(0);
    await assertSafe('2', c, f, db);
  }, 600_000);

  it('3. node 1 cut from PostgreSQL: no PUBACK without a commit, /readyz 503 quickly, devices move to node 2; healed: ready again', async () => {
    let hole!: Blackhole;
    const { c, hp, f, db } = await setup({
      n1Database: async (url) => {
        const u = new URL(url);
        hole = await startBlackhole({ host: u.hostname, port: Number(u.port) });
        holes.push(hole);
        u.port = String(hole.port);
        return u.toString();
      },
    });
    const n1 = c.node('n1').k;
    f.startProducing();
    await within('ingest under way', 60_000, () => f.acks >= 1_500);
    const onN1 = (await c.connections()).n1!;
    hole.pause();
    const cut = Date.now();
    const notReadyMs = await within('n1 /readyz 503', 60_000, async () => (await readyz(n1, 10_000)).status === 503, 50);
    await hp.waitForServer('n1', 'DOWN', 60_000);
    const downMs = Date.now() - cut;
    await within('every device on n2', 90_000, async () =>
      f.connected() === DEVICES.length && (await metric(c.node('n2').k, 'keng_mqtt_connections')) === DEVICES.length);
    const movedMs = Date.now() - cut;
    const r = await readyz(n1, 10_000);
    expect(r.status).toBe(503);
    expect(r.checks.telemetry?.ok).toBe(false);
    const acceptedAtDown = await metric(n1, 'keng_readings_accepted_total');
    // Still partitioned: whatever was acknowledged so far (by either node) is already in PostgreSQL.
    await sleep(5_000);
    const early = await auditStored(pg, db, [f]);
    expect(early.missing.slice(0, 10)).toEqual([]);
    expect(early.multiple).toBe(0);
    // Past the 30 s statement / idle-in-transaction timeouts: n1's hung commits fail (no PUBACK), it stays
    // not ready (every check), alive, and commits nothing.
    const statuses: number[] = [];
    while (Date.now() - cut < 40_000) { statuses.push((await readyz(n1, 10_000)).status); await sleep(1_000); }
    expect(statuses.filter((st) => st !== 503)).toEqual([]);
    const late = await auditStored(pg, db, [f]);
    expect(late.missing.slice(0, 10)).toEqual([]);
    expect(late.multiple).toBe(0);
    expect(alive(n1)).toBe(true);
    expect(await metric(n1, 'keng_readings_accepted_total')).toBe(acceptedAtDown);
    expect(n1.output()).toMatch(/telemetry batch write failed; messages are not acknowledged/);
    const partitionMs = Date.now() - cut;
    hole.heal();
    const healed = Date.now();
    const readyAgainMs = await within('n1 /readyz 200 after heal', 60_000, async () => (await readyz(n1, 10_000)).status === 200, 50);
    await hp.waitForServer('n1', 'UP', 60_000);
    const upMs = Date.now() - healed;
    // n1 acknowledges again: a new device goes to it (leastconn: it has none) and gets its PUBACKs.
    const probe = new Fleet({ [PROBE]: seed.secrets[PROBE]! }, { port: hp.mqttPort, periodMs: 200, window: 5, t0: f.opts.t0 });
    extraFleets.push(probe);
    await probe.connect(0, 30_000);
    expect((await c.connections()).n1).toBe(1);
    for (let i = 0; i < 10; i++) probe.devices[0]!.produce();
    await probe.settle(60_000);
    console.log(`[3] PostgreSQL cut for n1 (${onN1} devices): /readyz 503 after ${notReadyMs} ms, HAProxy DOWN after ${downMs} ms, all devices on n2 after ${movedMs} ms; `
      + `${late.acked} messages acknowledged by the end of the cut, all stored; healed after ${partitionMs} ms: /readyz 200 ${readyAgainMs} ms later, UP after ${upMs} ms; moves: ${moveStats(f)}`);
    expect(notReadyMs).toBeLessThan(20_000); // well under the 30 s statement timeout
    await assertSafe('3', c, f, db, [probe]);
  }, 600_000);

  it('4. node 1 cut from Redis: ingest and PUBACKs go on, /readyz stays 200 (bus degraded), the cross-node feed recovers after heal', async () => {
    let hole!: Blackhole;
    const { c, hp, f, db } = await setup({
      n1Redis: async () => {
        hole = await startBlackhole({ host: '127.0.0.1', port: redis.port });
        holes.push(hole);
        return `redis://127.0.0.1:${hole.port}`;
      },
    });
    const [n1, n2] = [c.node('n1'), c.node('n2')];
    // Probes around HAProxy, each on a chosen node; each node's feed watches the other node's probe.
    const onN1 = new Fleet({ [PROBE]: seed.secrets[PROBE]! }, { port: n1.mqttPort, header: proxyV2('127.0.0.1'), periodMs: 200, window: 5, t0: f.opts.t0 });
    const onN2 = new Fleet({ [PROBE2]: seed.secrets[PROBE2]! }, { port: n2.mqttPort, header: proxyV2('127.0.0.1'), periodMs: 200, window: 5, t0: f.opts.t0 });
    extraFleets.push(onN1, onN2);
    const viewer = await c.viewerToken();
    const feedOnN2 = await liveFeed(n2.k, viewer, [PROBE], sockets);
    const feedOnN1 = await liveFeed(n1.k, viewer, [PROBE2], sockets);
    await onN1.connect(0, 30_000);
    await onN2.connect(0, 30_000);
    f.startProducing();
    onN1.startProducing();
    onN2.startProducing();
    await within('the feeds cross before the cut', 60_000, () => feedOnN2.size > 5 && feedOnN1.size > 5);

    hole.pause();
    const degradedMs = await within('n1 bus degraded', 60_000, async () => (await readyz(n1.k)).checks.liveBus?.detail?.degraded === true, 100);
    const acksAtCut = onN1.acks;
    const fleetAcksAtCut = f.acks;
    const lastN1Seq = onN1.devices[0]!.produced;
    const lastN2Seq = onN2.devices[0]!.produced;
    const statuses: number[] = [];
    const until = Date.now() + 8_000;
    while (Date.now() < until) { statuses.push((await readyz(n1.k)).status); await sleep(250); }
    expect(statuses.every((st) => st === 200)).toBe(true);
    expect((await hp.servers()).find((x) => x.backend === 'keng_mqtt' && x.name === 'n1')?.status).toBe('UP');
    expect(onN1.acks - acksAtCut).toBeGreaterThan(10); // n1 kept acknowledging (5 messages/s)
    expect(f.acks - fleetAcksAtCut).toBeGreaterThan(1_000);
    expect(f.moves()).toEqual([]); // nobody was moved off n1
    const acksDuring = onN1.acks - acksAtCut;

    hole.heal();
    const lastN1AtHeal = onN1.devices[0]!.produced;
    const lastN2AtHeal = onN2.devices[0]!.produced;
    const n1ToN2Ms = await within('n2 sees n1\'s new readings', 60_000, () => [...feedOnN2].some((v) => v > lastN1AtHeal), 50);
    const n2ToN1Ms = await within('n1 sees n2\'s new readings', 60_000, () => [...feedOnN1].some((v) => v > lastN2AtHeal), 50);
    await within('n1 bus up again', 30_000, async () => (await readyz(n1.k)).checks.liveBus?.detail?.degraded === false);
    console.log(`[4] Redis cut for n1: bus degraded after ${degradedMs} ms, /readyz 200 throughout (${statuses.length} checks), n1 acknowledged ${acksDuring} probe messages `
      + `during the cut; after heal the feed crossed again n1→n2 in ${n1ToN2Ms} ms, n2→n1 in ${n2ToN1Ms} ms; `
      + `(readings up to seq ${lastN1Seq}/${lastN2Seq} crossed before the cut)`);
    await assertSafe('4', c, f, db, [onN1, onN2]);
  }, 600_000);
});
