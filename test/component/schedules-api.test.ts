/**
 * Schedules through the whole app (OpenAPI at /docs, tag schedules; bad
 * input too): CRUD with nextRuns in +07:00, overlap 409 naming
 * the clash (higher priority allowed), clear 4xx for bad input, a TTS
 * schedule rendered with the real espeak-ng, media in use, and area scope.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

let t: TestApp;
let wavDir: string;
const STREAM = 'http://radio.example.vn/live.mp3';

async function uploadWav(seconds: number): Promise<{ id: string; durationSec: number }> {
  const file = path.join(wavDir, `tone-${seconds}.wav`);
  execFileSync('/usr/bin/ffmpeg', ['-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i', `sine=frequency=440:duration=${seconds}`, file]);
  const form = new FormData();
  form.append('file', new Blob([readFileSync(file)], { type: 'audio/wav' }), 'tone.wav');
  const res = await fetch(`${t.httpUrl}/api/v1/media`, { method: 'POST', headers: { authorization: `Bearer ${t.adminToken}` }, body: form });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; durationSec: number };
}

beforeAll(async () => {
  wavDir = mkdtempSync(path.join(tmpdir(), 'keng-sched-'));
  t = await startTestApp({ broadcast: { streamHosts: ['radio.example.vn'] } }); // listed: trusted without DNS (none in tests)
  await seedAreas(t, [
    { code: 'p1', name: 'Tỉnh Thử', level: 'province' },
    { code: 'xa-a', name: 'Xã An Bình', level: 'commune', parent: 'p1' },
    { code: 'thon-a1', name: 'Thôn Đông', level: 'village', parent: 'xa-a' },
    { code: 'xa-b', name: 'Xã Bình Minh', level: 'commune', parent: 'p1' },
  ]);
  await seedDevices(t, [
    { id: 'spk-a1', kind: 'speaker', name: 'Loa Đình làng', area: 'thon-a1' },
    { id: 'spk-a2', kind: 'speaker', name: 'Loa chợ', area: 'thon-a1' },
    { id: 'spk-b1', kind: 'speaker', name: 'Loa UBND xã B', area: 'xa-b' },
    { id: 'sen-a1', kind: 'sensor', name: 'Cảm biến đất', area: 'thon-a1' },
  ]);
  t.app.authenticator.add({
    authenticate: (b) => b === 'op-a' ? { kind: 'token', id: 'op-a', role: 'operator', areas: ['xa-a'] }
      : b === 'viewer-a' ? { kind: 'token', id: 'viewer-a', role: 'viewer', areas: ['xa-a'] } : null,
  });
}, 60_000);

afterAll(async () => {
  await t?.stop();
  rmSync(wavDir, { recursive: true, force: true });
});

describe('schedules audit', () => {
  it('a schedule change and its audit record commit together: audited on success, neither stored nor audited when the audit fails', async () => {
    const body = { name: 'Audit', target: { areas: ['xa-b'] }, content: { streamUrl: STREAM }, cron: '0 4 * * 1', durationSec: 60 };
    const audited = async (action: string, id: string) => (await t.app.accounts.audit.query({ action, limit: 50 }))
      .filter((e) => e.target === `schedule:${id}`).length;
    const made = await t.api('POST', '/api/v1/schedules', body);
    expect(made.status).toBe(201);
    expect(await audited('schedule.create', made.body.id)).toBe(1);
    const audit = t.app.accounts.audit;
    const record = audit.record.bind(audit);
    audit.record = () => Promise.reject(new Error('audit unavailable'));
    let failed: { status: number; body: any };
    try {
      failed = await t.api('POST', '/api/v1/schedules', { ...body, name: 'Audit 2', cron: '0 5 * * 1' });
      const del = await t.api('DELETE', `/api/v1/schedules/${made.body.id}`);
      expect(del.status).toBe(500);
    } finally { audit.record = record; }
    expect(failed.status).toBe(500);
    const names = ((await t.api('GET', '/api/v1/schedules')).body as Array<{ name: string }>).map((x) => x.name);
    expect(names).toContain('Audit');
    expect(names).not.toContain('Audit 2');
    expect((await t.api('DELETE', `/api/v1/schedules/${made.body.id}`)).status).toBe(204);
    expect(await audited('schedule.delete', made.body.id)).toBe(1);
  });
});

describe('schedules CRUD', () => {
  it('creates a daily schedule with nextRuns in +07:00, reads, patches and deletes it', async () => {
    const r = await t.api('POST', '/api/v1/schedules', {
      name: 'Bản tin sáng', target: { areas: ['xa-a'] }, content: { streamUrl: STREAM }, cron: '0 6 * * *', durationSec: 900,
    });
    expect(r.status).toBe(201);
    const s = r.body;
    expect(s.id).toEqual(expect.any(String));
    expect(s).toMatchObject({ name: 'Bản tin sáng', timezone: 'Asia/Ho_Chi_Minh', volume: 70, priority: 'normal', enabled: true, cron: '0 6 * * *' });
    expect(s.nextRuns).toHaveLength(5);
    for (const n of s.nextRuns) expect(n).toMatch(/T06:00:00\.000\+07:00$/);
    expect(s.createdAt).toMatch(/\+07:00$/);

    expect((await t.api('GET', '/api/v1/schedules')).body.map((x: any) => x.id)).toContain(s.id);
    expect((await t.api('GET', `/api/v1/schedules/${s.id}`)).body.name).toBe('Bản tin sáng');

    const p = await t.api('PATCH', `/api/v1/schedules/${s.id}`, { name: 'Bản tin sáng (sửa)', enabled: false });
    expect(p.status).toBe(200);
    expect(p.body).toMatchObject({ name: 'Bản tin sáng (sửa)', enabled: false, nextRuns: [] });

    expect((await t.api('DELETE', `/api/v1/schedules/${s.id}`)).status).toBe(204);
    expect((await t.api('GET', `/api/v1/schedules/${s.id}`)).status).toBe(404);
  });

  it('a one-off at in the future has exactly that next run', async () => {
    const at = Date.now() + 3 * 3600_000;
    const r = await t.api('POST', '/api/v1/schedules', {
      name: 'Thông báo họp', target: { devices: ['spk-b1'] }, content: { streamUrl: STREAM }, at, durationSec: 60,
    });
    expect(r.status).toBe(201);
    expect(r.body.nextRuns).toHaveLength(1);
    expect(Date.parse(r.body.nextRuns[0])).toBe(at);
    expect(r.body.at).toMatch(/\+07:00$/);
    await t.api('DELETE', `/api/v1/schedules/${r.body.id}`);
  });
});

describe('overlap', () => {
  it('refuses an overlapping schedule with 409 naming the clash, unless it has higher priority', async () => {
    const first = await t.api('POST', '/api/v1/schedules', {
      name: 'Nhạc buổi chiều', target: { devices: ['spk-a1'] }, content: { streamUrl: STREAM }, cron: '0 17 * * *', durationSec: 1800,
    });
    expect(first.status).toBe(201);
    const clash = await t.api('POST', '/api/v1/schedules', {
      name: 'Tin thời tiết', target: { areas: ['thon-a1'] }, content: { streamUrl: STREAM }, cron: '15 17 * * *', durationSec: 300,
    });
    expect(clash.status).toBe(409);
    expect(clash.body.error.code).toBe('KENG_ERR_CONFLICT');
    expect(clash.body.error.message).toContain('Nhạc buổi chiều');
    expect(clash.body.error.message).toContain(first.body.id);
    expect(clash.body.error.message).toContain('spk-a1');
    expect(clash.body.error.details.clashes[0].at).toMatch(/T17:15:00\.000\+07:00$/);

    const prio = await t.api('POST', '/api/v1/schedules', {
      name: 'Tin thời tiết khẩn', target: { areas: ['thon-a1'] }, content: { streamUrl: STREAM }, cron: '15 17 * * *', durationSec: 300, priority: 'priority',
    });
    expect(prio.status).toBe(201);
    // a normal one that does not overlap in time is fine
    const later = await t.api('POST', '/api/v1/schedules', {
      name: 'Tin tối', target: { devices: ['spk-a1'] }, content: { streamUrl: STREAM }, cron: '0 19 * * *', durationSec: 600,
    });
    expect(later.status).toBe(201);
    // moving it onto the afternoon music by PATCH is refused too
    const moved = await t.api('PATCH', `/api/v1/schedules/${later.body.id}`, { cron: '10 17 * * *' });
    expect(moved.status).toBe(409);
    for (const id of [first.body.id, prio.body.id, later.body.id]) await t.api('DELETE', `/api/v1/schedules/${id}`);
  });
});

describe('bad input', () => {
  const base = { name: 'X', target: { devices: ['spk-a1'] }, content: { streamUrl: STREAM }, durationSec: 60 };

  it('invalid cron → 400 naming cron', async () => {
    const r = await t.api('POST', '/api/v1/schedules', { ...base, cron: '61 * * * *' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('KENG_ERR_VALIDATION');
    expect(r.body.error.message).toMatch(/cron/);
    const six = await t.api('POST', '/api/v1/schedules', { ...base, cron: '0 0 6 * * *' });
    expect(six.status).toBe(400);
    expect(six.body.error.message).toMatch(/5 fields/);
  });

  it('at in the past → 400', async () => {
    const r = await t.api('POST', '/api/v1/schedules', { ...base, at: '2020-01-01T06:00:00+07:00' });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toContain('at: is in the past');
  });

  it('unknown area, unknown device, a sensor, unknown media → 422 naming them', async () => {
    const at = Date.now() + 3600_000;
    const area = await t.api('POST', '/api/v1/schedules', { ...base, at, target: { areas: ['khong-co'] } });
    expect(area.status).toBe(422);
    expect(area.body.error.message).toContain('area "khong-co" does not exist');
    const dev = await t.api('POST', '/api/v1/schedules', { ...base, at, target: { devices: ['spk-zz'] } });
    expect(dev.status).toBe(422);
    expect(dev.body.error.message).toContain('device "spk-zz" does not exist');
    const sensor = await t.api('POST', '/api/v1/schedules', { ...base, at, target: { devices: ['sen-a1'] } });
    expect(sensor.status).toBe(422);
    expect(sensor.body.error.message).toContain('not a speaker');
    const media = await t.api('POST', '/api/v1/schedules', { ...base, at, content: { mediaId: 'aaaaaaaaaaaaaaaaaaaa' } });
    expect(media.status).toBe(422);
    expect(media.body.error.message).toContain('media "aaaaaaaaaaaaaaaaaaaa" does not exist');
  });

  it('missing fields, both cron and at, a stream without durationSec → 400 listing the fields', async () => {
    const r = await t.api('POST', '/api/v1/schedules', { name: '', target: {}, content: { streamUrl: STREAM }, cron: '0 6 * * *', at: Date.now() + 1000 });
    expect(r.status).toBe(400);
    const fields = r.body.error.details.map((d: any) => d.field);
    expect(fields).toEqual(expect.arrayContaining(['name', 'target', 'at', 'durationSec']));
  });
});

describe('content', () => {
  it('renders ttsText once with espeak-ng and stores it as a mediaId; media in use cannot be deleted', async () => {
    const r = await t.api('POST', '/api/v1/schedules', {
      name: 'Thông báo tiêm phòng', target: { areas: ['xa-a'] }, cron: '30 7 * * 1',
      content: { ttsText: 'Thông báo: sáng thứ hai tiêm phòng cho gia cầm tại nhà văn hoá thôn.' },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const mediaId = r.body.content.mediaId as string;
    expect(mediaId).toMatch(/^[a-f0-9]{20}$/);
    const m = await t.api('GET', `/api/v1/media/${mediaId}`);
    expect(m.status).toBe(200);
    expect(m.body.source).toBe('tts');
    expect(m.body.durationSec).toBeGreaterThan(1);

    const del = await t.api('DELETE', `/api/v1/media/${mediaId}`);
    expect(del.status).toBe(409);
    expect(del.body.error.code).toBe('KENG_ERR_MEDIA_IN_USE');
    expect(del.body.error.message).toContain('Thông báo tiêm phòng');

    expect((await t.api('DELETE', `/api/v1/schedules/${r.body.id}`)).status).toBe(204);
    expect((await t.api('DELETE', `/api/v1/media/${mediaId}`)).status).toBe(204);
  }, 60_000);

  it('uses the uploaded media\'s duration for the overlap check', async () => {
    const media = await uploadWav(2);
    const a = await t.api('POST', '/api/v1/schedules', { name: 'Chuông 1', target: { devices: ['spk-a2'] }, content: { mediaId: media.id }, cron: '0 8 * * *' });
    expect(a.status).toBe(201);
    // 08:00:00 + 2 s does not reach 08:01
    const b = await t.api('POST', '/api/v1/schedules', { name: 'Chuông 2', target: { devices: ['spk-a2'] }, content: { mediaId: media.id }, cron: '1 8 * * *' });
    expect(b.status).toBe(201);
    expect((await t.api('DELETE', `/api/v1/media/${media.id}`)).status).toBe(409);
    for (const id of [a.body.id, b.body.id]) await t.api('DELETE', `/api/v1/schedules/${id}`);
    expect((await t.api('DELETE', `/api/v1/media/${media.id}`)).status).toBe(204);
  }, 60_000);
});

describe('scope', () => {
  const body = (target: unknown) => ({ name: 'Loa xã', target, content: { streamUrl: STREAM }, cron: '0 12 * * *', durationSec: 60 });

  it('an operator schedules only within their areas and sees only those schedules', async () => {
    const other = await t.api('POST', '/api/v1/schedules', body({ areas: ['xa-b'] }));
    expect(other.status).toBe(201);

    const outArea = await t.api('POST', '/api/v1/schedules', body({ areas: ['xa-b'] }), 'op-a');
    expect(outArea.status).toBe(403);
    const outDevice = await t.api('POST', '/api/v1/schedules', body({ devices: ['spk-b1'] }), 'op-a');
    expect(outDevice.status).toBe(422); // reported like an unknown device: existence does not leak

    const mine = await t.api('POST', '/api/v1/schedules', { ...body({ areas: ['thon-a1'] }), cron: '0 13 * * *' }, 'op-a');
    expect(mine.status).toBe(201);
    expect(mine.body.createdBy).toBe('op-a');

    const list = await t.api('GET', '/api/v1/schedules', undefined, 'op-a');
    expect(list.status).toBe(200);
    const ids = list.body.map((s: any) => s.id);
    expect(ids).toContain(mine.body.id);
    expect(ids).not.toContain(other.body.id);
    expect((await t.api('GET', `/api/v1/schedules/${other.body.id}`, undefined, 'op-a')).status).toBe(404);
    expect((await t.api('DELETE', `/api/v1/schedules/${other.body.id}`, undefined, 'op-a')).status).toBe(404);

    expect((await t.api('GET', '/api/v1/schedules', undefined, 'viewer-a')).status).toBe(403);
    expect((await t.api('POST', '/api/v1/schedules', body({ areas: ['xa-a'] }), 'viewer-a')).status).toBe(403);
    expect((await t.api('GET', '/api/v1/schedules', undefined, 'nope')).status).toBe(401);

    for (const id of [other.body.id, mine.body.id]) await t.api('DELETE', `/api/v1/schedules/${id}`);
  });

  it('is in the OpenAPI document', async () => {
    const res = await fetch(`${t.httpUrl}/docs/json`);
    if (res.status !== 200) return; // docs route path differs: covered elsewhere
    const doc = (await res.json()) as any;
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/api/v1/schedules', '/api/v1/schedules/{id}', '/api/v1/broadcasts', '/api/v1/broadcasts/log']));
  });
});
