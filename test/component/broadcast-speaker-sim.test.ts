/**
 * The reference loudspeaker simulator against the real broker: setVolume,
 * unknown methods, telemetry fields, slow accept, and a network outage in the
 * middle of playback (events held and delivered after the reconnect).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { waitFor } from '../helpers/mqtt.js';
import { RpcService, type RpcEvents } from '../../src/rpc/index.js';
import { BroadcastExecutor, playHooks } from '../../src/broadcast/execution/index.js';
import { runSpeakers, type SpeakerSim } from '../../src/sim/speaker/index.js';
import { rpcStateOn } from '../helpers/rpc-window.js';

let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => { for (const c of cleanup.reverse()) await c(); cleanup = []; });

async function setup(n: number): Promise<{ t: TestApp; rpc: RpcService; exec: BroadcastExecutor; creds: Array<{ id: string; secret: string }>; mediaUrl: string; sha256: string }> {
  const t = await startTestApp();
  cleanup.push(() => t.stop());
  const app = t.app;
  // The app's own broadcast pieces (tables already migrated) step aside for the instances under test.
  for (const c of [...app.broadcast.components].reverse()) await c.stop();
  await app.registry.createArea({ code: 'p', name: 'Tỉnh', level: 'province' });
  const creds = await Promise.all(Array.from({ length: n }, async (_, i) => {
    const id = `loa-sim-${i}`;
    return { id, secret: (await app.registry.createDevice({ id, kind: 'speaker', name: id, area: 'p' })).credentials.secret };
  }));
  const body = randomBytes(4096);
  const server = createServer((_req, res) => res.end(body));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
  const mediaUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/m`;
  const logger = app.logger;
  const st = rpcStateOn(app.stateDb.db);
  const rpc = new RpcService({ ...st, broker: app.broker, bus: app.bus, logger, metrics: app.metrics, readyDelayMs: 300, sweepIntervalMs: 50, paramsHooks: playHooks(() => exec) });
  const exec: BroadcastExecutor = new BroadcastExecutor({ ...st, rpc, bus: app.bus, registry: app.registry, mediaUrl: () => mediaUrl, logger });
  await rpc.start();
  await exec.start();
  cleanup.push(async () => { await exec.stop(); await rpc.stop(); });
  return { t, rpc, exec, creds, mediaUrl, sha256: createHash('sha256').update(body).digest('hex') };
}

describe('SpeakerSim (reference loudspeaker)', () => {
  it('answers setVolume and unknown methods, reports speaker telemetry', async () => {
    const s = await setup(1);
    const sim: SpeakerSim = await runSpeakers({ url: s.t.mqttUrl, credentials: s.creds, count: 1, speed: 20 });
    cleanup.push(() => sim.stop());
    await waitFor(() => s.rpc.isReady('loa-sim-0'));
    const answers: Array<RpcEvents['response']> = [];
    s.rpc.onResponse((e) => answers.push(e));
    s.rpc.send('loa-sim-0', 'speaker.setVolume', { volume: 65 }, { expiresAt: Date.now() + 10_000 });
    s.rpc.send('loa-sim-0', 'speaker.setVolume', { volume: 165 }, { expiresAt: Date.now() + 10_000 });
    s.rpc.send('loa-sim-0', 'firmware.update', {}, { expiresAt: Date.now() + 10_000 });
    await waitFor(() => answers.length === 3);
    expect(answers.map((a) => a.payload)).toEqual([
      { status: 'ok', volume: 65 }, { status: 'rejected', detail: 'volume out of range' }, { status: 'rejected', detail: 'unknown method "firmware.update"' }]);
    const latest = await waitFor(() => { const l = s.t.app.registry.latest('loa-sim-0'); return l.volume?.value === 65 ? l : undefined; });
    expect(Object.keys(latest).sort()).toEqual(['amp_temp_c', 'battery_v', 'playing', 'power_source', 'rssi', 'uptime_s', 'volume']);
    expect(s.t.app.registry.attributes('loa-sim-0')).toMatchObject({ model: 'keng-sim-loa' });
  });

  it('answers accepted before downloading, downloads once on its own connection, then plays', async () => {
    const s = await setup(1);
    // A media server that holds the download until released: the answer must not wait for it.
    const body = Buffer.from('held media');
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    const requests: string[] = [];
    const server = createServer((req, res) => { requests.push(req.url ?? ''); void held.then(() => res.end(body)); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanup.push(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/held?sig=x`;
    const st = rpcStateOn(s.t.app.stateDb.db);
    const rpc = new RpcService({ ...st, broker: s.t.app.broker, bus: s.t.app.bus, logger: s.t.app.logger, readyDelayMs: 300, paramsHooks: playHooks(() => exec) });
    await s.exec.stop(); await s.rpc.stop();
    const exec: BroadcastExecutor = new BroadcastExecutor({ ...st, rpc, bus: s.t.app.bus, registry: s.t.app.registry, mediaUrl: () => url, logger: s.t.app.logger });
    await rpc.start(); await exec.start();
    cleanup.push(async () => { await exec.stop(); await rpc.stop(); });
    const sim = await runSpeakers({ url: s.t.mqttUrl, credentials: s.creds, speed: 20 });
    cleanup.push(() => sim.stop());
    await waitFor(() => rpc.isReady('loa-sim-0'));
    const b = await exec.start({ priority: 'normal', volume: 70, media: { mediaId: 'm', sha256: createHash('sha256').update(body).digest('hex'), durationSec: 2, mime: 'audio/mpeg' },
      targets: ['loa-sim-0'], notAfter: Date.now() + 10_000 });
    await waitFor(async () => (await exec.getStored(b.id))!.targets[0]!.state === 'accepted' && requests.length === 1);
    release();
    await waitFor(async () => (await exec.getStored(b.id))!.targets[0]!.state === 'completed', 8000);
    expect(requests).toEqual(['/held?sig=x']);
    expect((await exec.log({ broadcastId: b.id })).map((e) => e.state)).toEqual(['pending', 'sent', 'accepted', 'playing', 'completed']);
  });

  it('slow accept and a network outage during playback: the broadcast still completes, events arrive after the reconnect', async () => {
    const s = await setup(2);
    const sim = await runSpeakers({ url: s.t.mqttUrl, credentials: s.creds, speed: 10,
      faults: (_id, i) => (i === 0 ? { acceptDelayMs: 400 } : { offline: { afterMs: 1200, forMs: 800 } }) });
    cleanup.push(() => sim.stop());
    await waitFor(() => s.creds.every((c) => s.rpc.isReady(c.id)));
    const b = await s.exec.start({ priority: 'normal', volume: 70, media: { mediaId: 'm', sha256: s.sha256, durationSec: 15, mime: 'audio/mpeg' },
      targets: ['loa-sim-0', 'loa-sim-1'], notAfter: Date.now() + 10_000 });
    await waitFor(async () => (await s.exec.getStored(b.id))!.targets.every((t) => t.state === 'completed'), 8000)
      .catch(async (e: Error) => { throw new Error(`${e.message} ${JSON.stringify((await s.exec.getStored(b.id)))}`); });
    const log0 = (await s.exec.log({ broadcastId: b.id, deviceId: 'loa-sim-0' }));
    expect(log0.find((e) => e.state === 'accepted')!.at - log0.find((e) => e.state === 'sent')!.at).toBeGreaterThanOrEqual(350);
    const sp1 = sim.get('loa-sim-1')!;
    expect(sp1.events.map((e) => e.state)).toEqual(['started', 'completed']);
    expect(s.t.app.registry.isOnline('loa-sim-1')).toBe(true);
  });
});
