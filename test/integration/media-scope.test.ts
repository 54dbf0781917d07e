/**
 * Media belongs to areas (security review, finding 2), through the whole app
 * over real HTTP: an operator of commune B tries to list, open, get a link
 * to, change, delete and schedule commune A's media, and is answered as if it
 * did not exist; an admin's shared media serves both communes; the 409 of a
 * delete no longer names another commune's schedule; the changes are in the
 * audit log. Audio is made in the test (silent WAV), checked by the real
 * ffprobe and ffmpeg.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedCommune } from '../helpers/seed.js';
import { silentWav, uploadAudio } from '../helpers/audio.js';
import { requireTools } from './media-fixtures.js';

requireTools();

const PW = 'media scope password 1';
let t: TestApp;
/** Session tokens: operators of commune ca, of its village va1, of commune cb; a viewer of ca. */
const tok: Record<'opA' | 'opVillage' | 'opB' | 'viewerA', string> = { opA: '', opVillage: '', opB: '', viewerA: '' };
let mediaA: any;
let shared: any;
let n = 0;

async function user(username: string, role: string, areas: string[]): Promise<string> {
  expect((await t.api('POST', '/api/v1/users', { username, password: PW, role, areas })).status).toBe(201);
  const r = await t.api('POST', '/api/v1/auth/login', { username, password: PW }, '');
  expect(r.status).toBe(200);
  return r.body.token as string;
}

const upload = (token: string, opts: { name?: string; areas?: string } = {}) => uploadAudio(t.httpUrl, token, silentWav(2), { name: `Bản tin ${++n}`, ...opts });
const ids = (list: Array<{ id: string }>) => list.map((m) => m.id);
/** A daily schedule at a minute of its own (no overlap 409). */
const schedule = (token: string, area: string, mediaId: string, name = `Lịch ${++n}`) => t.api('POST', '/api/v1/schedules', {
  name, target: { areas: [area] }, content: { mediaId }, cron: `${n % 60} ${5 + (Math.floor(n / 60) % 12)} * * *`,
}, token);

beforeAll(async () => {
  t = await startTestApp();
  await seedCommune(t, [['spk-a', 'va1', 'speaker'], ['spk-b', 'cb', 'speaker']]);
  tok.opA = await user('op-a', 'operator', ['ca']);
  tok.opVillage = await user('op-va1', 'operator', ['va1']);
  tok.opB = await user('op-b', 'operator', ['cb']);
  tok.viewerA = await user('view-a', 'viewer', ['ca']);
  const a = await upload(tok.opA, { name: 'Thông báo xã A' });
  expect(a.status).toBe(201);
  mediaA = a.body;
  const s = await upload(t.adminToken, { name: 'Quốc ca' });
  expect(s.status).toBe(201);
  shared = s.body;
}, 120_000);
afterAll(async () => { await t?.stop(); });

describe('an upload belongs to its uploader\'s areas', () => {
  it('an operator\'s upload belongs to its areas, an admin\'s is shared ("*")', () => {
    expect(mediaA).toMatchObject({ areas: ['ca'], createdBy: 'op-a' });
    expect(shared).toMatchObject({ areas: ['*'], createdBy: 'admin' });
  });

  it('an operator may name areas within its own, not beyond them, and never "*"', async () => {
    const village = await upload(tok.opA, { areas: 'va1' });
    expect(village.status).toBe(201);
    expect(village.body.areas).toEqual(['va1']);
    const before = (await t.api('GET', '/api/v1/media?limit=1000')).body.length;
    for (const areas of ['cb', 'ca,cb', '*', 'p1']) {
      const r = await upload(tok.opA, { areas });
      expect(r.status, areas).toBe(403);
      expect(r.body.error.code).toBe('KENG_ERR_FORBIDDEN');
    }
    expect((await upload(t.adminToken, { areas: 'no-such-area' })).status).toBe(422);
    expect((await t.api('GET', '/api/v1/media?limit=1000')).body.length).toBe(before);
  });
});

