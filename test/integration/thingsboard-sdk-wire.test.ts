/**
 * ThingsBoard firmware unchanged, over real MQTT/TCP against the whole app: the wire behaviour of
 * the Arduino/ESP32 SDK (integer request ids parsed with atoi, answers on rpc/response/{n}, QoS 0)
 * and of the Python SDK 1.7.1 (requests published right after CONNECT, before its SUBSCRIBEs),
 * imitated with paho-mqtt in test/integration/tb_sdk_wire.py. Each flow ends in stored results:
 * broadcast target states (completed with playback events, unconfirmed without), the RPC rows'
 * integer ids, the answers the SDK got, the claim counter and device status, getSessionLimits
 * against the documented answer.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { waitFor } from '../helpers/mqtt.js';
import { ROOT } from '../helpers/process.js';
import type { TargetState } from '../../src/broadcast/execution/index.js';
import { sessionLimits } from '../../src/ingest/handlers/tb-rpc-request.js';

const SCRIPT = path.join(ROOT, 'test/integration/tb_sdk_wire.py');

interface Run { lines: Array<Record<string, any>>; done: Promise<number>; kill(): void }

function runWire(args: string[]): Run {
  const py = spawn('/usr/bin/python3', [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Run['lines'] = [];
  let buf = '';
  py.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) { lines.push(JSON.parse(buf.slice(0, i)) as Record<string, any>); buf = buf.slice(i + 1); }
  });
  let err = '';
  py.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const done = new Promise<number>((resolve) => py.on('exit', (code) => { if (code !== 0 && err) console.error(err); resolve(code ?? -1); }));
  return { lines, done, kill: () => { if (py.exitCode === null) py.kill('SIGTERM'); } };
}

/** The JSON block of the documented getSessionLimits answer (firmware-protocols/device-protocol.md §13.3). */
function documentedSessionLimits(): unknown {
  const doc = readFileSync(path.join(ROOT, 'firmware-protocols/device-protocol.md'), 'utf8');
  const at = doc.indexOf('`getSessionLimits` request:');
  const block = /Answer \(defaults shown\):\s*```json\n([\s\S]*?)```/.exec(doc.slice(at));
  return JSON.parse(block![1]!);
}

let t: TestApp | undefined;
const runs: Run[] = [];
afterEach(async () => {
  for (const r of runs.splice(0)) r.kill();
  await t?.stop();
  t = undefined;
});

async function app(): Promise<TestApp> {
  // Unconfirmed as soon as the content must have ended (no grace), to keep the test short.
  t = await startTestApp({ broadcast: { playbackReportGraceSec: 0 } });
  await t.app.registry.createArea({ code: '01', name: 'Tỉnh Thử Nghiệm', level: 'province' });
  await t.app.registry.createArea({ code: '00001', name: 'Xã An Bình', level: 'commune', parent: '01' });
  await t.app.registry.createArea({ code: 'thon-dong', name: 'Thôn Đông', level: 'village', parent: '00001' });
  return t;
}

