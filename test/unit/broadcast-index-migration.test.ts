/**
 * Migrations 8 and 9 (indexes written on every broadcast transition): applied over a state store
 * with data, the rows stay, the dropped indexes are gone, and the queries that need an index
 * still get one (log by broadcast, log by time, a device's commands in order).
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { ALL_MIGRATIONS } from '../../src/migrations.js';

const plan = (db: Database.Database, sql: string, n: number): string =>
  (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...Array(n).fill(null)) as Array<{ detail: string }>).map((r) => r.detail).join('; ');

describe('broadcast / rpc index migrations', () => {
  it('apply over existing data; the remaining indexes serve the queries', () => {
    const db = new Database(':memory:');
    const names = ALL_MIGRATIONS.map((m) => m.name);
    const at = names.findIndex((n) => n.startsWith('broadcast indexes'));
    expect(at).toBe(7); // version 8, appended after the broadcast tables (7)
    expect(names[8]).toMatch(/^rpc_requests: device index/);
    for (const m of ALL_MIGRATIONS.slice(0, at)) db.exec(m.up);
    db.exec(`INSERT INTO areas VALUES ('p', 'P', 'province', NULL, 0);
      INSERT INTO devices (id, kind, name, area, secret_hash, token_lookup, token_hash, created_at) VALUES ('loa-1', 'speaker', 'l', 'p', 'x', 't', 'x', 0);
      INSERT INTO broadcasts (id, planned_at, priority, volume, content_json, not_after, created_at) VALUES ('bc_1', 1, 'normal', 50, '{}', 9, 1);
      INSERT INTO broadcast_targets (broadcast_id, device_id, area, state, updated_at) VALUES ('bc_1', 'loa-1', 'p', 'sent', 1);
      INSERT INTO broadcast_log (at, broadcast_id, device_id, area, state, source) VALUES (1, 'bc_1', 'loa-1', 'p', 'pending', 'controller');
      INSERT INTO rpc_requests (id, device_id, method, params_json, expires_at, state, created_at) VALUES ('r_1', 'loa-1', 'm', '{}', 9, 'queued', 1);`);
    for (const m of ALL_MIGRATIONS.slice(at)) db.exec(m.up);
    const idx = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%' AND tbl_name IN ('broadcast_log', 'broadcast_targets', 'rpc_requests') ORDER BY name`).pluck().all();
    expect(idx).toEqual(['broadcast_log_at', 'broadcast_log_broadcast', 'broadcast_targets_area', 'broadcast_targets_device', 'rpc_requests_device', 'rpc_requests_open_expiry', 'rpc_requests_tb_id']);
    expect(db.prepare('SELECT COUNT(*) FROM broadcast_log').pluck().get()).toBe(1);
    expect(db.prepare('SELECT COUNT(*) FROM rpc_requests').pluck().get()).toBe(1);
    // The rebuild for `unconfirmed` (CHECK constraints) kept the rows, the log's numbering and its append-only triggers.
    expect(db.prepare('SELECT state FROM broadcast_targets').pluck().get()).toBe('sent');
    db.exec(`UPDATE broadcast_targets SET state = 'unconfirmed'`);
    db.exec(`INSERT INTO broadcast_log (at, broadcast_id, device_id, area, state, prev_state, source) VALUES (2, 'bc_1', 'loa-1', 'p', 'unconfirmed', 'accepted', 'controller')`);
    expect(db.prepare('SELECT seq FROM broadcast_log ORDER BY seq').pluck().all()).toEqual([1, 2]);
    expect(() => db.exec('UPDATE broadcast_log SET detail = 1')).toThrow(/append-only/);
    expect(() => db.exec('DELETE FROM broadcast_log')).toThrow(/append-only/);
    expect(() => db.exec(`UPDATE broadcast_targets SET state = 'bogus'`)).toThrow(/CHECK/);
    const log = (byBroadcast: boolean) => `SELECT * FROM broadcast_log WHERE at >= ? AND at < ? AND (? IS NULL OR schedule_id = ?) AND (? IS NULL OR device_id = ?)
      AND ${byBroadcast ? 'broadcast_id = ?' : '? IS NULL'} AND (? IS NULL OR area IN (SELECT value FROM json_each(?))) ORDER BY at, seq LIMIT ?`;
    expect(plan(db, log(true), 10)).toMatch(/USING INDEX broadcast_log_broadcast/);
    expect(plan(db, log(false), 10)).toMatch(/USING INDEX broadcast_log_at/);
    const dev = plan(db, 'SELECT * FROM rpc_requests WHERE device_id = ? ORDER BY rowid', 1);
    expect(dev).toMatch(/USING INDEX rpc_requests_device/);
    expect(dev).not.toMatch(/TEMP B-TREE/);
  });
});