describe('another commune\'s media is as if absent', () => {
  it('the operator of B does not list it, and cannot open it, get its link, change or delete it (404)', async () => {
    const list = await t.api('GET', '/api/v1/media?limit=1000', undefined, tok.opB);
    expect(list.status).toBe(200);
    expect(ids(list.body)).not.toContain(mediaA.id);
    for (const [method, body] of [['GET', undefined], ['PATCH', { name: 'đổi tên' }], ['PATCH', { areas: ['cb'] }], ['DELETE', undefined]] as const) {
      const r = await t.api(method, `/api/v1/media/${mediaA.id}`, body, tok.opB);
      expect(r.status, `${method} ${JSON.stringify(body)}`).toBe(404);
      expect(r.body.error).toMatchObject({ code: 'KENG_ERR_NOT_FOUND', message: `Media "${mediaA.id}" not found` });
      expect(JSON.stringify(r.body)).not.toContain('/file?');
    }
    // Exactly what an id that never existed gets.
    const never = await t.api('DELETE', '/api/v1/media/ffffffffffffffffffff', undefined, tok.opB);
    expect(never.body.error.message).toBe('Media "ffffffffffffffffffff" not found');
    // Untouched.
    expect((await t.api('GET', `/api/v1/media/${mediaA.id}`)).body).toMatchObject({ name: 'Thông báo xã A', areas: ['ca'] });
  });

  it('the operator of B cannot schedule or broadcast it: 422 as for unknown media', async () => {
    const s = await schedule(tok.opB, 'cb', mediaA.id);
    expect(s.status).toBe(422);
    expect(s.body.error).toMatchObject({ code: 'KENG_ERR_UNPROCESSABLE', message: expect.stringContaining(`media "${mediaA.id}" does not exist`) });
    const b = await t.api('POST', '/api/v1/broadcasts', { target: { areas: ['cb'] }, content: { mediaId: mediaA.id } }, tok.opB);
    expect(b.status).toBe(422);
    expect(b.body.error.message).toContain('does not exist');
    // Its own schedule cannot be switched to it either.
    const own = await schedule(tok.opB, 'cb', shared.id);
    expect(own.status).toBe(201);
    const patch = await t.api('PATCH', `/api/v1/schedules/${own.body.id}`, { content: { mediaId: mediaA.id } }, tok.opB);
    expect(patch.status).toBe(422);
    expect((await t.api('DELETE', `/api/v1/schedules/${own.body.id}`, undefined, tok.opB)).status).toBe(204);
  });

  it('commune A\'s own staff see it, and so do its villages\' staff, who may not delete it (403)', async () => {
    expect(ids((await t.api('GET', '/api/v1/media?limit=1000', undefined, tok.opA)).body)).toContain(mediaA.id);
    expect(ids((await t.api('GET', '/api/v1/media?limit=1000', undefined, tok.opVillage)).body)).toContain(mediaA.id);
    const one = await t.api('GET', `/api/v1/media/${mediaA.id}`, undefined, tok.opVillage);
    expect(one.status).toBe(200);
    expect(one.body.url).toMatch(/\/media\/[a-f0-9]{20}\/file\?exp=\d+&sig=/);
    expect((await schedule(tok.opVillage, 'va1', mediaA.id)).status).toBe(201);
    const del = await t.api('DELETE', `/api/v1/media/${mediaA.id}`, undefined, tok.opVillage);
    expect(del.status).toBe(403);
    expect(del.body.error.message).toContain('areas outside yours');
    // Viewers have no media rights at all.
    expect((await t.api('GET', '/api/v1/media', undefined, tok.viewerA)).status).toBe(403);
  });

  it('paging goes through what the caller sees (the filter is in the query, not after it)', async () => {
    for (let i = 0; i < 3; i++) expect((await upload(tok.opB)).status).toBe(201);
    const mine = (await t.api('GET', '/api/v1/media?limit=1000', undefined, tok.opB)).body as Array<{ id: string; areas: string[] }>;
    expect(mine.every((m) => m.areas.includes('cb') || m.areas.includes('*'))).toBe(true);
    const page = (await t.api('GET', '/api/v1/media?limit=2&offset=1', undefined, tok.opB)).body;
    expect(ids(page)).toEqual(ids(mine).slice(1, 3));
  });
});

describe('shared media', () => {
  it('an admin\'s shared media is listed for both communes and both may schedule it; only admins delete it', async () => {
    for (const token of [tok.opA, tok.opB]) {
      expect(ids((await t.api('GET', '/api/v1/media?limit=1000', undefined, token)).body)).toContain(shared.id);
      expect((await t.api('GET', `/api/v1/media/${shared.id}`, undefined, token)).status).toBe(200);
    }
    const s = await schedule(tok.opB, 'cb', shared.id);
    expect(s.status).toBe(201);
    const del = await t.api('DELETE', `/api/v1/media/${shared.id}`, undefined, tok.opA);
    expect(del.status).toBe(403);
    expect(del.body.error.message).toContain('only an admin');
    expect((await t.api('PATCH', `/api/v1/media/${shared.id}`, { areas: ['ca'] }, tok.opA)).status).toBe(403);
    expect((await t.api('DELETE', `/api/v1/schedules/${s.body.id}`)).status).toBe(204);
  });

  it('an admin gives media other areas later (PATCH): it moves from one commune to the other', async () => {
    const m = (await upload(tok.opA)).body;
    const moved = await t.api('PATCH', `/api/v1/media/${m.id}`, { areas: ['cb'] });
    expect(moved.status).toBe(200);
    expect(moved.body.areas).toEqual(['cb']);
    expect((await t.api('GET', `/api/v1/media/${m.id}`, undefined, tok.opA)).status).toBe(404);
    expect((await t.api('GET', `/api/v1/media/${m.id}`, undefined, tok.opB)).status).toBe(200);
    expect((await t.api('PATCH', `/api/v1/media/${m.id}`, { areas: ['*'] })).body.areas).toEqual(['*']);
    expect((await t.api('GET', `/api/v1/media/${m.id}`, undefined, tok.opA)).status).toBe(200);
    expect((await t.api('PATCH', `/api/v1/media/${m.id}`, { areas: [] })).status).toBe(400);
    expect((await t.api('PATCH', `/api/v1/media/${m.id}`, {})).status).toBe(400);
  });

  it('an operator renames and re-areas its own media within its areas', async () => {
    const m = (await upload(tok.opA)).body;
    const r = await t.api('PATCH', `/api/v1/media/${m.id}`, { name: 'Tin thôn A1', areas: ['va1'] }, tok.opA);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ name: 'Tin thôn A1', areas: ['va1'] });
    expect((await t.api('PATCH', `/api/v1/media/${m.id}`, { areas: ['cb'] }, tok.opA)).status).toBe(403);
  });
});

