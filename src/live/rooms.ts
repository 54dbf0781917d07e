/**
 * Room names and the area-ancestor cache. A client subscribed to device D is
 * in room "d:D"; one subscribed to area A is in "a:A". An event of a device in
 * area V goes to "d:D" and to "a:X" for V and every ancestor X of V (an area
 * room receives its whole subtree). Ancestor chains are computed once per area
 * and cached; the cache is cleared when the registry changes.
 */
export const deviceRoom = (id: string): string => `d:${id}`;
export const areaRoom = (code: string): string => `a:${code}`;
/** Clients whose role may not read broadcasts are also in this room; broadcast events skip it. */
export const NO_BROADCAST_ROOM = 'x:no-broadcast';

export interface AreaLookup {
  getArea(code: string): { parent: string | null } | undefined;
}

/** Deepest area tree Keng builds is 3 levels; guard against cycles in bad data. */
const MAX_DEPTH = 16;

export class AncestorCache {
  private readonly chains = new Map<string, { codes: readonly string[]; rooms: readonly string[] }>();
  constructor(private readonly areas: AreaLookup) {}

  /** The area and its ancestors, nearest first (unknown area: just itself). */
  codes(area: string): readonly string[] { return this.entry(area).codes; }
  /** Room names of codes(area). */
  rooms(area: string): readonly string[] { return this.entry(area).rooms; }

  clear(): void { this.chains.clear(); }

  private entry(area: string): { codes: readonly string[]; rooms: readonly string[] } {
    let e = this.chains.get(area);
    if (!e) {
      const codes: string[] = [];
      let cur: string | null | undefined = area;
      while (cur && codes.length < MAX_DEPTH && !codes.includes(cur)) {
        codes.push(cur);
        cur = this.areas.getArea(cur)?.parent;
      }
      e = { codes, rooms: codes.map(areaRoom) };
      if (this.chains.size > 100_000) this.chains.clear();
      this.chains.set(area, e);
    }
    return e;
  }
}
