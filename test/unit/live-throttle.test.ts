/**
 * Throttle (src/live/throttle.ts) with a fake feed and fake time: when a
 * single-event client is throttled (a room over budget at once; several rooms
 * together at the periodic check), what it then receives, and when it is
 * released (a whole quiet window, not the window it was throttled in).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Socket } from 'socket.io';
import { createLogger } from '../../src/core/index.js';
import { LiveClient } from '../../src/live/client.js';
import { timeFormatter } from '../../src/core/time.js';
import type { TelemetryMsg } from '../../src/live/format.js';
import { Throttle } from '../../src/live/throttle.js';

const T0 = 1_764_460_800_000;

function fakeFeed() {
  const rooms = new Map<string, Set<string>>();
  const clients = new Map<string, LiveClient>();
  const emitted: Array<{ room: string; msg: TelemetryMsg }> = [];
  const gauge: number[] = [];
  const add = (id: string, sub: { devices?: string[]; areas?: string[] }, batch = false): LiveClient => {
    const socket = {
      id,
      join(r: string | string[]) { for (const x of [r].flat()) { if (!rooms.has(x)) rooms.set(x, new Set()); rooms.get(x)!.add(id); } },
      leave(r: string) { rooms.get(r)?.delete(id); if (rooms.get(r)?.size === 0) rooms.delete(r); },
    } as unknown as Socket;
    const c = new LiveClient(socket, { kind: 'token', id, role: 'viewer', areas: ['p'] }, 'tok', false, batch);
    for (const d of sub.devices ?? []) c.devices.add(d);
    for (const a of sub.areas ?? []) c.areas.add(a);
    if (!batch) socket.join(c.subscriptionRooms());
    clients.set(id, c);
    return c;
  };
  const roomsOf = (id: string) => [...rooms].filter(([, m]) => m.has(id)).map(([r]) => r).sort();
  const throttle = new Throttle({
    clients: () => clients.values(),
    client: (id) => clients.get(id),
    roomMembers: (r) => rooms.get(r),
    emitTelemetry: (room, msg) => { emitted.push({ room, msg }); },
    throttledChanged: (n) => { gauge.push(n); },
    logger: createLogger('silent'),
  }, timeFormatter('Asia/Ho_Chi_Minh'), 200, 1000);
  return { throttle, add, roomsOf, emitted, gauge };
}

const reading = (deviceId: string, ts: number, values: Record<string, number>) => ({ deviceId, area: 'c1', kind: 'sensor', ts, values });

beforeEach(() => { vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] }); vi.setSystemTime(T0); });
afterEach(() => { vi.useRealTimers(); });

describe('Throttle', () => {
  it('throttles the members of a room at the event that takes it over budget, and only single-event clients', () => {
    const f = fakeFeed();
    const a = f.add('A', { areas: ['c1'] });
    const quiet = f.add('Q', { areas: ['c2'] });
    for (let i = 0; i < 200; i++) f.throttle.counted(['a:c1']);
    expect(a.throttled).toBe(false);
    f.throttle.counted(['a:c1']);
    expect(a.throttled).toBe(true);
    expect(f.roomsOf('A')).toEqual(['t:1']);
    expect(quiet.throttled).toBe(false);
    expect(f.roomsOf('Q')).toEqual(['a:c2']);
    expect(f.throttle.count).toBe(1);
    expect(f.gauge).toEqual([1]);
  });

  it('a throttled client gets the latest value per device and field once per interval, as single events', () => {
    const f = fakeFeed();
    const a = f.add('A', { areas: ['c1'] });
    for (let i = 0; i <= 200; i++) f.throttle.counted(['a:c1']);
    expect(a.throttled).toBe(true);
    const g = f.throttle.groups;
    for (let i = 0; i < 300; i++) g.forEvent('d:d1', ['a:c1', 'a:p'], (grp) => g.push(grp, reading('d1', T0 + i, { t: i, h: 2 * i })));
    g.forEvent('d:d2', ['a:c1', 'a:p'], (grp) => g.push(grp, reading('d2', T0 + 5, { rain: 1 })));
    vi.advanceTimersByTime(1000);
    const fmt = timeFormatter('Asia/Ho_Chi_Minh');
    expect(f.emitted).toEqual([
      { room: 't:1', msg: { deviceId: 'd1', ts: fmt(T0 + 299), values: { t: 299, h: 598 } } },
      { room: 't:1', msg: { deviceId: 'd2', ts: fmt(T0 + 5), values: { rain: 1 } } },
    ]);
    expect(f.throttle.emitted).toBe(2);
  });

  it('the periodic check throttles a client whose rooms together exceed the budget; batched clients are left alone', () => {
    const f = fakeFeed();
    const b = f.add('B', { devices: ['d1', 'd2'] });
    const batched = f.add('X', { devices: ['d1', 'd2'] }, true);
    for (let i = 0; i < 120; i++) f.throttle.counted(['d:d1', 'd:d2']);
    expect(b.throttled).toBe(false); // each room under 200
    f.throttle.check(Date.now());
    expect(b.throttled).toBe(true);
    expect(f.roomsOf('B')).toEqual(['t:1']);
    expect(batched.throttled).toBe(false);
  });

  it('releases a client only after a whole window under half the rate, flushing what it holds first', () => {
    const f = fakeFeed();
    const a = f.add('A', { areas: ['c1'] });
    for (let i = 0; i <= 200; i++) f.throttle.counted(['a:c1']);
    const g = f.throttle.groups;
    const push = (n: number, from: number) => {
      for (let i = 0; i < n; i++) g.forEvent('d:d1', ['a:c1'], (grp) => g.push(grp, reading('d1', from + i, { t: from + i })));
    };
    // the window it was throttled in ends busy (150 ≥ 100 readings): stays throttled
    push(150, T0);
    vi.setSystemTime(T0 + 1000);
    f.throttle.check(Date.now());
    expect(a.throttled).toBe(true);
    // next window: 50 readings (< half of 200/s): released at its end, the held value goes out first
    f.emitted.length = 0;
    vi.setSystemTime(T0 + 1500);
    push(50, T0 + 1500);
    vi.setSystemTime(T0 + 2000);
    f.throttle.check(Date.now());
    expect(a.throttled).toBe(false);
    expect(f.roomsOf('A')).toEqual(['a:c1']);
    expect(f.emitted.map((e) => e.msg.values)).toEqual([{ t: T0 + 1549 }]);
    expect(f.throttle.count).toBe(0);
    expect(f.gauge).toEqual([1, 0]);
  });

  it('a client throttled late in a window is not released at that window\'s end', () => {
    const f = fakeFeed();
    const a = f.add('A', { areas: ['c1'] });
    vi.setSystemTime(T0 + 900);
    for (let i = 0; i <= 200; i++) f.throttle.counted(['a:c1']);
    vi.setSystemTime(T0 + 1000);
    f.throttle.check(Date.now());
    expect(a.throttled).toBe(true);
  });

  it('forgets a client that goes away (gauge and group)', () => {
    const f = fakeFeed();
    const a = f.add('A', { areas: ['c1'] });
    for (let i = 0; i <= 200; i++) f.throttle.counted(['a:c1']);
    f.throttle.forget(a);
    expect(f.throttle.count).toBe(0);
    expect(f.throttle.groups.size).toBe(0);
  });
});
