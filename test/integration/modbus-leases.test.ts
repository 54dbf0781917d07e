/**
 * Modbus line leases (src/modbus/leases.ts) with several nodes' claim loops on
 * one real PostgreSQL 15, each through its own connection pool, with short
 * test leases. A sampler checks every 5 ms that no line is ever allowed to
 * two nodes at once (the gate the poller asks before every request), while
 * lines spread, a node is cut from PostgreSQL (it stops renewing), a node
 * joins, and a lease is taken from under a node.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { createLogger } from '../../src/core/logger.js';
import { ModbusLineLeases, type LiveNodes } from '../../src/modbus/index.js';
import type { ModbusTransport } from '../../src/modbus/types.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { Registry } from 'prom-client';
import { freshStateDatabase, stopStatePostgres } from '../helpers/state-dialects.js';

const LEASE_MS = 1500;
const PERIOD_MS = 250;
const MARGIN_MS = 400;
const logger = createLogger('silent');

const tcp = (i: number): ModbusTransport => ({ type: 'modbus-tcp', host: '10.0.0.' + i, port: 502, unitId: 1 });
const lines = (n: number): Map<string, ModbusTransport> => new Map(Array.from({ length: n }, (_, i) => [`tcp:10.0.0.${i + 1}:502`, tcp(i + 1)]));

interface Node { id: string; db: Db<unknown>; leases: ModbusLineLeases; registry: Registry; drains: number }

/** The cluster's live nodes as the node registry would give them (the test says who is alive). */
class TestLiveNodes implements LiveNodes {
  readonly ids = new Set<string>();
  async liveNodeIds(): Promise<string[]> { return [...this.ids]; }
}

let url: string;
const nodes: Node[] = [];
const live = new TestLiveNodes();
const overlaps: string[] = [];
let sampler: NodeJS.Timeout | undefined;
/** Most lines one node was giving up at one moment. */
let maxReleasing = 0;

async function startNode(id: string, want: Map<string, ModbusTransport>, extra: { portExists?: (p: string) => boolean } = {}): Promise<Node> {
  const db = openPgDb(url);
  const registry = new Registry();
  const leases = new ModbusLineLeases({
    db, nodeId: id, liveNodes: live, logger, metrics: { registry },
    options: { leaseMs: LEASE_MS, claimPeriodMs: PERIOD_MS, safetyMarginMs: MARGIN_MS, ...extra },
  });
  const n: Node = { id, db, leases, registry, drains: 0 };
  // A poll under way takes up to 100 ms to finish when the line is given up.
  leases.attach({ gained: () => undefined, lost: () => undefined, drain: async () => { n.drains++; await new Promise((r) => setTimeout(r, 100)); } });
  live.ids.add(id);
  await leases.start();
  leases.want(want);
  nodes.push(n);
  return n;
}

function startSampler(keys: string[]): void {
  sampler = setInterval(() => {
    for (const k of keys) {
      const on = nodes.filter((n) => n.leases.mayContinue(k)).map((n) => n.id);
      if (on.length > 1) overlaps.push(`${k}: ${on.join(',')}`);
    }
    for (const n of nodes) maxReleasing = Math.max(maxReleasing, keys.filter((k) => n.leases.mayContinue(k) && !n.leases.mayStart(k)).length);
  }, 5);
}

async function until(what: string, ms: number, fn: () => boolean | Promise<boolean>): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - t0;
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Lines per node, as the nodes themselves see it. */
const counts = (ns: Node[]): number[] => ns.map((n) => n.leases.heldLines().length);
const balanced = (ns: Node[], total: number): boolean => {
  const c = counts(ns);
  return c.reduce((a, b) => a + b, 0) === total && Math.max(...c) - Math.min(...c) <= 1;
};

/** No line on its way from one node to another (given up by one, not yet claimed by the other). */
const settled = (ns: Node[]): boolean => ns.every((n) => n.leases.heldLines().every((k) => n.leases.mayStart(k)));

async function metricValue(n: Node, name: string, label?: string): Promise<number> {
  const m = await n.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).filter((v) => !label || Object.values(v.labels).includes(label)).reduce((a, v) => a + v.value, 0);
}

afterEach(async () => {
  if (sampler) clearInterval(sampler);
  for (const n of nodes.splice(0)) {
    await n.leases.stop().catch(() => undefined);
    await n.db.close().catch(() => undefined);
  }
  live.ids.clear();
  overlaps.length = 0;
  maxReleasing = 0;
});
afterAll(stopStatePostgres);

