/** SQL of the `rpc_requests` table (see migrations.ts). Synchronous (better-sqlite3). */
import type { Statement } from 'better-sqlite3';
import type { SqliteDatabase } from '../storage/state/db.js';
import type { RpcRequest, RpcState } from './types.js';

export interface Row {
  id: string; device_id: string; method: string; params_json: string; expires_at: number; state: RpcState;
  created_at: number; sent_at: number | null; answered_at: number | null; response_json: string | null; tb_id: number | null;
}

function parseObj(s: string | null): Record<string, unknown> | null {
  if (s === null) return null;
  try {
    const v: unknown = JSON.parse(s);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : null;
  } catch { return null; }
}

export function toRequest(r: Row): RpcRequest {
  return {
    id: r.id, deviceId: r.device_id, method: r.method, params: parseObj(r.params_json) ?? {},
    expiresAt: r.expires_at, state: r.state, createdAt: r.created_at, sentAt: r.sent_at,
    answeredAt: r.answered_at, response: parseObj(r.response_json), tbId: r.tb_id ?? null,
  };
}

export interface NewRequestRow {
  id: string; deviceId: string; method: string; paramsJson: string; expiresAt: number; createdAt: number;
  /** Inserted as `sent` at this time (published right after the insert); `queued` without it. */
  sentAt?: number;
  /** Its integer id for an access-token session (from nextTbId, same transaction). */
  tbId?: number;
}

