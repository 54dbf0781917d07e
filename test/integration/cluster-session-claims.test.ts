/**
 * Session claims (src/cluster/session-claims.ts) against a real PostgreSQL 15:
 * two "nodes" (two PgSessionClaims on their own pools, one database), the
 * broker and the bus replaced by recorders (the two-process test is
 * cluster-sessions.test.ts).
 */
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgSessionClaims } from '../../src/cluster/index.js';
import { createLogger, systemClock } from '../../src/core/index.js';
import { openPgDb, type Db } from '../../src/storage/sql/index.js';
import { startPostgres, type PostgresServer } from '../../tools/postgres.js';
import { freePort } from '../../tools/ports.js';

let pg: PostgresServer;
let seq = 0;
const dbs: Db[] = [];
const claimsList: PgSessionClaims[] = [];

beforeAll(async () => { pg = await startPostgres(); }, 120_000);
afterAll(async () => {
  for (const c of claimsList) await c.stop();
  for (const d of dbs) await d.close();
  await pg?.destroy();
});

interface Node {
  claims: PgSessionClaims;
  /** close() calls: device → epochs closed. */
  closed: Array<[string, number]>;
  announced: Array<[string, number]>;
  /** What the "broker" holds: device → epoch of its connection. */
  conns: Map<string, number>;
  registry: Registry;
}

function node(url: string, nodeId: string, tuning: { reconcileMs?: number; claimTimeoutMs?: number } = {}): Node {
  const db = openPgDb(url, { connectTimeoutMs: 1_000 });
  dbs.push(db);
  const n: Node = { closed: [], announced: [], conns: new Map(), registry: new Registry(), claims: null as unknown as PgSessionClaims };
  n.claims = new PgSessionClaims({
    db, nodeId, logger: createLogger('silent'), clock: systemClock, metrics: { registry: n.registry },
    tuning: { reconcileMs: 60_000, ...tuning },
    close: (d, e) => {
      if (n.conns.get(d) !== e) return false;
      n.conns.delete(d);
      n.closed.push([d, e]);
      return true;
    },
    announce: (d, e) => n.announced.push([d, e]),
  });
  claimsList.push(n.claims);
  return n;
}

async function connect(n: Node, device: string): Promise<number> {
  const e = await n.claims.claim(device);
  n.conns.set(device, e);
  return e;
}

async function metricValue(n: Node, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await n.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? []).filter((v) => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, string>)[k] === val))
    .reduce((a, v) => a + Number(v.value), 0);
}

/** A newer claim elsewhere takes `device`: `n`'s reconciliation closes its connection of `epoch`. */
async function takenElsewhere(url: string, device: string, epoch: number, n: Node): Promise<void> {
  const other = node(url, 'other');
  await other.claims.start();
  await other.claims.claim(device);
  await n.claims.reconcileNow();
  expect(n.closed).toContainEqual([device, epoch]);
}

async function rows(url: string): Promise<Array<{ device_id: string; node_id: string; epoch: number }>> {
  const db = url.slice(url.lastIndexOf('/') + 1);
  return (await pg.query<{ device_id: string; node_id: string; epoch: number }>('SELECT device_id, node_id, epoch::int AS epoch FROM device_sessions ORDER BY device_id', [], db)).rows;
}

