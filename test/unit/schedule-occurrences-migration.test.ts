/**
 * The migration to occurrence claims over a state store with schedules: each schedule's old cursor
 * (`last_fired_at`) becomes the claim of that occurrence (fired with its broadcast when the broadcast
 * log has it, else missed), so the first start after the upgrade neither replays nor re-reports it.
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { ALL_MIGRATIONS } from '../../src/migrations.js';

describe('schedule_occurrences migration', () => {
  it('turns each last_fired_at into a claim; schedules never fired get none', () => {
    const db = new Database(':memory:');
    const at = ALL_MIGRATIONS.findIndex((m) => m.name.startsWith('schedule_occurrences'));
    expect(at).toBe(ALL_MIGRATIONS.length - 1);
    for (const m of ALL_MIGRATIONS.slice(0, at)) db.exec(m.up);
    const insert = db.prepare(`INSERT INTO schedules (id, name, target_json, content_json, cron, timezone, volume, priority, created_at, updated_at, last_fired_at)
      VALUES (?, 'x', '{}', '{}', '0 6 * * *', 'Asia/Ho_Chi_Minh', 70, 'normal', 1, 1, ?)`);
    insert.run('played', 1000);
    insert.run('missed', 2000);
    insert.run('never', null);
    db.exec(`INSERT INTO broadcasts (id, schedule_id, planned_at, priority, volume, content_json, not_after, created_at) VALUES ('s-played-1000', 'played', 1000, 'normal', 70, '{}', 9, 1)`);
    for (const m of ALL_MIGRATIONS.slice(at)) db.exec(m.up);
    expect(db.prepare('SELECT schedule_id, occurrence_at, node_id, claimed_at, outcome, broadcast_id FROM schedule_occurrences ORDER BY schedule_id').all()).toEqual([
      { schedule_id: 'missed', occurrence_at: 2000, node_id: 'upgrade', claimed_at: 2000, outcome: 'missed', broadcast_id: null },
      { schedule_id: 'played', occurrence_at: 1000, node_id: 'upgrade', claimed_at: 1000, outcome: 'fired', broadcast_id: 's-played-1000' },
    ]);
    // applied again (renumbered by the lead at merge) it changes nothing
    db.exec(ALL_MIGRATIONS[at]!.up);
    expect(db.prepare('SELECT COUNT(*) FROM schedule_occurrences').pluck().get()).toBe(2);
    expect(() => db.exec(`INSERT INTO schedule_occurrences VALUES ('x', 1, 'n', 1, 'bogus', NULL)`)).toThrow(/CHECK/);
  });
});
