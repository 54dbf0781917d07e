/**
 * End to end over real MQTT: the whole app, speakers
 * registered through the API and run by the reference simulator
 * (src/sim/speaker runSpeakers), media uploaded through the API and fetched
 * by the speakers through signed URLs.
 *   - a schedule `at` a few seconds ahead → every speaker `completed`, and
 *     the log, CSV and totals show it;
 *   - play now, then stop mid-play → `stopped`;
 *   - a priority item goes before a waiting normal one (never interrupting);
 *   - an operator of commune A cannot play on commune B's speakers.
 * Waits are generous: the machine may be loaded.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';
import { runSpeakers, type SpeakerSim } from '../../src/sim/speaker/index.js';

let t: TestApp;
let sim: SpeakerSim;
let dir: string;
const SPEAKERS = ['loa-a1', 'loa-a2', 'loa-a3', 'loa-b1'];
const media: Record<string, { id: string; durationSec: number }> = {};

async function upload(seconds: number): Promise<{ id: string; durationSec: number }> {
  const file = path.join(dir, `tone-${seconds}.wav`);
  execFileSync('/usr/bin/ffmpeg', ['-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i', `sine=frequency=660:duration=${seconds}`, '-ac', '1', '-ar', '8000', file]);
  const form = new FormData();
  form.append('file', new Blob([readFileSync(file)], { type: 'audio/wav' }), `tone-${seconds}.wav`);
  const res = await fetch(`${t.httpUrl}/api/v1/media`, { method: 'POST', headers: { authorization: `Bearer ${t.adminToken}` }, body: form });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; durationSec: number };
}

async function waitBroadcast(id: string, done: (states: string[]) => boolean, timeoutMs = 45_000): Promise<any> {
  return waitFor(async () => {
    const r = await t.api('GET', `/api/v1/broadcasts/${id}`);
    return r.status === 200 && done(r.body.targets.map((x: any) => x.state)) ? r.body : undefined;
  }, timeoutMs, 200);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'keng-bc-e2e-'));
  t = await startTestApp();
  await seedAreas(t, [
    { code: 'p1', name: 'Tỉnh Thử', level: 'province' },
    { code: 'xa-a', name: 'Xã An Bình', level: 'commune', parent: 'p1' },
    { code: 'thon-a', name: 'Thôn Đông', level: 'village', parent: 'xa-a' },
    { code: 'xa-b', name: 'Xã Bình Minh', level: 'commune', parent: 'p1' },
  ]);
  const seeded = await seedDevices(t, SPEAKERS.map((id) => ({ id, kind: 'speaker', name: `Cụm loa ${id}`, area: id.includes('-b') ? 'xa-b' : 'thon-a' })));
  const creds = SPEAKERS.map((id) => ({ id, secret: seeded[id]!.secret }));
  media.short = await upload(1);
  media.long = await upload(6);
  sim = await runSpeakers({ url: t.mqttUrl, credentials: creds, speed: 1, telemetryIntervalMs: 60_000 });
  t.app.authenticator.add({ authenticate: (b) => (b === 'op-a' ? { kind: 'token', id: 'op-a', role: 'operator', areas: ['xa-a'] } : null) });
  await waitFor(() => SPEAKERS.every((id) => t.app.registry.isOnline(id)), 20_000, 50);
}, 90_000);

afterAll(async () => {
  await sim?.stop();
  await t?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('broadcast end to end', () => {
  it('a schedule a few seconds ahead plays on every speaker of the area; log, CSV and totals show it', async () => {
    const from = Date.now();
    const at = Date.now() + 3000;
    const s = await t.api('POST', '/api/v1/schedules', { name: 'Bản tin trưa', target: { areas: ['xa-a'] }, content: { mediaId: media.short!.id }, at });
    expect(s.status, JSON.stringify(s.body)).toBe(201);

    const b = await waitFor(async () => {
      const r = await t.api('GET', `/api/v1/broadcasts?scheduleId=${encodeURIComponent(s.body.id)}`);
      return r.status === 200 && r.body.length === 1 ? r.body[0] : undefined;
    }, 30_000, 200);
    expect(b.scheduleId).toBe(s.body.id);
    expect(Date.parse(b.plannedAt)).toBe(at);
    const done = await waitBroadcast(b.id, (st) => st.length === 3 && st.every((x) => x === 'completed'));
    expect(done.targets.map((x: any) => x.deviceId).sort()).toEqual(['loa-a1', 'loa-a2', 'loa-a3']);
    expect(done.priority).toBe('normal');

    const log = await t.api('GET', `/api/v1/broadcasts/log?scheduleId=${s.body.id}&area=xa-a`);
    expect(log.status).toBe(200);
    for (const id of ['loa-a1', 'loa-a2', 'loa-a3']) {
      const states = log.body.filter((e: any) => e.deviceId === id).map((e: any) => e.state);
      expect(states).toEqual(expect.arrayContaining(['pending', 'sent', 'accepted', 'playing', 'completed']));
    }

    const csv = await fetch(`${t.httpUrl}/api/v1/broadcasts/log?format=csv&scheduleId=${s.body.id}`, { headers: { authorization: `Bearer ${t.adminToken}` } });
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    expect(csv.headers.get('content-disposition')).toMatch(/^attachment; filename=".+\.csv"$/);
    const bytes = Buffer.from(await csv.arrayBuffer());
    expect([...bytes.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
    const text = bytes.toString('utf8');
    expect(text).toContain('Thôn Đông');
    expect(text.split('\r\n').filter((l) => l.includes(',completed,')).length).toBe(3);

    const totals = await t.api('GET', `/api/v1/broadcasts/totals?from=${from}`);
    expect(totals.status).toBe(200);
    const area = totals.body.areas.find((a: any) => a.area === 'thon-a');
    expect(area).toMatchObject({ planned: 3, played: 3, failed: 0, missed: 0 });
    expect((await t.api('GET', `/api/v1/schedules/${s.body.id}`)).body.nextRuns).toEqual([]);
    // the occurrence's record: fired by this node, with the broadcast it started
    const occ = await t.api('GET', `/api/v1/schedules/${s.body.id}/occurrences`);
    expect(occ.status).toBe(200);
    expect(occ.body).toEqual([expect.objectContaining({ outcome: 'fired', broadcastId: b.id })]);
    expect(Date.parse(occ.body[0].plannedAt)).toBe(at);
    expect((await t.api('GET', `/api/v1/schedules/${s.body.id}`)).body.lastFiredAt).toBe(occ.body[0].plannedAt);
  }, 90_000);

  it('play now, then stop mid-play', async () => {
    const r = await t.api('POST', '/api/v1/broadcasts', { target: { devices: ['loa-a1', 'loa-b1'] }, content: { mediaId: media.long!.id }, volume: 80 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.targets).toHaveLength(2);
    await waitBroadcast(r.body.id, (st) => st.every((x) => x === 'playing'));
    const stop = await t.api('POST', `/api/v1/broadcasts/${r.body.id}/stop`);
    expect(stop.status).toBe(200);
    expect(stop.body.stopRequestedAt).toMatch(/\+07:00$/);
    const done = await waitBroadcast(r.body.id, (st) => st.every((x) => x === 'stopped'));
    expect(done.counts).toEqual({ stopped: 2 });
  }, 90_000);

  it('a priority item goes before a waiting normal one and interrupts nothing', async () => {
    const play = async (id: string, priority: string) => {
      const r = await t.api('POST', '/api/v1/broadcasts', { target: { devices: [id] }, content: { mediaId: (priority === 'long' ? media.long : media.short)!.id }, priority: priority === 'long' ? 'normal' : priority });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      return r.body.id as string;
    };
    const first = await play('loa-a2', 'long');
    await waitBroadcast(first, (st) => st[0] === 'playing');
    const normal = await play('loa-a2', 'normal');
    await waitBroadcast(normal, (st) => st[0] === 'accepted');
    const prio = await play('loa-a2', 'priority');
    for (const id of [first, normal, prio]) await waitBroadcast(id, (st) => st[0] === 'completed', 60_000);
    const log = (await t.api('GET', '/api/v1/broadcasts/log?deviceId=loa-a2')).body as any[];
    const startedAt = (id: string) => Date.parse(log.find((e) => e.broadcastId === id && e.state === 'playing').at);
    expect(startedAt(prio)).toBeLessThan(startedAt(normal));
    expect(log.some((e) => e.broadcastId === first && e.state === 'preempted')).toBe(false);
  }, 120_000);

  it('an operator of commune A cannot play on commune B\'s speakers, and sees only A\'s part of a broadcast', async () => {
    const denied = await t.api('POST', '/api/v1/broadcasts', { target: { areas: ['xa-b'] }, content: { mediaId: media.short!.id } }, 'op-a');
    expect(denied.status).toBe(403);
    const hidden = await t.api('POST', '/api/v1/broadcasts', { target: { devices: ['loa-b1'] }, content: { mediaId: media.short!.id } }, 'op-a');
    expect(hidden.status).toBe(422);
    const both = await t.api('POST', '/api/v1/broadcasts', { target: { devices: ['loa-a3', 'loa-b1'] }, content: { mediaId: media.short!.id } });
    expect(both.status).toBe(201);
    const seen = await t.api('GET', `/api/v1/broadcasts/${both.body.id}`, undefined, 'op-a');
    expect(seen.status).toBe(200);
    expect(seen.body.targets.map((x: any) => x.deviceId)).toEqual(['loa-a3']);
    expect((await t.api('POST', `/api/v1/broadcasts/${both.body.id}/stop`, undefined, 'op-a')).status).toBe(403);
    const own = await t.api('POST', '/api/v1/broadcasts', { target: { areas: ['xa-a'] }, content: { mediaId: media.short!.id } }, 'op-a');
    expect(own.status).toBe(201);
    await waitBroadcast(own.body.id, (st) => st.every((x) => x === 'completed'), 60_000);
  }, 90_000);
});
