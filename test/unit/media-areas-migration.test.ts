/**
 * The media-areas migration over a state store with media already in it:
 * each item gets its uploader's areas (a user's, an API token's; "*" for an
 * admin and the admin token), an item whose uploader is unknown or gone gets
 * none (admins only), and the column refuses anything but a JSON array.
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { ALL_MIGRATIONS } from '../../src/migrations.js';

describe('media areas migration', () => {
  it('gives existing media their uploader\'s areas', () => {
    const db = new Database(':memory:');
    const names = ALL_MIGRATIONS.map((m) => m.name);
    const at = names.indexOf('media-areas');
    expect(at).toBeGreaterThan(0);
    for (const m of ALL_MIGRATIONS.slice(0, at)) db.exec(m.up);
    db.exec(`
      INSERT INTO users (username, password_hash, role, areas_json, created_at, updated_at) VALUES
        ('op-a', 'x', 'operator', '["ca"]', 0, 0), ('root', 'x', 'admin', '[]', 0, 0);
      INSERT INTO api_tokens (id, name, token_hash, role, areas_json, created_by, created_at) VALUES ('tok_1', 'ioc', 'h', 'operator', '["cb","va1"]', 'admin', 0);`);
    const media = db.prepare(`INSERT INTO media (id, name, mime, ext, size, sha256, duration_sec, source, text, created_at, created_by)
      VALUES (?, 'm', 'audio/mpeg', 'mp3', 1, '${'0'.repeat(64)}', 1, 'upload', NULL, 0, ?)`);
    for (const [id, by] of [['m-op', 'op-a'], ['m-root', 'root'], ['m-tok', 'tok_1'], ['m-admin', 'admin'], ['m-gone', 'deleted-user'], ['m-null', null]]) media.run(id, by);
    db.exec(ALL_MIGRATIONS[at]!.up);
    const areas = Object.fromEntries((db.prepare('SELECT id, areas_json FROM media').all() as Array<{ id: string; areas_json: string }>).map((r) => [r.id, JSON.parse(r.areas_json)]));
    expect(areas).toEqual({ 'm-op': ['ca'], 'm-root': ['*'], 'm-tok': ['cb', 'va1'], 'm-admin': ['*'], 'm-gone': [], 'm-null': [] });
    expect(() => db.prepare(`UPDATE media SET areas_json = '"ca"' WHERE id = 'm-op'`).run()).toThrow(/CHECK/);
    expect(() => db.prepare(`UPDATE media SET areas_json = 'not json' WHERE id = 'm-op'`).run()).toThrow();
  });
});
