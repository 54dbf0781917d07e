/**
 * Scheduler test helpers: an in-memory schedule repo (same semantics as the SQL one, claims included, deep
 * copies in and out) and a fake-time driver.
 */
import { vi } from 'vitest';
import type { Schedule } from '../../src/broadcast/schedule/model.js';
import type { OccurrenceClaim, OccurrenceOutcome, OccurrenceRecord, ScheduleRepo, ScheduleWriter } from '../../src/broadcast/schedule/repo.js';
import type { Scheduler } from '../../src/broadcast/schedule/scheduler.js';

export class MemoryScheduleRepo implements ScheduleRepo {
  private readonly rows = new Map<string, Schedule>();
  private readonly claims = new Map<string, OccurrenceRecord>();
  private lock: Promise<unknown> = Promise.resolve();

  async list(): Promise<Schedule[]> { return [...this.rows.values()].map((s) => this.withCursor(s)); }
  async get(id: string): Promise<Schedule | undefined> {
    const s = this.rows.get(id);
    return s ? this.withCursor(s) : undefined;
  }
  async insert(s: Schedule): Promise<void> {
    if (this.rows.has(s.id)) throw new Error(`schedule ${s.id} exists`);
    const c = clone(s);
    delete c.lastFiredAt;
    this.rows.set(s.id, c);
  }
  async update(s: Schedule): Promise<boolean> {
    const prev = this.rows.get(s.id);
    if (!prev) return false;
    const c = clone(s);
    c.createdAt = prev.createdAt;
    delete c.lastFiredAt;
    this.rows.set(s.id, c);
    return true;
  }
  async delete(id: string): Promise<boolean> {
    for (const [k, c] of this.claims) if (c.scheduleId === id) this.claims.delete(k);
    return this.rows.delete(id);
  }
  locked<T>(fn: (tx: ScheduleWriter) => Promise<T>): Promise<T> {
    const r = this.lock.then(() => fn(this));
    this.lock = r.catch(() => undefined);
    return r;
  }
  async claim(c: OccurrenceClaim): Promise<number[]> {
    const s = this.rows.get(c.scheduleId);
    if (!s || !s.enabled || s.updatedAt !== c.version) return [];
    const won: number[] = [];
    for (const t of c.times) {
      const k = `${c.scheduleId}\u0000${t}`;
      if (this.claims.has(k)) continue;
      this.claims.set(k, { scheduleId: c.scheduleId, occurrenceAt: t, nodeId: c.nodeId, claimedAt: c.now, ...(c.outcome ? { outcome: c.outcome } : {}) });
      won.push(t);
    }
    return won;
  }
  async settle(scheduleId: string, occurrenceAt: number, nodeId: string, outcome: OccurrenceOutcome, broadcastId?: string): Promise<boolean> {
    return this.setOutcome(scheduleId, occurrenceAt, nodeId, outcome, broadcastId);
  }
  /** The SQL repo writes in the caller's transaction; here there is none, the write is at once. */
  async settleIn(_trx: unknown, scheduleId: string, occurrenceAt: number, nodeId: string, outcome: OccurrenceOutcome, broadcastId?: string): Promise<boolean> {
    return this.setOutcome(scheduleId, occurrenceAt, nodeId, outcome, broadcastId);
  }
  private setOutcome(scheduleId: string, occurrenceAt: number, nodeId: string, outcome: OccurrenceOutcome, broadcastId?: string): boolean {
    const c = this.claims.get(`${scheduleId}\u0000${occurrenceAt}`);
    if (!c || c.nodeId !== nodeId || c.outcome !== undefined) return false;
    c.outcome = outcome;
    if (broadcastId !== undefined) c.broadcastId = broadcastId;
    return true;
  }
  async expireClaims(claimedBefore: number): Promise<OccurrenceRecord[]> {
    const out: OccurrenceRecord[] = [];
    for (const c of this.claims.values()) {
      if (c.outcome === undefined && c.claimedAt < claimedBefore) {
        c.outcome = 'missed';
        out.push({ ...c });
      }
    }
    return out;
  }
  async oldestPending(): Promise<number | undefined> {
    const p = [...this.claims.values()].filter((c) => c.outcome === undefined).map((c) => c.claimedAt);
    return p.length ? Math.min(...p) : undefined;
  }
  async occurrences(scheduleId: string, limit: number): Promise<OccurrenceRecord[]> {
    return [...this.claims.values()].filter((c) => c.scheduleId === scheduleId)
      .sort((a, b) => b.occurrenceAt - a.occurrenceAt).slice(0, limit).map((c) => ({ ...c }));
  }
  async prune(before: number): Promise<number> {
    let n = 0;
    for (const [k, c] of this.claims) {
      const latest = Math.max(...[...this.claims.values()].filter((x) => x.scheduleId === c.scheduleId).map((x) => x.occurrenceAt));
      if (c.occurrenceAt < before && c.outcome !== undefined && c.occurrenceAt < latest) { this.claims.delete(k); n++; }
    }
    return n;
  }

  private withCursor(s: Schedule): Schedule {
    const c = clone(s);
    const times = [...this.claims.values()].filter((x) => x.scheduleId === s.id).map((x) => x.occurrenceAt);
    if (times.length) c.lastFiredAt = Math.max(...times);
    return c;
  }
}

function clone(s: Schedule): Schedule {
  return structuredClone(s);
}

/** Lets the promise jobs queued so far run (the in-memory repo and SQLite answer within them). */
export async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

/**
 * Advances fake time by `ms` with a scheduler running. Idle stretches go synchronously (the scheduler's idle
 * wake-ups are synchronous; the async variant would yield a real macrotask per 60 s chunk); each step ends on the
 * next planned occurrence, whose claims (promises) settle before time moves on.
 */
export async function advance(scheduler: Scheduler, ms: number): Promise<void> {
  let left = ms;
  while (left > 0) {
    const next = scheduler.nextDue()?.at;
    const step = next === undefined ? left : Math.min(left, Math.max(1, next - Date.now()));
    vi.advanceTimersByTime(step);
    left -= step;
    await settle();
  }
}
