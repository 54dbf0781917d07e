/** The two shared-attribute tables (migration.ts): rows are JSON text the API already validated. */
import { statementsOn, type SqliteDatabase } from '../storage/state/index.js';

export type OwnerKind = 'device' | 'area';
export interface Owner { kind: OwnerKind; id: string }

interface Row { owner: string; key: string; value_json: string }

function prepare(db: SqliteDatabase) {
  const q = (table: string, col: string) => ({
    all: db.prepare(`SELECT ${col} AS owner, key, value_json FROM ${table}`),
    put: db.prepare(`INSERT INTO ${table} (${col}, key, value_json, updated_at) VALUES (?, ?, ?, ?)
      ON CONFLICT (${col}, key) DO UPDATE SET value_json = excluded.value_json, updated_at = excluded.updated_at`),
    del: db.prepare(`DELETE FROM ${table} WHERE ${col} = ? AND key = ?`),
  });
  return { db, device: q('device_shared_attributes', 'device_id'), area: q('area_shared_attributes', 'area_code') };
}

export class SharedAttributesRepo {
  /** Statements for the state store's connection, prepared when first needed (it opens at start). */
  private readonly sql = statementsOn(() => this.db(), prepare);

  constructor(private readonly db: () => SqliteDatabase) {}

  /** Every stored value: owner → key → value. */
  load(kind: OwnerKind): Map<string, Map<string, unknown>> {
    const out = new Map<string, Map<string, unknown>>();
    for (const r of this.sql()[kind].all.all() as Row[]) {
      const m = out.get(r.owner) ?? out.set(r.owner, new Map()).get(r.owner)!;
      m.set(r.key, JSON.parse(r.value_json));
    }
    return out;
  }

  /** Applies one owner's change in one transaction (null deletes the key). */
  apply(owner: Owner, patch: Record<string, unknown>, at: number): void {
    const s = this.sql();
    const t = s[owner.kind];
    s.db.transaction(() => {
      for (const [k, v] of Object.entries(patch)) {
        if (v === null) t.del.run(owner.id, k);
        else t.put.run(owner.id, k, JSON.stringify(v), at);
      }
    })();
  }
}
