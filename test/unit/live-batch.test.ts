/** BatchGroups (src/live/batch.ts): grouping by subscription set, event routing, coalescing, flush timing. */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BatchGroups, type BatchGroup, type BatchMember } from '../../src/live/batch.js';
import type { TelemetryMsg } from '../../src/live/format.js';

const fmt = (ms: number): string => `T${ms}`;

function member(id: string, rooms: string[], canBroadcast = true): BatchMember {
  return { id, batchGroup: null, canBroadcast, rooms: () => [], subscriptionRooms: () => [...rooms] };
}

function setup(intervalMs = 50, maxBatch = 1000) {
  const sent: Array<{ room: string; batch: TelemetryMsg[] }> = [];
  const groups = new BatchGroups({ emitBatch: (room, batch) => sent.push({ room, batch }) }, fmt, intervalMs, maxBatch);
  const route = (deviceId: string, area: string[], values: Record<string, number>, ts: number): void => {
    groups.forEvent(`d:${deviceId}`, area.map((a) => `a:${a}`), (g) => groups.push(g, { deviceId, area: area[0]!, kind: 'sensor', ts, values }));
  };
  return { groups, sent, route };
}

beforeEach(() => { vi.useFakeTimers(); });
afterEach(() => { vi.useRealTimers(); });

describe('BatchGroups', () => {
  it('puts members with the same subscriptions (in any order) into one group, others apart', () => {
    const { groups } = setup();
    const a = member('a', ['a:ca', 'd:x']);
    const b = member('b', ['d:x', 'a:ca']);
    const c = member('c', ['a:ca']);
    const d = member('d', ['a:ca', 'd:x'], false);
    const [, ga] = groups.assign(a);
    const [, gb] = groups.assign(b);
    const [, gc] = groups.assign(c);
    const [, gd] = groups.assign(d);
    expect(ga).toBe(gb);
    expect(gc).not.toBe(ga);
    expect(gd).not.toBe(ga); // the right to see broadcasts is part of the group
    expect(groups.size).toBe(3);
    expect(new Set([ga!.room, gc!.room, gd!.room]).size).toBe(3);
  });

  it('moves a member when its subscriptions change and removes empty groups', () => {
    const { groups } = setup();
    const rooms = ['a:ca'];
    const m: BatchMember = { id: 'm', batchGroup: null, canBroadcast: true, rooms: () => [], subscriptionRooms: () => [...rooms] };
    const [, g1] = groups.assign(m);
    rooms.push('d:y');
    const [old, g2] = groups.assign(m);
    expect(old).toBe(g1);
    expect(g2).not.toBe(g1);
    expect(groups.size).toBe(1);
    rooms.length = 0;
    expect(groups.assign(m)).toEqual([g2, null]);
    expect(groups.size).toBe(0);
    expect(m.batchGroup).toBeNull();
  });

  it('routes an event to each group once, through the device room or any ancestor area room', () => {
    const { groups } = setup();
    const both = member('both', ['d:x', 'a:ca', 'a:p1']);
    const other = member('other', ['a:cb']);
    const [, gBoth] = groups.assign(both);
    groups.assign(other);
    const hit: BatchGroup[] = [];
    groups.forEvent('d:x', ['a:va1', 'a:ca', 'a:p1'], (g) => hit.push(g));
    expect(hit).toEqual([gBoth]);
    hit.length = 0;
    groups.forEvent('d:z', ['a:vb1', 'a:cb', 'a:p1'], (g) => hit.push(g));
    expect(hit.map((g) => g.room).sort()).toEqual([gBoth!.room, other.batchGroup!.room].sort());
  });

  it('sends a reading at once after a quiet interval, then at most one batch per interval, coalesced to the latest value per (device, field)', () => {
    const { groups, sent, route } = setup(50);
    groups.assign(member('a', ['a:ca']));
    vi.advanceTimersByTime(100);
    route('x', ['ca'], { t: 9 }, 990);
    vi.advanceTimersByTime(0);
    expect(sent).toHaveLength(1); // quiet feed: no added delay
    expect(sent[0]!.batch).toEqual([{ deviceId: 'x', ts: 'T990', values: { t: 9 } }]);
    sent.length = 0;
    route('x', ['ca'], { t: 1, h: 10 }, 1000);
    vi.advanceTimersByTime(20);
    route('x', ['ca'], { t: 2 }, 1020);
    route('y', ['ca'], { t: 7 }, 1021);
    route('x', ['ca'], { t: 0 }, 900); // older than what is held: does not replace it
    expect(sent).toHaveLength(0);
    vi.advanceTimersByTime(30);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.batch).toEqual([
      { deviceId: 'x', ts: 'T1000', values: { h: 10 } },
      { deviceId: 'x', ts: 'T1020', values: { t: 2 } },
      { deviceId: 'y', ts: 'T1021', values: { t: 7 } },
    ]);
    expect(groups.coalesced).toBe(2);
    vi.advanceTimersByTime(500);
    expect(sent).toHaveLength(1); // nothing pending: no empty batches, no idle timer
  });

  it('flushes a group at once when it holds maxBatch entries, and on demand', () => {
    const { groups, sent, route } = setup(50, 4);
    const [, g] = groups.assign(member('a', ['a:ca']));
    route('x', ['ca'], { a: 1, b: 2, c: 3 }, 1);
    expect(sent).toHaveLength(0);
    route('y', ['ca'], { a: 1 }, 2);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.batch).toHaveLength(2);
    route('z', ['ca'], { a: 1 }, 3);
    groups.flushGroup(g!);
    expect(sent).toHaveLength(2);
    vi.advanceTimersByTime(100);
    expect(sent).toHaveLength(2);
  });

  it('drops the pending batch of a group whose last member left', () => {
    const { groups, sent, route } = setup(50);
    const m = member('a', ['a:ca']);
    groups.assign(m);
    route('x', ['ca'], { t: 1 }, 1);
    groups.release(m);
    vi.advanceTimersByTime(100);
    expect(sent).toHaveLength(0);
    expect(groups.size).toBe(0);
  });
});
