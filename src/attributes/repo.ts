/**
 * The two shared-attribute tables (migration.ts; on PostgreSQL pg-schema.ts)
 * through the state store's `Db` port, so in cluster mode every node reads
 * and writes the same rows. Rows are JSON text the API already validated.
 */
import { sql, type Transaction } from 'kysely';
import { Errors } from '../core/errors.js';
import type { Db } from '../storage/sql/index.js';

export type OwnerKind = 'device' | 'area';
export interface Owner { kind: OwnerKind; id: string }

/** One owner's values before and after a change, as stored. */
export interface OwnChange { before: Record<string, unknown>; after: Record<string, unknown> }

interface Row { owner: string; key: string; value_json: string }

/** Table and owner column per kind: constants, never input. */
const TABLES = {
  device: { table: sql.raw('device_shared_attributes'), col: sql.raw('device_id') },
  area: { table: sql.raw('area_shared_attributes'), col: sql.raw('area_code') },
} as const;

export class SharedAttributesRepo {
  constructor(private readonly db: Db<unknown>) {}

  /** Every stored value: owner → key → value. */
  async load(kind: OwnerKind): Promise<Map<string, Map<string, unknown>>> {
    const { table, col } = TABLES[kind];
    const out = new Map<string, Map<string, unknown>>();
    const rows = (await sql<Row>`SELECT ${col} AS owner, key, value_json FROM ${table} ORDER BY ${col}, key`.execute(this.db.kysely)).rows;
    for (const r of rows) {
      const m = out.get(r.owner) ?? out.set(r.owner, new Map()).get(r.owner)!;
      m.set(r.key, JSON.parse(r.value_json));
    }
    return out;
  }

  /**
   * Applies one owner's change (null deletes the key) in one transaction and
   * returns the owner's values before and after it, as stored. Throws
   * UNPROCESSABLE, nothing stored, when the owner would hold more than
   * `maxKeys` keys. `within` runs in the same transaction (the audit entry):
   * if it throws, nothing is stored either. On PostgreSQL changes of one
   * owner from several nodes queue on an advisory lock, so each one's
   * "before" is the previous one's "after" and the key limit holds.
   */
  async apply(owner: Owner, patch: Record<string, unknown>, at: number, maxKeys: number,
    within?: (change: OwnChange, trx: Transaction<unknown>) => Promise<unknown>): Promise<OwnChange> {
    const { table, col } = TABLES[owner.kind];
    return this.db.write(async (trx) => {
      if (this.db.dialect === 'postgres') {
        await sql`SELECT pg_advisory_xact_lock(hashtext(${`keng.shared_attributes:${owner.kind}:${owner.id}`}))`.execute(trx);
      }
      const before = await this.own(trx, owner);
      for (const [k, v] of Object.entries(patch)) {
        if (v === null) await sql`DELETE FROM ${table} WHERE ${col} = ${owner.id} AND key = ${k}`.execute(trx);
        else {
          await sql`INSERT INTO ${table} (${col}, key, value_json, updated_at) VALUES (${owner.id}, ${k}, ${JSON.stringify(v)}, ${at})
            ON CONFLICT (${col}, key) DO UPDATE SET value_json = excluded.value_json, updated_at = excluded.updated_at`.execute(trx);
        }
      }
      const after = await this.own(trx, owner);
      if (Object.keys(after).length > maxKeys) throw Errors.UNPROCESSABLE(`at most ${maxKeys} shared attributes per ${owner.kind}`);
      const change = { before, after };
      if (within) await within(change, trx);
      return change;
    });
  }

  /**
   * Removes a deleted owner's values. On the embedded store its foreign key
   * did already (ON DELETE CASCADE); PostgreSQL has no devices or areas table
   * to cascade from.
   */
  async remove(owner: Owner): Promise<void> {
    const { table, col } = TABLES[owner.kind];
    await sql`DELETE FROM ${table} WHERE ${col} = ${owner.id}`.execute(this.db.kysely);
  }

  private async own(trx: Transaction<unknown>, owner: Owner): Promise<Record<string, unknown>> {
    const { table, col } = TABLES[owner.kind];
    const rows = (await sql<Row>`SELECT key, value_json FROM ${table} WHERE ${col} = ${owner.id} ORDER BY key`.execute(trx)).rows;
    return Object.fromEntries(rows.map((r) => [r.key, JSON.parse(r.value_json) as unknown]));
  }
}
