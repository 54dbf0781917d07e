/**
 * The executor's memory of broadcasts (held.ts) reads a broadcast it does not hold only after the state window
 * has committed what memory wrote: a read in between would bring back a target's older state, and the next move
 * from it would fail its compare-and-set and be lost.
 */
import { describe, expect, it } from 'vitest';
import { HeldBroadcasts } from '../../src/broadcast/execution/held.js';
import type { BroadcastRepoSql } from '../../src/broadcast/execution/repo-sql.js';
import { testLogger } from '../helpers/influxd.js';

describe('HeldBroadcasts: reading a broadcast back', () => {
  it('waits for the state window to settle before it reads the rows', async () => {
    const order: string[] = [];
    let settle!: () => void;
    const settled = new Promise<void>((r) => { settle = r; });
    const repo = {
      async getBroadcastRow(id: string) { order.push(`read ${id}`); return { id } as never; },
      async targetRows() { return [{ device_id: 'spk-1', state: 'playing' }] as never; },
    } as unknown as BroadcastRepoSql;
    const held = new HeldBroadcasts({ repo: () => repo, logger: testLogger(), settled: () => { order.push('settled?'); return settled; } });
    const got = new Promise<string | undefined>((resolve) => held.withHeld('bc_1', (h) => resolve(h?.targets.get('spk-1')?.state)));
    await new Promise((r) => setTimeout(r, 20));
    expect(order).toEqual(['settled?']); // nothing read while the window holds uncommitted moves
    settle();
    expect(await got).toBe('playing');
    expect(order).toEqual(['settled?', 'read bc_1']);
  });

  it('still reads when the window failed (a failed window evicts what it touched)', async () => {
    const repo = {
      async getBroadcastRow(id: string) { return { id } as never; },
      async targetRows() { return [] as never; },
    } as unknown as BroadcastRepoSql;
    const held = new HeldBroadcasts({ repo: () => repo, logger: testLogger(), settled: () => Promise.reject(new Error('window failed')) });
    const h = await new Promise((resolve) => held.withHeld('bc_2', resolve));
    expect(h).toMatchObject({ row: { id: 'bc_2' } });
  });
});
