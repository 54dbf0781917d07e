/**
 * Who sees and manages which media (src/media/access.ts) over the test tree
 * p1 → ca → va1, p1 → cb; and the job limiter's bound (src/media/jobs.ts).
 */
import { describe, expect, it } from 'vitest';
import { JobLimiter, SHARED, assignableAreas, canManage, canSee, mediaViewer } from '../../src/media/index.js';

const parent: Record<string, string | null> = { p1: null, ca: 'p1', va1: 'ca', cb: 'p1' };
const subtree: Record<string, string[]> = { p1: ['p1', 'ca', 'va1', 'cb'], ca: ['ca', 'va1'], va1: ['va1'], cb: ['cb'] };
const viewer = (areas: string[]) => mediaViewer(new Set(areas.flatMap((a) => subtree[a]!)), areas, (c) => parent[c]);
const exists = (c: string): boolean => c in parent;

describe('media access', () => {
  const opA = viewer(['ca']);
  const opVillage = viewer(['va1']);
  const opB = viewer(['cb']);
  const admin = mediaViewer('all', [], (c) => parent[c]);

  it('sees media of its scope, of the areas above its own, and shared media; nothing else', () => {
    expect(canSee(opA, ['ca'])).toBe(true);
    expect(canSee(opA, ['va1'])).toBe(true);
    expect(canSee(opVillage, ['ca'])).toBe(true); // the commune's media reaches its villages' staff
    expect(canSee(opVillage, ['p1'])).toBe(true);
    expect(canSee(opB, ['ca'])).toBe(false);
    expect(canSee(opB, ['va1'])).toBe(false);
    expect(canSee(opB, ['ca', 'cb'])).toBe(true);
    expect(canSee(opB, [SHARED])).toBe(true);
    expect(canSee(opB, [])).toBe(false);
    expect(canSee(admin, [])).toBe(true);
  });

  it('manages only media wholly within its scope; shared and unassigned media: admins only', () => {
    expect(canManage(opA, ['ca', 'va1'])).toBe(true);
    expect(canManage(opVillage, ['ca'])).toBe(false);
    expect(canManage(opA, ['ca', 'cb'])).toBe(false);
    expect(canManage(opA, [SHARED])).toBe(false);
    expect(canManage(opA, [])).toBe(false);
    expect(canManage(admin, [SHARED])).toBe(true);
  });

  it('an upload belongs to its uploader\'s areas, an admin\'s to "*"', () => {
    expect(opA.home).toEqual(['ca']);
    expect(admin.home).toEqual([SHARED]);
  });

  it('checks areas asked for: unknown 422, outside 403, "*" only for admins, deduplicated', () => {
    expect(assignableAreas(opA, ['va1', ' va1 ', 'ca'], exists)).toEqual(['va1', 'ca']);
    expect(() => assignableAreas(opA, ['cb'], exists)).toThrow(expect.objectContaining({ statusCode: 403 }));
    expect(() => assignableAreas(opA, ['*'], exists)).toThrow(expect.objectContaining({ statusCode: 403 }));
    expect(() => assignableAreas(opA, ['nowhere'], exists)).toThrow(expect.objectContaining({ statusCode: 422 }));
    expect(() => assignableAreas(opA, [' '], exists)).toThrow(expect.objectContaining({ statusCode: 400 }));
    expect(assignableAreas(admin, ['cb', '*'], exists)).toEqual([SHARED]);
    expect(assignableAreas(admin, ['cb'], exists)).toEqual(['cb']);
  });
});

describe('JobLimiter', () => {
  const gate = () => { let open!: () => void; const p = new Promise<void>((r) => { open = r; }); return { p, open }; };

  it('runs at most maxRunning, queues maxWaiting in order, refuses the rest with 503 and Retry-After; urgent jobs jump the queue and are never refused', async () => {
    const jobs = new JobLimiter({ maxRunning: 2, maxWaiting: 1 });
    const order: string[] = [];
    const g = [gate(), gate()];
    const run = (name: string, wait?: Promise<void>, urgent = false) => jobs.run(async () => { order.push(name); await wait; return name; }, { urgent });
    const a = run('a', g[0]!.p);
    const b = run('b', g[1]!.p);
    const c = run('c');
    await expect(run('d')).rejects.toMatchObject({ code: 'KENG_ERR_MEDIA_BUSY', statusCode: 503, retryAfterSec: expect.any(Number) });
    const alert = run('alert', undefined, true);
    expect(jobs.load).toEqual({ running: 2, waiting: 2 });
    g[0]!.open();
    g[1]!.open();
    expect(await Promise.all([a, b, c, alert])).toEqual(['a', 'b', 'c', 'alert']);
    expect(order).toEqual(['a', 'b', 'alert', 'c']);
    expect(jobs.load).toEqual({ running: 0, waiting: 0 });
  });

  it('a failing job frees its slot', async () => {
    const jobs = new JobLimiter({ maxRunning: 1, maxWaiting: 0 });
    await expect(jobs.run(async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    expect(await jobs.run(async () => 'ok')).toBe('ok');
  });
});