describe('ThingsBoard SDKs on the wire', () => {
  it('Arduino SDK: integer request ids; with playback events completed, without them accepted then unconfirmed; an answer after a reconnect still maps', async () => {
    const h = await app();
    const tokens = new Map<string, string>();
    for (const id of ['loa-tb-ev', 'loa-tb-noev', 'loa-tb-rc']) {
      const r = await h.app.registry.createDevice({ id, kind: 'speaker', name: id, area: 'thon-dong' });
      tokens.set(id, r.credentials.accessToken);
    }
    const ev = runWire(['arduino', '127.0.0.1', String(h.mqttPort), tokens.get('loa-tb-ev')!, '30', '--events']);
    const noev = runWire(['arduino', '127.0.0.1', String(h.mqttPort), tokens.get('loa-tb-noev')!, '30']);
    const rc = runWire(['arduino', '127.0.0.1', String(h.mqttPort), tokens.get('loa-tb-rc')!, '30', '--reconnect-before-answer']);
    runs.push(ev, noev, rc);
    await waitFor(() => [ev, noev, rc].every((r) => r.lines.some((l) => l.event === 'connected' && l.rc === 0)), 15_000);
    await waitFor(() => ['loa-tb-ev', 'loa-tb-noev', 'loa-tb-rc'].every((d) => h.app.broker.credentialOf(d) === 'token'), 5_000);
    await new Promise((r) => setTimeout(r, 1500)); // past the RPC service's warm-up after connect (subscribed)

    const exec = h.app.broadcast.executor;
    const b = await exec.startBroadcast({
      priority: 'normal', volume: 70, targets: ['loa-tb-ev', 'loa-tb-noev', 'loa-tb-rc'], notAfter: Date.now() + 3000,
      media: { mediaId: 'm_tb', sha256: 'ab'.repeat(32), durationSec: 1, mime: 'audio/mpeg' },
    });
    const stateOf = async (d: string): Promise<TargetState | undefined> => (await exec.getStored(b.id))!.targets.find((x) => x.deviceId === d)?.state;

    // What the Arduino SDK saw: `v1/devices/me/rpc/request/1`, and the same id as requestId in the signed command.
    await waitFor(() => noev.lines.find((l) => l.event === 'answered'), 15_000);
    const req = noev.lines.find((l) => l.event === 'request')!;
    expect(req.topic).toBe('v1/devices/me/rpc/request/1');
    expect(req.method).toBe('broadcast.play');
    expect(req.signedRequestId).toBe('1');
    // The answer went at QoS 0 (no PUBACK to wait for): its state window commits a few milliseconds later.
    const rows = await waitFor(async () => { const r = await h.app.broadcast.rpc.list('loa-tb-noev'); return r[0]?.state === 'answered' && r; }, 5_000);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ tbId: 1, state: 'answered', response: { status: 'ok', result: { playing: true } } });
    expect(rows[0]!.id).toMatch(/^r_/);

    await waitFor(async () => (await stateOf('loa-tb-ev')) === 'completed', 15_000);
    await waitFor(async () => (await stateOf('loa-tb-noev')) === 'accepted' && (await stateOf('loa-tb-rc')) === 'accepted', 15_000);
    // The reconnecting device answered on a new connection; its answer still mapped to the command.
    expect(rc.lines.map((l) => l.event)).toContain('dropping');
    expect(rc.lines.filter((l) => l.event === 'connected')).toHaveLength(2);
    expect((await h.app.broadcast.rpc.list('loa-tb-rc'))[0]).toMatchObject({ tbId: 1, state: 'answered' });

    // notAfter (3 s) + the media's length (1 s) + grace 0: no playback events → unconfirmed, not completed.
    await waitFor(async () => (await stateOf('loa-tb-noev')) === 'unconfirmed' && (await stateOf('loa-tb-rc')) === 'unconfirmed', 15_000);
    expect(await stateOf('loa-tb-ev')).toBe('completed');
    const totals = await h.api('GET', '/api/v1/broadcasts/totals');
    expect(totals.status).toBe(200);
    expect(totals.body.total).toMatchObject({ planned: 3, played: 1, unconfirmed: 2, inProgress: 0, failed: 0 });
    const dto = await h.api('GET', `/api/v1/broadcasts/${b.id}`);
    expect(dto.body.counts).toEqual({ completed: 1, unconfirmed: 2 });
    const csv = await fetch(`${h.httpUrl}/api/v1/broadcasts/log?format=csv&broadcastId=${b.id}`, { headers: { authorization: `Bearer ${h.adminToken}` } });
    const text = await csv.text();
    expect(text.split('\r\n').filter((l) => l.includes(',unconfirmed,accepted,'))).toHaveLength(2);
  }, 60_000);

  it('Python SDK 1.7.1: attribute request and getSessionLimits sent right after CONNECT (before subscribing) are answered; claim is counted and refused', async () => {
    const h = await app();
    const r = await h.app.registry.createDevice({ id: 'cam-bien-tb', kind: 'sensor', name: 'Cảm biến TB', area: 'thon-dong' });
    h.app.registry.mergeAttributes('cam-bien-tb', { atr1: 'xanh', atr2: 2, other: true });
    const run = runWire(['python', '127.0.0.1', String(h.mqttPort), r.credentials.accessToken]);
    runs.push(run);
    expect(await run.done).toBe(0);
    const events = run.lines.map((l) => l.event);
    // The requests went out before the SUBSCRIBEs (the SDK's on_connect subscribes 0.2 s after CONNACK).
    expect(events.indexOf('requested')).toBeLessThan(events.indexOf('subscribed'));
    const done = run.lines.find((l) => l.event === 'done')!;
    // Only the side that was asked for (clientKeys only: no `shared`), as ThingsBoard answers.
    expect(done.answers.attributes).toEqual({ id: 1, body: { client: { atr1: 'xanh', atr2: 2 } } });
    expect(done.answers.rpc.id).toBe(1);
    // getSessionLimits: what the docs show is what Keng answers, from one place (sessionLimits over the config defaults).
    expect(done.answers.rpc.body).toEqual(documentedSessionLimits());
    expect(done.answers.rpc.body).toEqual(sessionLimits(h.app.config.mqtt));
    // Answers arrive on the `me` topics the SDK matches.
    const topics = run.lines.filter((l) => l.event === 'message').map((l) => l.topic).sort();
    expect(topics).toEqual(['v1/devices/me/attributes/response/1', 'v1/devices/me/rpc/response/1']);

    // Claim: refused, never silent — counted, recorded on the device, nothing published to it.
    const claims = h.app.metrics.registry.getSingleMetric('keng_mqtt_claims_refused_total');
    expect((await claims!.get()).values[0]?.value).toBe(1);
    const dev = await h.api('GET', '/api/v1/devices/cam-bien-tb');
    expect(dev.body.attributes.claimRequest).toMatchObject({ state: 'refused', reason: expect.stringContaining('not supported') });
    expect(JSON.stringify(dev.body.attributes)).not.toContain('s3cret');
  }, 60_000);
});