function isTbIdConflict(err: unknown): boolean {
  return (err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE' && String((err as Error).message).includes('tb_id');
}

/** Largest ThingsBoard request id: the Arduino SDK parses it with atoi (a C int, 32 bits). */
export const MAX_TB_ID = 2_147_483_647;

export class RpcStore {
  private readonly s: {
    insert: Statement; get: Statement; listAll: Statement; sent: Statement; requeue: Statement; answered: Statement;
    answerSent: Statement; expired: Statement; cancel: Statement; cancelByParam: Statement; dueQueued: Statement; dueSent: Statement; open: Statement; cleanup: Statement;
    byTbId: Statement; lastTbId: Statement; saveTbId: Statement; freeTbId: Statement; setTbId: Statement;
  };

  constructor(private readonly db: SqliteDatabase) {
    this.s = {
      insert: db.prepare(`INSERT INTO rpc_requests (id, device_id, method, params_json, expires_at, state, created_at, sent_at, tb_id)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      get: db.prepare('SELECT * FROM rpc_requests WHERE id = ?'),
      listAll: db.prepare('SELECT * FROM rpc_requests WHERE device_id = ? ORDER BY rowid'),
      sent: db.prepare(`UPDATE rpc_requests SET state = 'sent', sent_at = ? WHERE id = ? AND state IN ('queued', 'sent')`),
      requeue: db.prepare(`UPDATE rpc_requests SET state = 'queued' WHERE id = ? AND state = 'sent'`),
      answered: db.prepare(`UPDATE rpc_requests SET state = 'answered', answered_at = ?, response_json = ? WHERE id = ?`),
      answerSent: db.prepare(`UPDATE rpc_requests SET state = 'answered', answered_at = ?, response_json = ?
        WHERE id = ? AND device_id = ? AND state = 'sent'
        RETURNING id, device_id, method, params_json, expires_at, state, created_at, sent_at, answered_at, NULL AS response_json, tb_id`),
      expired: db.prepare(`UPDATE rpc_requests SET state = 'expired' WHERE id = ? AND state = ?`),
      cancel: db.prepare(`UPDATE rpc_requests SET state = 'cancelled', answered_at = ? WHERE id = ? AND state = 'queued'`),
      cancelByParam: db.prepare(`UPDATE rpc_requests SET state = 'cancelled', answered_at = ?
        WHERE state = 'queued' AND method = ? AND json_extract(params_json, ?) = ?`),
      dueQueued: db.prepare(`SELECT * FROM rpc_requests WHERE state = 'queued' AND expires_at <= ? ORDER BY rowid LIMIT 1000`),
      dueSent: db.prepare(`SELECT * FROM rpc_requests WHERE state = 'sent' AND expires_at <= ? ORDER BY rowid LIMIT 1000`),
      open: db.prepare(`SELECT DISTINCT device_id FROM rpc_requests WHERE state IN ('queued', 'sent')`),
      cleanup: db.prepare(`DELETE FROM rpc_requests WHERE state IN ('answered', 'expired', 'cancelled') AND created_at < ?`),
      byTbId: db.prepare('SELECT id FROM rpc_requests WHERE device_id = ? AND tb_id = ?'),
      lastTbId: db.prepare('SELECT last_id FROM rpc_tb_ids WHERE device_id = ?'),
      saveTbId: db.prepare(`INSERT INTO rpc_tb_ids (device_id, last_id) SELECT ?, ? WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?)
        ON CONFLICT (device_id) DO UPDATE SET last_id = excluded.last_id`),
      freeTbId: db.prepare('UPDATE rpc_requests SET tb_id = NULL WHERE device_id = ? AND tb_id = ?'),
      setTbId: db.prepare('UPDATE rpc_requests SET tb_id = ? WHERE id = ?'),
    };
  }

  insert(r: NewRequestRow): void {
    const sentAt = r.sentAt ?? null;
    const args = [r.id, r.deviceId, r.method, r.paramsJson, r.expiresAt, sentAt === null ? 'queued' : 'sent', r.createdAt, sentAt, r.tbId ?? null];
    if (r.tbId === undefined) { this.s.insert.run(...args); return; }
    this.s.saveTbId.run(r.deviceId, r.tbId, r.deviceId);
    try {
      this.s.insert.run(...args);
    } catch (err) {
      // Only after the ids wrapped (2^31 commands): an old command still holds this id. Free it and
      // insert again (cheaper than freeing before every insert: a broadcast inserts thousands).
      if (!isTbIdConflict(err)) throw err;
      this.s.freeTbId.run(r.deviceId, r.tbId);
      this.s.insert.run(...args);
    }
  }

  /** The device's last integer request id (0: none yet). */
  lastTbId(deviceId: string): number {
    const row = this.s.lastTbId.get(deviceId) as { last_id: number } | undefined;
    return row?.last_id ?? 0;
  }

  /**
   * Records `n` as the device's last id and frees it from an older command that still holds it
   * (only after the ids wrapped, 2^31 commands later). Run in the transaction that stores `n`.
   */
  private claimTbId(deviceId: string, n: number): void {
    this.s.freeTbId.run(deviceId, n);
    this.s.saveTbId.run(deviceId, n, deviceId);
  }

  /** Gives an existing command its integer id (a command first published to an access-token session on a re-send). */
  setTbId(id: string, deviceId: string, n: number): void {
    this.db.transaction(() => {
      this.claimTbId(deviceId, n);
      this.s.setTbId.run(n, id);
    })();
  }

  /** Keng's id of the device's command published with integer id `n`. */
  idOfTbId(deviceId: string, n: number): string | undefined {
    return (this.s.byTbId.get(deviceId, n) as { id: string } | undefined)?.id;
  }

  get(id: string): RpcRequest | undefined {
    const row = this.s.get.get(id) as Row | undefined;
    return row ? toRequest(row) : undefined;
  }

  listDevice(deviceId: string, states?: readonly RpcState[]): RpcRequest[] {
    const rows = (this.s.listAll.all(deviceId) as Row[]).map(toRequest);
    return states ? rows.filter((r) => states.includes(r.state)) : rows;
  }

  markSent(id: string, at: number): void { this.s.sent.run(at, id); }
  requeue(id: string): void { this.s.requeue.run(id); }
  markAnswered(id: string, at: number, responseJson: string): void { this.s.answered.run(at, responseJson, id); }

  /**
   * The usual answer in one statement: marks the request answered if it is the device's and `sent`,
   * and returns it as it is now (undefined otherwise: unknown, another device's, never sent, already
   * answered, expired… for the caller to sort out with get()). `response` is null in the result (the
   * caller has it; not parsed back).
   */
  answerSent(id: string, deviceId: string, at: number, responseJson: string): RpcRequest | undefined {
    const row = this.s.answerSent.get(at, responseJson, id, deviceId) as Row | undefined;
    return row ? toRequest(row) : undefined;
  }
  /** Only from the state it was read in (a response may have arrived meanwhile). */
  markExpired(id: string, from: RpcState): boolean { return this.s.expired.run(id, from).changes > 0; }
  cancelQueued(id: string, at: number): boolean { return this.s.cancel.run(at, id).changes > 0; }
  /** Withdraws every queued `method` command whose params hold `value` at JSON path `path` (rare: scans the queued ones). */
  cancelQueuedByParam(method: string, path: string, value: string, at: number): number {
    return this.s.cancelByParam.run(at, method, path, value).changes;
  }

  /** Queued commands past expiresAt, and sent ones past expiresAt + grace. */
  dueForExpiry(now: number, graceMs: number): RpcRequest[] {
    const q = this.s.dueQueued.all(now) as Row[];
    const s = this.s.dueSent.all(now - graceMs) as Row[];
    return [...q, ...s].map(toRequest);
  }

  devicesWithOpen(): string[] {
    return (this.s.open.all() as Array<{ device_id: string }>).map((r) => r.device_id);
  }

  deleteFinishedBefore(t: number): number { return this.s.cleanup.run(t).changes; }
}
