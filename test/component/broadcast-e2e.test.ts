/**
 * Broadcast execution end to end over real MQTT: the whole
 * app (startTestApp) with RpcService + BroadcastExecutor built around it,
 * simulated speakers (src/sim/speaker), one independent speaker written with
 * paho-mqtt, and a tiny HTTP server serving media through short-lived signed
 * URLs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, parseMetrics, publish, waitFor } from '../helpers/mqtt.js';
import { RpcService } from '../../src/rpc/index.js';
import { BroadcastExecutor, playHooks, type Broadcast, type BroadcastInput, type TargetState } from '../../src/broadcast/execution/index.js';
import { SimSpeaker, type SpeakerFaults } from '../../src/sim/speaker/index.js';
import type { KengEvents } from '../../src/core/events.js';
import { rpcStateOn } from '../helpers/rpc-window.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const KEY = 'media-signing-key';

interface Harness {
  t: TestApp;
  rpc: RpcService;
  exec: BroadcastExecutor;
  creds: Map<string, string>;
  media: { id: string; sha256: string; body: Buffer };
  downloads: Array<{ id: string; status: number }>;
  states: Array<KengEvents['broadcast.state']>;
  speaker(id: string, faults?: SpeakerFaults, speed?: number): Promise<SimSpeaker>;
  input(targets: string[], over?: Partial<BroadcastInput>): BroadcastInput;
  waitStates(id: string, want: Partial<Record<string, TargetState>>, timeoutMs?: number): Promise<Broadcast>;
  close(): Promise<void>;
}

let h: Harness | undefined;
afterEach(async () => { await h?.close(); h = undefined; });

async function setup(speakerIds: string[], o: { urlTtlMs?: number } = {}): Promise<Harness> {
  const t = await startTestApp();
  const { app } = t;
  // The app's own broadcast pieces (tables already migrated) step aside for the instances under test.
  for (const c of [...app.broadcast.components].reverse()) await c.stop();
  await app.registry.createArea({ code: '01', name: 'Tỉnh Thử Nghiệm', level: 'province' });
  await app.registry.createArea({ code: '00001', name: 'Xã An Bình', level: 'commune', parent: '01' });
  await app.registry.createArea({ code: 'thon-dong', name: 'Thôn Đông', level: 'village', parent: '00001' });
  await app.registry.createArea({ code: 'thon-tay', name: 'Thôn Tây, "xóm mới"', level: 'village', parent: '00001' });
  const creds = new Map<string, string>();
  for (const [i, id] of speakerIds.entries()) {
    const r = await app.registry.createDevice({ id, kind: 'speaker', name: `Loa cụm ${i + 1} – Đình làng`, area: i % 2 === 0 ? 'thon-dong' : 'thon-tay' });
    creds.set(id, r.credentials.secret);
  }

  // Media server: /media/<id>?exp=<ms>&sig=<hmac>; 403 once the URL has expired (signed URLs are short-lived).
  const body = randomBytes(32 * 1024);
  const media = { id: 'm_bantin', sha256: createHash('sha256').update(body).digest('hex'), body };
  const downloads: Array<{ id: string; status: number }> = [];
  const sign = (id: string, exp: number): string => createHmac('sha256', KEY).update(`${id}:${exp}`).digest('hex').slice(0, 16);
  const server: Server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const id = u.pathname.split('/')[2] ?? '';
    const exp = Number(u.searchParams.get('exp'));
    let status = 200;
    if (u.searchParams.get('sig') !== sign(id, exp)) status = 403;
    else if (!(exp > Date.now())) status = 403;
    else if (id !== media.id && id !== 'm_corrupt') status = 404;
    downloads.push({ id, status });
    if (status !== 200) { res.writeHead(status).end(); return; }
    res.writeHead(200, { 'content-type': 'audio/mpeg' }).end(id === 'm_corrupt' ? Buffer.from('not the file') : media.body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const urlTtl = o.urlTtlMs ?? 60_000;
  const mediaUrl = (id: string): string => { const exp = Date.now() + urlTtl; return `${base}/media/${id}/file?exp=${exp}&sig=${sign(id, exp)}`; };

  const logger = app.logger.child({ module: 'test' });
  const st = rpcStateOn(app.stateDb.db);
  const rpc = new RpcService({ ...st, broker: app.broker, bus: app.bus, logger, metrics: app.metrics,
    readyDelayMs: 300, sweepIntervalMs: 50, answerGraceMs: 300, paramsHooks: playHooks(() => exec) });
  const exec: BroadcastExecutor = new BroadcastExecutor({ ...st, rpc, bus: app.bus, registry: app.registry, mediaUrl, logger, metrics: app.metrics });
  await rpc.start();
  await exec.start();
  const states: Array<KengEvents['broadcast.state']> = [];
  const off = app.bus.on('broadcast.state', (e) => states.push(e));
  const speakers: SimSpeaker[] = [];
  const hh: Harness = {
    t, rpc, exec, creds, media, downloads, states,
    async speaker(id, faults, speed = 20) {
      const s = new SimSpeaker({ id, secret: creds.get(id)!, url: t.mqttUrl, speed, telemetryIntervalMs: 60_000, ...(faults ? { faults } : {}) });
      speakers.push(s);
      await s.start();
      return s;
    },
    input(targets, over = {}) {
      return { priority: 'normal', volume: 80, media: { mediaId: media.id, sha256: media.sha256, durationSec: 4, mime: 'audio/mpeg' },
        targets, notAfter: Date.now() + 10_000, ...over };
    },
    async waitStates(id, want, timeoutMs = 15_000) {
      return waitFor(async () => {
        const b = (await exec.getStored(id))!;
        return Object.entries(want).every(([d, s]) => b.targets.find((x) => x.deviceId === d)?.state === s) ? b : undefined;
      }, timeoutMs).catch(async (err: Error) => { throw new Error(`${err.message}: ${JSON.stringify((await exec.getStored(id))?.targets)}`); });
    },
    async close() {
      off();
      await Promise.allSettled(speakers.map((s) => s.stop()));
      await exec.stop();
      await rpc.stop();
      await new Promise<void>((r) => server.close(() => r()));
      await t.stop();
    },
  };
  return hh;
}

async function statesOf(exec: BroadcastExecutor, broadcastId: string, deviceId: string): Promise<string[]> {
  return (await exec.log({ broadcastId, deviceId })).map((e) => e.state);
}

describe('broadcast execution over MQTT', () => {
  it('three simulated speakers: sent → accepted → playing → completed, proof of play in the log, CSV and totals', async () => {
    const ids = ['loa-01', 'loa-02', 'loa-03'];
    h = await setup(ids);
    for (const id of ids) await h.speaker(id);
    // A device is sent commands once it is known to be subscribed (its first message after connecting).
    await waitFor(() => ids.every((id) => h!.rpc.isReady(id)));
    const b = await h.exec.start(h.input(ids, { scheduleId: 'sch-sang' }));
    expect(b.targets.map((x) => x.state)).toEqual(['sent', 'sent', 'sent']);
    await h.waitStates(b.id, { 'loa-01': 'completed', 'loa-02': 'completed', 'loa-03': 'completed' });
    for (const id of ids) expect(await statesOf(h.exec, b.id, id)).toEqual(['pending', 'sent', 'accepted', 'playing', 'completed']);
    // Each speaker fetched the media over HTTP (sha256 checked by the speaker).
    expect(h.downloads.filter((d) => d.status === 200)).toHaveLength(3);
    // Bus events for the live view.
    expect(h.states.filter((e) => e.broadcastId === b.id && e.state === 'completed').map((e) => e.deviceId).sort()).toEqual(ids);
    expect(h.states.find((e) => e.deviceId === 'loa-02')?.area).toBe('thon-tay');
    // Log queries by area (subtree), schedule, device.
    expect((await h.exec.log({ area: 'thon-dong', broadcastId: b.id })).every((e) => e.area === 'thon-dong')).toBe(true);
    expect((await h.exec.log({ area: '00001', scheduleId: 'sch-sang' }))).toHaveLength(15);
    expect((await h.exec.list({ area: 'thon-tay' }))[0]!.targets.map((x) => x.deviceId)).toEqual(['loa-02']);
    const csv = (await h.exec.csv({ broadcastId: b.id }));
    expect(csv.startsWith('\uFEFFtime,device_time,broadcast_id')).toBe(true);
    expect(csv).toContain('Thôn Đông');
    expect(csv).toContain('"Thôn Tây, ""xóm mới"""');
    expect(csv).toContain('Loa cụm 1 – Đình làng');
    expect(csv.split('\r\n').filter((l) => l.includes(',completed,'))).toHaveLength(3);
    await h.exec.recordMissed('sch-sang', Date.now() - 86_400_000, ['loa-01', 'loa-02']);
    const totals = (await h.exec.totals({ area: '00001' }));
    expect(totals.total).toMatchObject({ planned: 5, played: 3, failed: 0, missed: 2 });
    expect(totals.areas.find((a) => a.area === 'thon-dong')).toMatchObject({ areaName: 'Thôn Đông', planned: 3, played: 2, missed: 1 });
  });

  it('an independent speaker written with paho-mqtt completes a broadcast', async () => {
    h = await setup(['loa-paho']);
    const py: ChildProcess = spawn('/usr/bin/python3', [path.join(ROOT, 'src/sim/speaker/paho_speaker.py'), '127.0.0.1', String(h.t.mqttPort), 'loa-paho', h.creds.get('loa-paho')!, '20'],
      { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    py.stdout!.on('data', (d) => { out += String(d); });
    py.stderr!.on('data', (d) => { out += String(d); });
    try {
      await waitFor(() => out.includes('"ready"'), 20_000).catch(() => { throw new Error(`paho speaker not ready: ${out}`); });
      const b = await h.exec.start(h.input(['loa-paho']));
      await h.waitStates(b.id, { 'loa-paho': 'completed' });
      expect(await statesOf(h.exec, b.id, 'loa-paho')).toEqual(['pending', 'sent', 'accepted', 'playing', 'completed']);
      await waitFor(() => out.includes('"completed"'), 5000);
    } finally {
      py.stdin!.end();
      await new Promise((r) => { py.once('exit', r); setTimeout(() => { py.kill('SIGKILL'); r(null); }, 3000); });
    }
  });

  it('offline speakers: one back before notAfter gets the command (with a fresh signed URL) and completes; one back too late is expired', async () => {
    h = await setup(['loa-on', 'loa-late', 'loa-toolate'], { urlTtlMs: 800 });
    await h.speaker('loa-on');
    const b = await h.exec.start(h.input(['loa-on', 'loa-late', 'loa-toolate'], { notAfter: Date.now() + 4000 }));
    expect(b.targets.find((x) => x.deviceId === 'loa-late')?.state).toBe('offline');
    await new Promise((r) => setTimeout(r, 1200)); // longer than the URL lifetime: the URL must be made at send time
    const late = await h.speaker('loa-late');
    await h.waitStates(b.id, { 'loa-on': 'completed', 'loa-late': 'completed', 'loa-toolate': 'expired' });
    expect(await statesOf(h.exec, b.id, 'loa-late')).toEqual(['pending', 'offline', 'sent', 'accepted', 'playing', 'completed']);
    expect((await h.exec.log({ broadcastId: b.id, deviceId: 'loa-late' })).find((e) => e.state === 'sent')?.detail).toBe('sent after reconnect');
    expect(late.received.map((r) => r.method)).toEqual(['broadcast.play']);
    expect(h.downloads.every((d) => d.status === 200)).toBe(true);
    const tooLate = await h.speaker('loa-toolate');
    await new Promise((r) => setTimeout(r, 600));
    expect(tooLate.received).toEqual([]);
    expect((await h.exec.getStored(b.id))!.targets.find((x) => x.deviceId === 'loa-toolate')).toMatchObject({ state: 'expired', detail: 'speaker offline until notAfter' });
    expect((await h.exec.totals()).total).toMatchObject({ planned: 3, played: 2, failed: 1 });
  });

  it('a speaker that rejects → rejected; a corrupted file → failed "sha256 mismatch"', async () => {
    h = await setup(['loa-rej', 'loa-ok']);
    await h.speaker('loa-rej', { rejectAll: true });
    await h.speaker('loa-ok');
    const b = await h.exec.start(h.input(['loa-rej']));
    const bb = await h.waitStates(b.id, { 'loa-rej': 'rejected' });
    expect(bb.targets[0]!.detail).toBe('simulated fault: rejectAll');
    const c = await h.exec.start(h.input(['loa-ok'], { media: { mediaId: 'm_corrupt', sha256: h.media.sha256, durationSec: 2, mime: 'audio/mpeg' } }));
    const cc = await h.waitStates(c.id, { 'loa-ok': 'failed' });
    expect(cc.targets[0]!.detail).toBe('sha256 mismatch');
  });

  it('stop mid-play → stopped; a target never sent is stopped at once', async () => {
    h = await setup(['loa-a', 'loa-off']);
    await h.speaker('loa-a', undefined, 1);
    const b = await h.exec.start(h.input(['loa-a', 'loa-off'], { media: { mediaId: h.media.id, sha256: h.media.sha256, durationSec: 60, mime: 'audio/mpeg' } }));
    await h.waitStates(b.id, { 'loa-a': 'playing', 'loa-off': 'offline' });
    const s = await h.exec.stop(b.id);
    expect(s.targets.find((x) => x.deviceId === 'loa-off')).toMatchObject({ state: 'stopped', detail: 'stopped before it was sent' });
    await h.waitStates(b.id, { 'loa-a': 'stopped' });
    expect(await statesOf(h.exec, b.id, 'loa-a')).toEqual(['pending', 'sent', 'accepted', 'playing', 'stopped']);
    expect((await h.exec.getStored(b.id))!.stopRequestedAt).toEqual(expect.any(Number));
  });

  it('priority goes before a waiting normal item; an emergency preempts a playing normal one', async () => {
    h = await setup(['loa-p']);
    await h.speaker('loa-p', undefined, 10);
    const media = (durationSec: number) => ({ mediaId: h!.media.id, sha256: h!.media.sha256, durationSec, mime: 'audio/mpeg' });
    const n1 = await h.exec.start(h.input(['loa-p'], { media: media(20) })); // 2 s at speed 10: time for n2 and p to be queued
    await h.waitStates(n1.id, { 'loa-p': 'playing' });
    const n2 = await h.exec.start(h.input(['loa-p'], { media: media(3) }));
    const p = await h.exec.start(h.input(['loa-p'], { priority: 'priority', media: media(3) }));
    await h.waitStates(n2.id, { 'loa-p': 'completed' }, 10_000);
    const playedAt = async (id: string) => (await h!.exec.log({ broadcastId: id })).find((e) => e.state === 'playing')!.at;
    expect(await playedAt(n1.id)).toBeLessThan(await playedAt(p.id));
    expect(await playedAt(p.id)).toBeLessThan(await playedAt(n2.id));
    expect((await h.exec.getStored(n1.id))!.targets[0]!.state).toBe('completed');
    expect((await h.exec.getStored(p.id))!.targets[0]!.state).toBe('completed');

    const n3 = await h.exec.start(h.input(['loa-p'], { media: media(60) }));
    await h.waitStates(n3.id, { 'loa-p': 'playing' });
    const e = await h.exec.start(h.input(['loa-p'], { priority: 'emergency', volume: 100, media: media(3) }));
    const pre = await h.waitStates(n3.id, { 'loa-p': 'preempted' });
    expect(pre.targets[0]!.detail).toBe(`preempted by ${e.id}`);
    await h.waitStates(e.id, { 'loa-p': 'completed' });
  });

  it('a speaker replying for a broadcast it never got is refused and counted', async () => {
    h = await setup(['loa-x', 'loa-y']);
    await h.speaker('loa-x', undefined, 1);
    const b = await h.exec.start(h.input(['loa-x'], { media: { mediaId: h.media.id, sha256: h.media.sha256, durationSec: 60, mime: 'audio/mpeg' } }));
    await h.waitStates(b.id, { 'loa-x': 'playing' });
    const playReq = (await h.rpc.list('loa-x'))[0]!.id;
    const rogue = await connectDevice(h.t.mqttUrl, 'loa-y', h.creds.get('loa-y')!);
    try {
      // Unknown request id; another device's request; playback events for a broadcast it is not a target of, and an unknown one.
      await publish(rogue, 'v1/devices/loa-y/rpc/response/r_forged', JSON.stringify({ status: 'accepted' }));
      await publish(rogue, `v1/devices/loa-y/rpc/response/${playReq}`, JSON.stringify({ status: 'rejected', detail: 'spoof' }));
      await publish(rogue, 'v1/devices/loa-y/events', JSON.stringify({ type: 'playback', broadcastId: b.id, state: 'completed', at: Date.now() }));
      await publish(rogue, 'v1/devices/loa-y/events', JSON.stringify({ type: 'playback', broadcastId: 'bc_never', state: 'started', at: Date.now() }));
      const m = await waitFor(async () => {
        const mm = parseMetrics(await h!.t.app.metrics.registry.metrics());
        return (mm.get('keng_broadcast_events_refused_total{reason="unknown_broadcast"}') ?? 0) >= 1 ? mm : undefined;
      });
      expect(m.get('keng_rpc_responses_refused_total{reason="unknown_request"}')).toBe(1);
      expect(m.get('keng_rpc_responses_refused_total{reason="wrong_device"}')).toBe(1);
      expect(m.get('keng_broadcast_events_refused_total{reason="not_target"}')).toBe(1);
      // Nothing changed for the real target.
      expect((await h.exec.getStored(b.id))!.targets).toEqual([expect.objectContaining({ deviceId: 'loa-x', state: 'playing' })]);
      expect((await h.exec.log({ deviceId: 'loa-y' }))).toEqual([]);
    } finally {
      await end(rogue);
    }
  });
});