describe('media in use (409)', () => {
  it('names a schedule of another commune to nobody but those who see it', async () => {
    const m = (await upload(tok.opA)).body;
    // An admin schedules commune A's media in commune B (admins see all media).
    const secret = await schedule(t.adminToken, 'cb', m.id, 'Lịch riêng xã B');
    expect(secret.status).toBe(201);
    const refused = await t.api('DELETE', `/api/v1/media/${m.id}`, undefined, tok.opA);
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('KENG_ERR_MEDIA_IN_USE');
    expect(refused.body.error.message).toBe(`Media "${m.id}" is still used by a schedule`);
    expect(JSON.stringify(refused.body)).not.toContain('Lịch riêng xã B');
    expect(JSON.stringify(refused.body)).not.toContain(secret.body.id);
    // The admin sees every schedule: named.
    const admin = await t.api('DELETE', `/api/v1/media/${m.id}`);
    expect(admin.status).toBe(409);
    expect(admin.body.error.message).toContain(`schedule "Lịch riêng xã B" (${secret.body.id})`);
    // Commune A's own schedule is named to commune A.
    const own = await schedule(tok.opA, 'ca', m.id, 'Lịch xã A');
    expect((await t.api('DELETE', `/api/v1/schedules/${secret.body.id}`)).status).toBe(204);
    const named = await t.api('DELETE', `/api/v1/media/${m.id}`, undefined, tok.opA);
    expect(named.body.error.message).toContain('schedule "Lịch xã A"');
    expect((await t.api('DELETE', `/api/v1/schedules/${own.body.id}`, undefined, tok.opA)).status).toBe(204);
    expect((await t.api('DELETE', `/api/v1/media/${m.id}`, undefined, tok.opA)).status).toBe(204);
  });
});

describe('audit', () => {
  it('records upload, TTS, change and delete with who, from where and the item\'s areas', async () => {
    const up = (await upload(tok.opB, { name: 'Để xoá' })).body;
    const tts = await t.api('POST', '/api/v1/media/tts', { text: 'Xin chào bà con xã B', lang: 'vi' }, tok.opB);
    expect(tts.status).toBe(201);
    expect(tts.body.areas).toEqual(['cb']);
    expect((await t.api('PATCH', `/api/v1/media/${up.id}`, { name: 'Đã đổi' }, tok.opB)).status).toBe(200);
    expect((await t.api('DELETE', `/api/v1/media/${up.id}`, undefined, tok.opB)).status).toBe(204);
    const log = (await t.api('GET', '/api/v1/audit?limit=200')).body.entries as Array<{ action: string; actor: string; target: string; ip: string; before: any; after: any }>;
    const of = (action: string, id: string) => log.find((e) => e.action === action && e.target === `media:${id}`);
    expect(of('media.upload', up.id)).toMatchObject({ actor: 'user:op-b', ip: expect.any(String), after: { name: 'Để xoá', areas: ['cb'], sha256: up.sha256 } });
    expect(of('media.tts', tts.body.id)).toMatchObject({ actor: 'user:op-b', after: { source: 'tts', areas: ['cb'] } });
    expect(of('media.update', up.id)).toMatchObject({ actor: 'user:op-b', before: { name: 'Để xoá' }, after: { name: 'Đã đổi' } });
    expect(of('media.delete', up.id)).toMatchObject({ actor: 'user:op-b', before: { name: 'Đã đổi', areas: ['cb'] } });
    // A refused attempt changes nothing and records nothing.
    expect(log.filter((e) => e.target === `media:${mediaA.id}` && e.action !== 'media.upload')).toEqual([]);
  });
});
