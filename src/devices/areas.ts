/**
 * Areas: the area tree (area-tree.ts) backed by the `areas` table, written through the `Db` port.
 * Another process (the `keng` CLI) or, in cluster mode, another node may add areas while the
 * server runs: the registry reloads the tree (registry.ts says when); on the embedded store a miss
 * asks it to look at once (`sync`).
 */
import { sql } from 'kysely';
import type { Clock } from '../core/index.js';
import { Errors } from '../core/errors.js';
import type { SqliteDatabase } from '../storage/state/index.js';
import { AreaTree, validateNewArea } from './area-tree.js';
import { Statements, constraintOf, type RegistryWrite, type Trx } from './statements.js';
import type { Area } from './types.js';
import type { AreasApi, NewArea } from './registry-types.js';

export interface AreasDeps {
  clock: Clock;
  /** Reloads areas and devices when another connection committed (the registry's; embedded store). */
  sync: () => void;
  write: RegistryWrite;
  /** Brings the caches up to date before a change that checks them (the registry's). */
  refresh: () => Promise<void>;
}

export interface AreaRow { code: string; name: string; level: Area['level']; parent: string | null; created_at: number }

const SELECT_AREAS = 'SELECT code, name, level, parent, created_at FROM areas';

function prepare(db: SqliteDatabase) {
  return { allAreas: db.prepare(SELECT_AREAS) };
}

/** Every area row, in one statement of `k` (a snapshot on the reload path). */
export async function readAreas(k: Trx): Promise<AreaRow[]> {
  return (await sql<AreaRow>`SELECT code, name, level, parent, created_at FROM areas ORDER BY code`.execute(k)).rows;
}

export class Areas implements AreasApi {
  private readonly tree = new AreaTree();
  private readonly sql = new Statements(prepare);

  constructor(private readonly deps: AreasDeps) {}

  /** Embedded store: prepares the statement of the synchronous reload. */
  open(db: SqliteDatabase): void { this.sql.open(db); }

  close(): void { this.sql.close(); }

  get size(): number { return this.tree.size; }

  async createArea(input: NewArea): Promise<Area> {
    const a = validateNewArea(input);
    await this.deps.refresh();
    if (this.tree.has(a.code)) throw Errors.AREA_EXISTS(a.code);
    if (a.parent && !this.tree.has(a.parent)) this.reload();
    this.tree.checkParent(a);
    const area: Area = { code: a.code, name: a.name, level: a.level, parent: a.parent ?? null, createdAt: this.deps.clock.now() };
    try {
      await this.deps.write(async (trx) => {
        await sql`INSERT INTO areas (code, name, level, parent, created_at)
          VALUES (${area.code}, ${area.name}, ${area.level}, ${area.parent}, ${area.createdAt})`.execute(trx);
      });
    } catch (err) {
      const c = constraintOf(err);
      if (c === 'primary') throw Errors.AREA_EXISTS(a.code);
      // The parent is on another node's side of a reload not seen here yet, or gone: the hierarchy check's answer.
      if (c === 'foreign') throw Errors.NOT_FOUND(`Area "${a.parent ?? ''}"`);
      throw err;
    }
    if (!this.tree.has(area.code)) this.tree.add(area);
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

  /** Embedded store: replaces the tree with the table's rows, synchronously (nothing when not open). */
  reload(): void {
    if (!this.sql.isOpen) return;
    this.load(this.sql.q.allAreas.all() as AreaRow[]);
  }

  /** Replaces the tree with these rows. */
  load(rows: AreaRow[]): void {
    this.tree.load(rows.map((r) => ({ code: r.code, name: r.name, level: r.level, parent: r.parent, createdAt: r.created_at })));
  }
}