describe('device session claims on PostgreSQL', () => {
  it('a claim on another node takes the session: bus notice or reconciliation closes the old connection once', async () => {
    const url = await pg.createDatabase(`claims${++seq}`);
    const a = node(url, 'a');
    const b = node(url, 'b');
    await Promise.all([a.claims.start(), b.claims.start()]); // both migrate: the scope runs once

    const a1 = await connect(a, 'd1');
    const a2 = await connect(a, 'd2');
    expect(a.announced).toEqual([['d1', a1], ['d2', a2]]);
    await a.claims.reconcileNow();
    expect(a.closed).toEqual([]); // holding its own latest claims

    // d1 moves to b; the bus notice reaches a.
    const b1 = await connect(b, 'd1');
    expect(b1).toBeGreaterThan(Math.max(a1, a2));
    a.claims.remoteClaim({ deviceId: 'd1', epoch: b1, nodeId: 'b' });
    expect(a.closed).toEqual([['d1', a1]]);
    // An old or repeated notice closes nothing.
    a.claims.remoteClaim({ deviceId: 'd1', epoch: b1, nodeId: 'b' });
    b.claims.remoteClaim({ deviceId: 'd1', epoch: a1, nodeId: 'a' });
    expect(b.closed).toEqual([]);

    // d2 moves to b with the notice lost: reconciliation finds it.
    const b2 = await connect(b, 'd2');
    await a.claims.reconcileNow();
    await b.claims.reconcileNow();
    expect(a.closed).toEqual([['d1', a1], ['d2', a2]]);
    expect(b.closed).toEqual([]);
    expect(await metricValue(a, 'keng_cluster_sessions_taken_over_total', { path: 'bus' })).toBe(1);
    expect(await metricValue(a, 'keng_cluster_sessions_taken_over_total', { path: 'reconcile' })).toBe(1);

    // a's closed connections end: their releases must not delete b's rows.
    a.claims.release('d1', a1);
    a.claims.release('d2', a2);
    await new Promise((r) => setTimeout(r, 300));
    expect(await rows(url)).toEqual([{ device_id: 'd1', node_id: 'b', epoch: b1 }, { device_id: 'd2', node_id: 'b', epoch: b2 }]);
    // b's clean disconnect deletes its own row.
    b.claims.release('d1', b1);
    await new Promise((r) => setTimeout(r, 300));
    expect((await rows(url)).map((r) => r.device_id)).toEqual(['d2']);
    // Inserted again after the delete, the epoch still goes up (a stale holder of an older one loses).
    const a3 = await connect(a, 'd1');
    expect(a3).toBeGreaterThan(b1);
    b.claims.remoteClaim({ deviceId: 'd1', epoch: a3, nodeId: 'a' });
    a.claims.release('d1', a3);
    // A missing row takes nothing away (only a later claim does).
    await pg.query('DELETE FROM device_sessions', [], url.slice(url.lastIndexOf('/') + 1));
    await b.claims.reconcileNow();
    expect(b.closed).toEqual([]);
  }, 60_000);

  it('a reconnect to the same node keeps the newer connection; the old one\'s release changes nothing', async () => {
    const url = await pg.createDatabase(`claims${++seq}`);
    const a = node(url, 'a');
    await a.claims.start();
    const e1 = await connect(a, 'd');
    const e2 = await connect(a, 'd'); // aedes replaces the first connection
    expect(e2).toBeGreaterThan(e1);
    a.claims.release('d', e1);
    await new Promise((r) => setTimeout(r, 300));
    await a.claims.reconcileNow();
    expect(a.closed).toEqual([]);
    expect(await rows(url)).toEqual([{ device_id: 'd', node_id: 'a', epoch: e2 }]);
    // Two connects racing on this node: the earlier claim's release (the broker refuses it) leaves the later one held.
    const [r1, r2] = await Promise.all([a.claims.claim('r'), a.claims.claim('r')]);
    const [lo, hi] = r1 < r2 ? [r1, r2] : [r2, r1];
    a.conns.set('r', hi);
    a.claims.release('r', lo);
    await new Promise((r) => setTimeout(r, 300));
    expect((await rows(url)).find((x) => x.device_id === 'r')).toEqual({ device_id: 'r', node_id: 'a', epoch: hi });
    await takenElsewhere(url, 'r', hi, a);
  }, 60_000);

  it('rows of a node that died are taken over by the next claim; concurrent claims get distinct epochs', async () => {
    const url = await pg.createDatabase(`claims${++seq}`);
    const a = node(url, 'a');
    const b = node(url, 'b');
    await a.claims.start();
    await b.claims.start();
    await pg.query("INSERT INTO device_sessions VALUES ('d', 'dead', 700, 0)", [], url.slice(url.lastIndexOf('/') + 1));
    expect(await connect(a, 'd')).toBe(701); // never below the row's epoch + 1
    const epochs = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).claims.claim('x')));
    expect(new Set(epochs).size).toBe(20);
    expect((await rows(url)).find((r) => r.device_id === 'x')!.epoch).toBe(Math.max(...epochs));
  }, 60_000);

  it('stop() deletes the rows this node still holds', async () => {
    const url = await pg.createDatabase(`claims${++seq}`);
    const a = node(url, 'a');
    const b = node(url, 'b');
    await a.claims.start();
    await b.claims.start();
    for (const d of ['s1', 's2', 's3']) await connect(a, d);
    await connect(b, 's4');
    await a.claims.stop();
    expect((await rows(url)).map((r) => r.device_id)).toEqual(['s4']);
  }, 60_000);

  it('an unreachable database fails the claim within its timeout (the broker refuses the CONNECT)', async () => {
    const port = await freePort(); // nothing listens: connection refused
    const url = `postgres://postgres@127.0.0.1:${port}/keng`;
    const a = node(url, 'a', { claimTimeoutMs: 1_500 });
    const t0 = Date.now();
    await expect(a.claims.claim('d')).rejects.toThrow();
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(await metricValue(a, 'keng_cluster_session_claims_total', { result: 'failed' })).toBe(1);
  }, 30_000);
});
