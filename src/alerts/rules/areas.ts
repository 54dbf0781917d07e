/**
 * "Is this area inside the rule's area?" on the telemetry path: each area's
 * chain of ancestors is walked once and kept (areas are never moved or
 * deleted; a code not known yet is not kept, it may be created later).
 */
import type { Area } from '../../devices/types.js';

export interface AreaLookup { getArea(code: string): Pick<Area, 'parent' | 'name'> | undefined }

/** The deepest tree Keng builds has 3 levels; a guard against cycles in bad data. */
const MAX_DEPTH = 16;
const MAX_CACHED = 100_000;

export class AreaChains {
  private readonly chains = new Map<string, ReadonlySet<string>>();
  constructor(private readonly areas: AreaLookup) {}

  /** Whether `code` is `ancestor` or lies below it. */
  covers(ancestor: string, code: string): boolean {
    return code === ancestor || this.chain(code).has(ancestor);
  }

  name(code: string): string | undefined { return this.areas.getArea(code)?.name; }

  exists(code: string): boolean { return this.areas.getArea(code) !== undefined; }

  private chain(code: string): ReadonlySet<string> {
    const known = this.chains.get(code);
    if (known) return known;
    const codes = new Set<string>();
    let cur: string | null | undefined = code;
    let complete = true;
    while (cur && codes.size < MAX_DEPTH && !codes.has(cur)) {
      codes.add(cur);
      const a = this.areas.getArea(cur);
      if (!a) { complete = false; break; }
      cur = a.parent;
    }
    if (complete) {
      if (this.chains.size >= MAX_CACHED) this.chains.clear();
      this.chains.set(code, codes);
    }
    return codes;
  }
}
