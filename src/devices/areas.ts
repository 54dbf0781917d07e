/**
 * Areas: the area tree (area-tree.ts) backed by the `areas` table. Another
 * process (the `keng` CLI) may add areas while the server runs: a miss asks
 * the registry to reload (`sync`) before answering.
 */
import type { Clock } from '../core/index.js';
import { Errors } from '../core/errors.js';
import type { SqliteDatabase } from '../storage/state/index.js';
import { AreaTree, validateNewArea } from './area-tree.js';
import { Statements } from './statements.js';
import type { Area } from './types.js';
import type { AreasApi, NewArea } from './registry-types.js';

export interface AreasDeps {
  clock: Clock;
  /** Reloads areas and devices when another connection committed (the registry's). */
  sync: () => void;
}

interface AreaRow { code: string; name: string; level: Area['level']; parent: string | null; created_at: number }

function prepare(db: SqliteDatabase) {
  return {
    allAreas: db.prepare('SELECT code, name, level, parent, created_at FROM areas'),
    insertArea: db.prepare('INSERT INTO areas (code, name, level, parent, created_at) VALUES (?, ?, ?, ?, ?)'),
  };
}

export class Areas implements AreasApi {
  private readonly tree = new AreaTree();
  private readonly sql = new Statements(prepare);

  constructor(private readonly deps: AreasDeps) {}

  /** Prepares the statements and loads the tree. */
  open(db: SqliteDatabase): void {
    this.sql.open(db);
    this.reload();
  }

  close(): void { this.sql.close(); }

  get size(): number { return this.tree.size; }

  createArea(input: NewArea): Area {
    const a = validateNewArea(input);
    this.deps.sync();
    if (this.tree.has(a.code)) throw Errors.AREA_EXISTS(a.code);
    if (a.parent && !this.tree.has(a.parent)) this.reload();
    this.tree.checkParent(a);
    const area: Area = { code: a.code, name: a.name, level: a.level, parent: a.parent ?? null, createdAt: this.deps.clock.now() };
    try {
      this.sql.q.insertArea.run(area.code, area.name, area.level, area.parent, area.createdAt);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw Errors.AREA_EXISTS(a.code);
      throw err;
    }
    this.tree.add(area);
    return this.tree.get(area.code)!;
  }

  listAreas(): Area[] {
    this.deps.sync();
    return this.tree.list();
  }

  getArea(code: string): Area | undefined {
    const a = this.tree.get(code);
    if (a) return a;
    this.deps.sync();
    return this.tree.get(code);
  }

  subtree(code: string): string[] {
    if (!this.tree.has(code)) this.deps.sync();
    return this.tree.subtree(code);
  }

  /** subtree() as a cached set, as the tree is now (the caller has synced). */
  subtreeSet(code: string): ReadonlySet<string> {
    return this.tree.subtreeSet(code);
  }

  /** Replaces the tree with the table's rows. */
  reload(): void {
    const rows = this.sql.q.allAreas.all() as AreaRow[];
    this.tree.load(rows.map((r) => ({ code: r.code, name: r.name, level: r.level, parent: r.parent, createdAt: r.created_at })));
  }
}