describe('modbus line leases on PostgreSQL', () => {
  it('spreads lines fairly, takes over a dead node\'s lines after its lease, and gives a joining node its share gradually', async () => {
    url = await freshStateDatabase();
    const want = lines(7);
    startSampler([...want.keys()]);
    const [a, b, c] = [await startNode('a', want), await startNode('b', want), await startNode('c', want)];
    await until('7 lines spread over 3 nodes', 20_000, () => balanced([a, b, c], 7) && settled([a, b, c]));

    // In the database: one live lease per line, each the holder the node itself believes in.
    const check = openPgDb(url);
    const rows = (await sql<{ line_key: string; node_id: string }>`SELECT line_key, node_id FROM modbus_line_leases ORDER BY line_key`.execute(check.kysely)).rows;
    expect(rows.map((r) => r.line_key)).toEqual([...want.keys()].sort());
    for (const r of rows) expect(nodes.filter((n) => n.leases.heldLines().includes(r.line_key)).map((n) => n.id)).toEqual([r.node_id]);

    // c is cut from PostgreSQL: it can no longer renew. Its lines stop on c before its leases expire, and a and b take them.
    // Leases c lost before the cut (a renewal late on a loaded machine) are not this cut's.
    const lostBefore = await metricValue(c, 'keng_modbus_line_leases_lost_total', 'expired');
    const cLines = c.leases.heldLines();
    expect(cLines.length).toBeGreaterThan(0);
    live.ids.delete('c');
    const cut = Date.now();
    await c.db.close();
    const stoppedOnC = await until('c stops polling its lines', 10_000, () => cLines.every((k) => !c.leases.mayContinue(k)));
    const takenOver = await until('a and b hold all 7 lines', 20_000, () => counts([a, b]).reduce((x, y) => x + y, 0) === 7);
    console.log(`[leases] c cut: its ${cLines.length} lines stopped on c after ${stoppedOnC} ms, taken over ${stoppedOnC + takenOver} ms after the cut (lease ${LEASE_MS} ms, period ${PERIOD_MS} ms)`);
    expect(Date.now() - cut).toBeGreaterThanOrEqual(LEASE_MS - MARGIN_MS); // not before c's leases could expire
    expect(await metricValue(c, 'keng_modbus_line_leases_lost_total', 'expired') - lostBefore).toBe(cLines.length);
    expect(await metricValue(c, 'keng_modbus_lease_errors_total')).toBeGreaterThan(0);
    await until('a and b balanced', 20_000, () => balanced([a, b], 7));

    // d joins: it gets its share back one line per round from each node, gently (each line drained first).
    const d = await startNode('d', want);
    const before = a.drains + b.drains;
    const joined = await until('7 lines spread over a, b, d', 30_000, () => balanced([a, b, d], 7));
    console.log(`[leases] d joined: balanced ${counts([a, b, d]).join('/')} after ${joined} ms`);
    expect(a.drains + b.drains - before).toBeGreaterThanOrEqual(2);
    expect(maxReleasing).toBeLessThanOrEqual(1);
    expect(overlaps).toEqual([]);
    await check.close();
  }, 120_000);

  it('a node that stops gives its lines up: the other node holds them within a claim round or two', async () => {
    url = await freshStateDatabase();
    const want = lines(4);
    startSampler([...want.keys()]);
    const [a, b] = [await startNode('a', want), await startNode('b', want)];
    await until('4 lines spread over 2 nodes', 10_000, () => balanced([a, b], 4) && settled([a, b]));
    const t0 = Date.now();
    await a.leases.stop();
    live.ids.delete('a');
    expect(a.leases.heldLines()).toEqual([]);
    const took = await until('b holds all 4 lines', 5_000, () => b.leases.heldLines().length === 4);
    expect(took).toBeLessThan(LEASE_MS - MARGIN_MS); // not by expiry: the rows were deleted
    expect(await metricValue(a, 'keng_modbus_line_releases_total', 'stop')).toBe(2);
    console.log(`[leases] a stopped: b holds its lines ${Date.now() - t0} ms after`);
    expect(overlaps).toEqual([]);
  }, 60_000);

  it('never renews a lease taken over, and stops the line at once', async () => {
    url = await freshStateDatabase();
    const want = lines(2);
    startSampler([...want.keys()]);
    const a = await startNode('a', want);
    await until('a holds both lines', 10_000, () => a.leases.heldLines().length === 2);
    const stolen = a.leases.heldLines()[0]!;
    const db = openPgDb(url);
    // Another node's claim (a new epoch) on a line a believes is its own.
    await sql`UPDATE modbus_line_leases SET node_id = 'x', epoch = nextval('modbus_line_lease_epoch'),
      lease_until = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 60000 WHERE line_key = ${stolen}`.execute(db.kysely);
    await until('a stops the stolen line', 5_000, () => !a.leases.mayContinue(stolen));
    await new Promise((r) => setTimeout(r, 4 * PERIOD_MS));
    const row = (await sql<{ node_id: string }>`SELECT node_id FROM modbus_line_leases WHERE line_key = ${stolen}`.execute(db.kysely)).rows[0];
    expect(row?.node_id).toBe('x');
    expect(a.leases.heldLines()).not.toContain(stolen);
    expect(await metricValue(a, 'keng_modbus_line_leases_lost_total', 'taken_over')).toBe(1);
    await db.close();
  }, 60_000);

  it('claims a serial line only on a node where its port exists, beyond the TCP share', async () => {
    url = await freshStateDatabase();
    const want = lines(2);
    want.set('rtu:/dev/serial/by-id/usb-adapter-1', { type: 'modbus-rtu', path: '/dev/serial/by-id/usb-adapter-1', baudRate: 9600, parity: 'none', unitId: 1 });
    const has = { a: false, b: true };
    const a = await startNode('a', want, { portExists: () => has.a });
    const b = await startNode('b', want, { portExists: () => has.b });
    await until('a: one TCP line; b: one TCP line and the serial line', 10_000, () => counts([a, b]).join() === '1,2');
    expect(b.leases.heldLines()).toContain('rtu:/dev/serial/by-id/usb-adapter-1');
    // The adapter moves to a: b gives the line up, a (where it is now) claims it.
    has.b = false; has.a = true;
    await until('a holds the serial line', 10_000, () => a.leases.heldLines().includes('rtu:/dev/serial/by-id/usb-adapter-1'));
    expect(b.leases.heldLines()).not.toContain('rtu:/dev/serial/by-id/usb-adapter-1');
    expect(await metricValue(b, 'keng_modbus_line_releases_total', 'port_gone')).toBe(1);
  }, 60_000);
});
