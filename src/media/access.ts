/**
 * Which media a caller sees and may change (docs/roles.md, "Media").
 *
 * A media item belongs to areas (`areas`: its uploader's areas, or what an
 * admin set); `"*"` marks media an admin shared with everyone, and an empty
 * list media nobody but admins handle (e.g. alert announcements). A caller
 * sees an item when one of its areas overlaps the caller's scope: lies in it
 * (a village's media for the commune's staff) or above the caller's own areas
 * (the commune's media for a village's staff). It may change or delete an item
 * only when every area of the item lies within its scope. Everything else is
 * answered as if the item did not exist.
 *
 * Free of the auth module: the caller is given as its scope and own areas.
 */
import { Errors, withDetails } from '../core/errors.js';

/** Media shared with every area (set by an admin). */
export const SHARED = '*';

export interface MediaViewer {
  /** Admin, or a "*" scope: sees and manages every item, may share. */
  all: boolean;
  /** Area codes whose media the caller sees: its scope, the areas above its own, and SHARED. */
  sees: ReadonlySet<string>;
  /** Area codes the caller administers (its scope): media wholly inside them it may change or delete. */
  owns: ReadonlySet<string>;
  /** What its uploads belong to unless it says otherwise: its own areas, or [SHARED] for `all`. */
  home: readonly string[];
}

/**
 * The viewer of a caller with `scope` (policy.scope: 'all' or every code it
 * covers) and its own `areas`; `parentOf` walks the area tree upwards.
 */
export function mediaViewer(scope: 'all' | ReadonlySet<string>, areas: readonly string[], parentOf: (code: string) => string | null | undefined): MediaViewer {
  if (scope === 'all') return { all: true, sees: new Set(), owns: new Set(), home: [SHARED] };
  const sees = new Set<string>([...scope, SHARED]);
  for (const a of areas) {
    // Bounded walk: a corrupt tree with a cycle must not hang a request.
    for (let p = parentOf(a), n = 0; p && n < 32; p = parentOf(p), n++) sees.add(p);
  }
  return { all: false, sees, owns: scope, home: [...new Set(areas)] };
}

export function canSee(v: MediaViewer, areas: readonly string[]): boolean {
  return v.all || areas.some((a) => v.sees.has(a));
}

/** Wholly within the caller's scope (shared or unassigned media: admins only). */
export function canManage(v: MediaViewer, areas: readonly string[]): boolean {
  return v.all || (areas.length > 0 && areas.every((a) => a !== SHARED && v.owns.has(a)));
}

/**
 * Areas a caller asks an item to belong to, checked and normalised: 422 for
 * an unknown area, 403 for an area outside its scope or SHARED from a
 * non-admin; SHARED alone replaces any other codes.
 */
export function assignableAreas(v: MediaViewer, wanted: readonly string[], exists: (code: string) => boolean): string[] {
  const codes = [...new Set(wanted.map((a) => a.trim()).filter(Boolean))];
  if (codes.length === 0) throw withDetails(Errors.VALIDATION('areas: give at least one area code, or "*" to share with every area'), [{ in: 'body', field: 'areas', message: 'is empty' }]);
  if (codes.includes(SHARED)) {
    if (!v.all) throw Errors.FORBIDDEN('only an admin may share media with every area ("*")');
    return [SHARED];
  }
  const unknown = codes.filter((a) => !exists(a));
  if (unknown.length > 0) throw withDetails(Errors.UNPROCESSABLE(`area "${unknown[0]}" does not exist`), unknown.map((a) => ({ field: 'areas', message: `area "${a}" does not exist` })));
  const outside = codes.find((a) => !v.all && !v.owns.has(a));
  if (outside) throw Errors.FORBIDDEN(`area "${outside}" is outside your areas`);
  return codes;
}
