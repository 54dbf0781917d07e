/**
 * The area tree in memory: province → commune → village (OpenAPI at /docs,
 * tag areas: two-tier local government since July 2025, so no districts).
 * Subtrees are cached and rebuilt when the tree changes.
 */
import { Errors, withDetails } from '../core/errors.js';
import { AREA_CODE_RE, type Area, type AreaLevel } from './types.js';
import type { NewArea } from './registry-types.js';

/** The level a parent must have, per level (null: no parent allowed). */
export const PARENT_LEVEL: Record<AreaLevel, AreaLevel | null> = {
  province: null,
  commune: 'province',
  village: 'commune',
};

const LEVELS = Object.keys(PARENT_LEVEL) as AreaLevel[];
export const MAX_NAME_LENGTH = 128;

function invalid(field: string, message: string): Error {
  return withDetails(Errors.VALIDATION(message), { field });
}

/** Shape checks (400). Hierarchy checks need the tree: see AreaTree.checkParent. */
export function validateNewArea(a: NewArea): NewArea {
  if (typeof a !== 'object' || a === null) throw invalid('', 'area must be an object');
  if (typeof a.code !== 'string' || !AREA_CODE_RE.test(a.code)) {
    throw invalid('code', `code must match ${AREA_CODE_RE.source}`);
  }
  if (typeof a.name !== 'string' || a.name.trim().length === 0 || a.name.length > MAX_NAME_LENGTH) {
    throw invalid('name', `name must be 1 to ${MAX_NAME_LENGTH} characters`);
  }
  if (typeof a.level !== 'string' || !LEVELS.includes(a.level)) {
    throw invalid('level', `level must be one of ${LEVELS.join(', ')}`);
  }
  if (a.parent !== undefined && a.parent !== null && (typeof a.parent !== 'string' || !AREA_CODE_RE.test(a.parent))) {
    throw invalid('parent', `parent must match ${AREA_CODE_RE.source}`);
  }
  return { code: a.code, name: a.name, level: a.level, parent: a.parent ?? null };
}

export class AreaTree {
  private byCode = new Map<string, Area>();
  private children = new Map<string, string[]>();
  private subtrees = new Map<string, readonly string[]>();
  private subtreeSets = new Map<string, ReadonlySet<string>>();

  /** Replaces the whole tree (start, or another process changed the database). */
  load(areas: Area[]): void {
    this.byCode = new Map(areas.map((a) => [a.code, Object.freeze({ ...a })]));
    this.rebuild();
  }

  add(area: Area): void {
    this.byCode.set(area.code, Object.freeze({ ...area }));
    this.rebuild();
  }

  get(code: string): Area | undefined {
    return this.byCode.get(code);
  }

  has(code: string): boolean {
    return this.byCode.has(code);
  }

  get size(): number { return this.byCode.size; }

  /** Provinces first, then communes, then villages; by code within a level. */
  list(): Area[] {
    return [...this.byCode.values()].sort((x, y) =>
      LEVELS.indexOf(x.level) - LEVELS.indexOf(y.level) || (x.code < y.code ? -1 : x.code > y.code ? 1 : 0));
  }

  /** The code and all its descendants; [] for an unknown code. */
  subtree(code: string): string[] {
    return [...this.subtreeOf(code)];
  }

  /** Same as subtree(), as a cached set (device filters). */
  subtreeSet(code: string): ReadonlySet<string> {
    let s = this.subtreeSets.get(code);
    if (!s) {
      s = new Set(this.subtreeOf(code));
      this.subtreeSets.set(code, s);
    }
    return s;
  }

  /**
   * Hierarchy rules (409 AREA_HIERARCHY): a province has no parent, a commune's
   * parent is a province, a village's parent is a commune.
   */
  checkParent(a: NewArea): void {
    const want = PARENT_LEVEL[a.level];
    const parentCode = a.parent ?? null;
    if (want === null) {
      if (parentCode !== null) throw Errors.AREA_HIERARCHY(`a province has no parent (got parent "${parentCode}")`);
      return;
    }
    if (parentCode === null) throw Errors.AREA_HIERARCHY(`a ${a.level} needs a parent ${want}`);
    const parent = this.byCode.get(parentCode);
    if (!parent) throw Errors.AREA_HIERARCHY(`parent area "${parentCode}" does not exist`);
    if (parent.level !== want) {
      throw Errors.AREA_HIERARCHY(`a ${a.level}'s parent must be a ${want}; "${parentCode}" is a ${parent.level}`);
    }
  }

  private subtreeOf(code: string): readonly string[] {
    let s = this.subtrees.get(code);
    if (!s) {
      const out: string[] = [];
      if (this.byCode.has(code)) {
        const stack = [code];
        const seen = new Set<string>();
        while (stack.length) {
          const c = stack.pop()!;
          if (seen.has(c)) continue; // defensive: a corrupted table must not loop
          seen.add(c);
          out.push(c);
          for (const child of this.children.get(c) ?? []) stack.push(child);
        }
      }
      s = Object.freeze(out);
      this.subtrees.set(code, s);
    }
    return s;
  }

  private rebuild(): void {
    this.children = new Map();
    for (const a of this.byCode.values()) {
      if (a.parent === null) continue;
      const list = this.children.get(a.parent);
      if (list) list.push(a.code); else this.children.set(a.parent, [a.code]);
    }
    this.subtrees = new Map();
    this.subtreeSets = new Map();
  }
}
