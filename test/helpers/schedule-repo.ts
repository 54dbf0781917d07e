/** In-memory schedule repo for scheduler tests (same semantics as the SQLite one, deep copies in and out). */
import type { Schedule } from '../../src/broadcast/schedule/model.js';
import type { ScheduleRepo } from '../../src/broadcast/schedule/repo.js';

export class MemoryScheduleRepo implements ScheduleRepo {
  private readonly rows = new Map<string, Schedule>();

  list(): Schedule[] { return [...this.rows.values()].map(clone); }
  get(id: string): Schedule | undefined {
    const s = this.rows.get(id);
    return s ? clone(s) : undefined;
  }
  insert(s: Schedule): void {
    if (this.rows.has(s.id)) throw new Error(`schedule ${s.id} exists`);
    const c = clone(s);
    delete c.lastFiredAt;
    this.rows.set(s.id, c);
  }
  update(s: Schedule): boolean {
    const prev = this.rows.get(s.id);
    if (!prev) return false;
    const c = clone(s);
    c.createdAt = prev.createdAt;
    if (prev.lastFiredAt === undefined) delete c.lastFiredAt;
    else c.lastFiredAt = prev.lastFiredAt;
    this.rows.set(s.id, c);
    return true;
  }
  delete(id: string): boolean { return this.rows.delete(id); }
  setLastFired(id: string, plannedAt: number): void {
    const s = this.rows.get(id);
    if (s && (s.lastFiredAt === undefined || s.lastFiredAt < plannedAt)) s.lastFiredAt = plannedAt;
  }
}

function clone(s: Schedule): Schedule {
  return structuredClone(s);
}
