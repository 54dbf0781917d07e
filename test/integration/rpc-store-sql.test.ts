/**
 * The bulk RPC repository (src/rpc/store-sql.ts) through the state window, on SQLite and PostgreSQL:
 * 2,000 commands inserted in one statement and read back as the synchronous store would write
 * them, creation order, compare-and-set transitions applied and missed, merged moves, integer ids of
 * access-token sessions claimed (freed from an older command after a wrap), withdrawal by param.
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { RpcStoreSql, type NewRequestRow } from '../../src/rpc/store-sql.js';
import { StateWindow } from '../../src/storage/state/index.js';
import { chunkSizes } from '../../src/storage/sql/values.js';
import { STATE_DIALECTS, openState, stopStatePostgres, type StateHarness } from '../helpers/state-dialects.js';

const logger = createLogger('silent');
afterAll(stopStatePostgres);

const N = 2_000;
const dev = (i: number): string => `loa-${String(i).padStart(4, '0')}`;

describe.each(STATE_DIALECTS)('RPC bulk store on %s', (dialect) => {
  let h: StateHarness;
  let w: StateWindow;
  let store: RpcStoreSql;

  beforeEach(async () => {
    h = await openState(dialect);
    if (h.sqlite) { // the embedded store's foreign key to devices
      h.sqlite.exec(`INSERT INTO areas (code, name, level, parent, created_at) VALUES ('p', 'P', 'province', NULL, 0)`);
      const ins = h.sqlite.prepare(`INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES (?, 'speaker', ?, 'p', 'x', ?, 'x', 0)`);
      h.sqlite.transaction(() => { for (let i = 0; i < N; i++) ins.run(dev(i), dev(i), `t-${i}`); })();
    }
    store = new RpcStoreSql(h.db);
    w = new StateWindow({ db: h.db, logger });
    await w.start();
  });
  afterEach(async () => { await w.stop(); await h.close(); });

  const play = (i: number, o: Partial<NewRequestRow> = {}): NewRequestRow => ({
    id: `r-${String(i).padStart(4, '0')}`, deviceId: dev(i), method: 'broadcast.play', paramsJson: JSON.stringify({ broadcastId: 'b1', volume: 70 }),
    expiresAt: 5_000, createdAt: 1_000, ...(i % 2 === 0 ? { sentAt: 1_001 } : {}), ...o,
  });

  it('inserts 2,000 commands of a broadcast (and a lone one) in one window, queued or sent, in creation order', async () => {
    const before = w.stats.statements;
    const out = await Promise.all([
      ...Array.from({ length: N }, (_, i) => w.add(store.insert, play(i))),
      w.add(store.insert, { id: 'lone', deviceId: dev(7), method: 'config.set', paramsJson: '{"a":1}', expiresAt: 9, createdAt: 2 }),
    ]);
    expect(out.every((o) => o.applied)).toBe(true);
    // BEGIN, one INSERT (SQLite: one per VALUES list of at most 64 rows), COMMIT
    expect(w.stats.statements - before).toBe(dialect === 'postgres' ? 3 : 2 + chunkSizes(N + 1).length);
    const r0 = await store.get('r-0000');
    expect(r0).toEqual({
      id: 'r-0000', deviceId: dev(0), method: 'broadcast.play', params: { broadcastId: 'b1', volume: 70 }, expiresAt: 5_000,
      state: 'sent', createdAt: 1_000, sentAt: 1_001, answeredAt: null, response: null, tbId: null,
    });
    expect((await store.get('r-0001'))!.state).toBe('queued');
    expect((await store.listDevice(dev(7))).map((r) => r.id)).toEqual(['r-0007', 'lone']);
    const open = await store.open();
    expect(open).toHaveLength(N + 1);
    expect(open.slice(0, 3).map((r) => r.id)).toEqual(['r-0000', 'r-0001', 'r-0002']);
    expect(open.at(-1)!.id).toBe('lone');
  });

  it('transitions by compare-and-set: applied from the held state, missed from another; several moves merge', async () => {
    await Promise.all([0, 1, 2, 3].map((i) => w.add(store.insert, play(i)))); // 0, 2 sent; 1, 3 queued
    const before = w.stats.statements;
    const [answered, stale, sentThenAnswered, cancelled, wrongDevice] = await Promise.all([
      w.add(store.cas, { id: 'r-0000', deviceId: dev(0), from: 'sent', to: 'answered', at: 2_000, responseJson: '{"result":"accepted"}' }),
      w.add(store.cas, { id: 'r-0002', deviceId: dev(2), from: 'queued', to: 'sent', at: 2_000 }), // it is sent: miss
      w.add(store.cas, { id: 'r-0001', deviceId: dev(1), from: 'queued', to: 'sent', at: 2_001 }),
      w.add(store.cas, { id: 'r-0003', deviceId: dev(3), from: 'queued', to: 'cancelled', at: 2_002 }),
      w.add(store.cas, { id: 'r-0002', deviceId: dev(9), from: 'sent', to: 'expired' }), // another device's id: miss
      w.add(store.cas, { id: 'r-0001', deviceId: dev(1), from: 'sent', to: 'answered', at: 2_003, responseJson: '{"result":"ok"}' }),
    ]);
    expect(w.stats.statements - before).toBe(3);
    expect([answered, stale, sentThenAnswered, cancelled, wrongDevice].map((o) => o.applied)).toEqual([true, false, true, true, false]);
    expect(await store.get('r-0000')).toMatchObject({ state: 'answered', answeredAt: 2_000, response: { result: 'accepted' }, sentAt: 1_001 });
    expect(await store.get('r-0001')).toMatchObject({ state: 'answered', sentAt: 2_001, answeredAt: 2_003, response: { result: 'ok' } });
    expect(await store.get('r-0002')).toMatchObject({ state: 'sent', sentAt: 1_001 });
    expect(await store.get('r-0003')).toMatchObject({ state: 'cancelled', answeredAt: 2_002 });
  });

  it('claims integer ids of access-token sessions: last id per device, freed from an older command after a wrap', async () => {
    await Promise.all([
      w.add(store.insert, play(0, { id: 'old', tbId: 1 })),
      w.add(store.insert, play(1, { id: 'x1', tbId: 2_147_483_647 })),
    ]);
    await Promise.all([
      w.add(store.insert, play(1, { id: 'x2', tbId: 1 })), // wrapped for loa-0001
      w.add(store.insert, play(0, { id: 'new', tbId: 1 })), // wrapped for loa-0000: 'old' loses its id
      w.add(store.insert, play(3, { id: 'q' })), // queued
    ]);
    expect(await store.idOfTbId(dev(0), 1)).toBe('new');
    expect((await store.get('old'))!.tbId).toBeNull();
    expect(await store.lastTbIds()).toEqual(new Map([[dev(0), 1], [dev(1), 1]]));
    // A re-send to an access-token session gives a queued command its id in the CAS.
    expect((await w.add(store.cas, { id: 'q', deviceId: dev(3), from: 'queued', to: 'sent', at: 5, tbId: 7 })).applied).toBe(true);
    expect(await store.get('q')).toMatchObject({ state: 'sent', tbId: 7, sentAt: 5 });
    expect((await store.lastTbIds()).get(dev(3))).toBe(7);
  });

  it('withdraws queued commands by a param in a unit', async () => {
    await Promise.all([0, 1, 3].map((i) => w.add(store.insert, play(i)))); // 1, 3 queued
    await w.add(store.insert, play(5, { paramsJson: JSON.stringify({ broadcastId: 'b2' }) }));
    const ids = await w.unit((trx) => store.cancelQueuedByParam(trx, 'broadcast.play', '$.broadcastId', 'b1', 9));
    expect(ids.sort()).toEqual(['r-0001', 'r-0003']);
    expect((await store.get('r-0005'))!.state).toBe('queued');
    expect(await store.deleteFinishedBefore(2_000)).toBe(2);
  });

  it.runIf(dialect === 'sqlite')('skips a command of a device deleted meanwhile instead of failing the window', async () => {
    h.sqlite!.prepare('DELETE FROM devices WHERE id = ?').run(dev(1));
    const [a, b] = await Promise.all([w.add(store.insert, play(0)), w.add(store.insert, play(1))]);
    expect([a.applied, b.applied]).toEqual([true, false]);
    const n = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM rpc_requests`.execute(h.db.kysely);
    expect(Number(n.rows[0]!.n)).toBe(1);
  });
});
