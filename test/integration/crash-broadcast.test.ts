/**
 * Crash after a PUBACK (docs/design/state-window.md §5 step 4): a speaker's answer (`accepted`) and
 * playback event (`started`) are acknowledged only after the state window holding their writes has
 * committed (src/broadcast/wire.ts `settled`, awaited by the ingest before its PUBACK). So SIGKILLing
 * Keng the instant the PUBACK of `started` reaches the speaker must lose nothing: after a restart on
 * the same data directory the target is `playing`, its log holds `accepted` and `playing` once each,
 * and the RPC command is `answered`.
 *
 * Why this fails when the PUBACK comes first: the window (8 ms on the embedded store, sync=full)
 * would then still be open, or its COMMIT not yet run, when the PUBACK leaves; the test process calls
 * kill() synchronously inside mqtt.js's PUBACK callback, so SIGKILL reaches Keng well within those
 * 8 ms and the `started` write (and, with many speakers, the writes of the last answers) is lost:
 * the restarted Keng shows an earlier state. Checked by removing the `stateDurable` wait in
 * src/ingest/service.ts (built code, 2026-12-06, two runs): the one speaker came back `sent` (its
 * `accepted` was lost too), and 7, then 11, of the 20 came back `accepted`; with the wait both pass.
 *
 * A real Keng process (dist/src/main.js, embedded store, default sync=full), real MQTT (mqtt.js).
 * Needs a build (npx tsc -p tsconfig.json).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentWav, uploadAudio } from '../helpers/audio.js';
import { connectSpeaker, type FakeSpeaker } from '../helpers/fake-speaker.js';
import { waitFor } from '../helpers/mqtt.js';
import { spawnKeng, type KengProcess } from '../helpers/process.js';

const TOKEN = 'crash-broadcast-admin-token-0123456789';
let procs: KengProcess[] = [];
let speakers: FakeSpeaker[] = [];
let dirs: string[] = [];

afterEach(async () => {
  await Promise.all(speakers.map((s) => s.close()));
  speakers = [];
  for (const p of procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
  await Promise.all(procs.map((p) => p.exited));
  procs = [];
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

async function api<T = any>(base: string, method: string, route: string, body?: unknown): Promise<T> {
  const r = await fetch(base + route, { method, headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

interface Played { speaker: FakeSpeaker; secret: string; requestId: string }

/**
 * Keng with `n` connected speakers; a broadcast to all of them through the API; each speaker answers
 * `accepted` to its play command and, once that is acknowledged, reports `started`. SIGKILL inside the
 * PUBACK callback of the last `started`. Returns the broadcast, each speaker's request and the data dir.
 */
async function playThenKill(n: number): Promise<{ env: Record<string, string>; broadcastId: string; played: Played[] }> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'keng-crash-bc-')); dirs.push(dataDir);
  // Rate limits out of the way: this test is about durability, not flow control.
  const env = { KENG_DATA_DIR: dataDir, KENG_ADMIN_TOKEN: TOKEN, KENG_MQTT_RATE_LIMIT_PER_SEC: '100000', KENG_MQTT_RATE_LIMIT_BURST: '100000' };
  const k = await spawnKeng(env, { timeoutMs: 60_000 });
  procs.push(k);
  await api(k.httpUrl, 'POST', '/api/v1/areas', { code: 'tinh', name: 'Tỉnh', level: 'province' });
  const ids = Array.from({ length: n }, (_, i) => `loa-crash-${String(i + 1).padStart(2, '0')}`);
  const secrets: string[] = [];
  for (const id of ids) secrets.push((await api<{ secret: string }>(k.httpUrl, 'POST', '/api/v1/devices', { id, kind: 'speaker', name: id, area: 'tinh' })).secret);
  const up = await uploadAudio(k.httpUrl, TOKEN, silentWav(30, 1000), { filename: 'thong-bao.wav', name: 'Thông báo' });
  expect(up.status, JSON.stringify(up.body)).toBe(201);
  speakers = await Promise.all(ids.map((id, i) => connectSpeaker(`mqtt://127.0.0.1:${k.mqttPort}`, id, secrets[i]!)));
  // Online, and past the warm-up (1 s after the connect, rpc-service.ts): the play commands go out at once.
  await waitFor(async () => (await api<unknown[]>(k.httpUrl, 'GET', '/api/v1/devices?kind=speaker&online=true')).length === n, 30_000, 100);
  await new Promise((r) => setTimeout(r, 1_500));

  let startedAcks = 0;
  const exited = k.exited;
  const b = await api<{ id: string }>(k.httpUrl, 'POST', '/api/v1/broadcasts', { target: { devices: ids }, content: { mediaId: up.body.id }, volume: 60 });
  const played = await Promise.all(speakers.map(async (s, i): Promise<Played> => {
    const play = await waitFor(() => s.plays.find((p) => p.broadcastId === b.id), 30_000, 10);
    await s.answer(play.requestId, { status: 'accepted' });
    await s.playback(b.id, 'started', () => {
      // Synchronously in the PUBACK callback: nothing of the test runs between the acknowledgement and the kill.
      if (++startedAcks === n) k.proc.kill('SIGKILL');
    });
    return { speaker: s, secret: secrets[i]!, requestId: play.requestId };
  }));
  expect(await exited).toMatchObject({ signal: 'SIGKILL' });
  await Promise.all(speakers.map((s) => s.close()));
  speakers = [];
  return { env, broadcastId: b.id, played };
}

/**
 * After the restart: every target `playing`, its log pending → sent → accepted → playing (each once), every command
 * `answered`; the speakers reconnect and get no play command again (an answered command is not re-sent).
 */
async function expectPlayingAfterRestart(env: Record<string, string>, broadcastId: string, played: Played[]): Promise<void> {
  const k2 = await spawnKeng(env, { timeoutMs: 60_000 });
  procs.push(k2);
  const b = await api<{ targets: Array<{ deviceId: string; state: string }> }>(k2.httpUrl, 'GET', `/api/v1/broadcasts/${encodeURIComponent(broadcastId)}`);
  const states = Object.fromEntries(b.targets.map((t) => [t.deviceId, t.state]));
  expect(states).toEqual(Object.fromEntries(played.map((p) => [p.speaker.id, 'playing'])));

  const log = await api<Array<{ deviceId: string; state: string }>>(k2.httpUrl, 'GET', `/api/v1/broadcasts/log?broadcastId=${encodeURIComponent(broadcastId)}&limit=100000`);
  const byDevice: Record<string, string[]> = {};
  for (const l of log) (byDevice[l.deviceId] ??= []).push(l.state);
  for (const id of Object.keys(byDevice)) byDevice[id]!.sort();
  expect(byDevice).toEqual(Object.fromEntries(played.map((p) => [p.speaker.id, ['accepted', 'pending', 'playing', 'sent']])));

  for (const p of played) {
    const cmd = await api<{ state: string; response?: { status?: string } }>(k2.httpUrl, 'GET',
      `/api/v1/devices/${encodeURIComponent(p.speaker.id)}/commands/${encodeURIComponent(p.requestId)}`);
    expect({ id: p.speaker.id, state: cmd.state, status: cmd.response?.status }).toEqual({ id: p.speaker.id, state: 'answered', status: 'accepted' });
  }
  speakers = await Promise.all(played.map((p) => connectSpeaker(`mqtt://127.0.0.1:${k2.mqttPort}`, p.speaker.id, p.secret)));
  await new Promise((r) => setTimeout(r, 2_500)); // past the warm-up (1 s), when held commands would be re-sent
  expect(speakers.map((s) => s.plays.length).filter((n) => n > 0)).toEqual([]);
  k2.proc.kill('SIGTERM');
  expect((await k2.exited).code).toBe(0);
}

describe('crash safety of speaker answers and playback events', () => {
  it('one speaker: SIGKILL the moment `started` is acknowledged; after a restart the target is playing and the command answered', async () => {
    const { env, broadcastId, played } = await playThenKill(1);
    await expectPlayingAfterRestart(env, broadcastId, played);
  }, 120_000);

  it('20 speakers: SIGKILL the moment the last `started` is acknowledged; nothing acknowledged is lost', async () => {
    const { env, broadcastId, played } = await playThenKill(20);
    await expectPlayingAfterRestart(env, broadcastId, played);
  }, 180_000);
});
