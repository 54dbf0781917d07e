/**
 * Signed commands end to end (firmware-protocols/device-protocol.md §11.6), with the whole app,
 * real MQTT over TCP and reference speakers that verify: a broadcast made through the API plays on
 * a verifying speaker (id + secret and access-token `me` sessions); forged, misdirected, expired
 * and replayed commands are refused with the reason and nothing plays; a key rotation keeps the
 * old key listed, new commands carry the new kid, and a speaker that missed it refuses them;
 * the command-key routes' roles and audit. The independent Python speaker (paho-mqtt +
 * `cryptography`) verifies the same signatures.
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import { seedAreas } from '../helpers/seed.js';
import type { BrokerPort } from '../../src/broker/index.js';
import type { KengEvents } from '../../src/core/events.js';
import { KengApi } from '../../src/sim/api-client.js';
import { SimSpeaker, type CommandKey } from '../../src/sim/speaker/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let t: TestApp;
let mediaId: string;
const creds = new Map<string, { secret: string; accessToken: string }>();
/** Every request payload Keng published to a device, as it went on the wire. */
const wire: Array<{ topic: string; payload: Buffer }> = [];
let brokerPublish: BrokerPort['publish'];
const answers: Array<KengEvents['rpc.response']> = [];
const speakers: SimSpeaker[] = [];

async function keys(token = t.adminToken): Promise<CommandKey[]> {
  return new KengApi(t.httpUrl, token).commandKeys();
}

async function speaker(id: string, o: { keys: readonly CommandKey[]; token?: boolean; speed?: number }): Promise<SimSpeaker> {
  const c = creds.get(id)!;
  const sp = new SimSpeaker({
    id, url: t.mqttUrl, speed: o.speed ?? 20, commandKeys: o.keys, requireSignedCommands: true,
    ...(o.token ? { useToken: true, accessToken: c.accessToken } : { secret: c.secret }),
  });
  speakers.push(sp);
  await sp.start();
  await waitFor(() => t.app.broadcast.rpc.isReady(id));
  return sp;
}

async function playNow(devices: string[]): Promise<string> {
  const r = await t.api('POST', '/api/v1/broadcasts', { target: { devices }, content: { mediaId }, volume: 70 });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id as string;
}

async function targets(id: string, done: (states: Record<string, string>) => boolean): Promise<Record<string, { state: string; detail?: string }>> {
  return waitFor(async () => {
    const r = await t.api('GET', `/api/v1/broadcasts/${id}`);
    const byDevice = Object.fromEntries((r.body.targets as Array<{ deviceId: string; state: string; detail?: string }>).map((x) => [x.deviceId, x]));
    return done(Object.fromEntries(Object.entries(byDevice).map(([d, x]) => [d, x.state]))) ? byDevice : undefined;
  }, 20_000, 100);
}

/** What Keng sent to `deviceId` for `method`, newest last. */
function sentTo(deviceId: string, method: string): Array<{ topic: string; body: Record<string, any>; payload: Buffer }> {
  return wire.filter((w) => w.topic.startsWith(`v1/devices/${deviceId}/rpc/request/`))
    .map((w) => ({ ...w, body: JSON.parse(w.payload.toString('utf8')) as Record<string, any> }))
    .filter((w) => w.body.method === method);
}

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, [{ code: 'p1', name: 'Tỉnh', level: 'province' }, { code: 'xa', name: 'Xã An Bình', level: 'commune', parent: 'p1' }]);
  for (const id of ['loa-a', 'loa-b', 'loa-c', 'loa-d', 'loa-py']) {
    const r = await t.api('POST', '/api/v1/devices', { id, kind: 'speaker', name: id, area: 'xa' });
    expect(r.status).toBe(201);
    creds.set(id, { secret: r.body.secret, accessToken: r.body.accessToken });
  }
  const tts = await t.api('POST', '/api/v1/media/tts', { text: 'Thông báo thử loa.', name: 'Thử loa' });
  expect(tts.status, JSON.stringify(tts.body)).toBe(201);
  mediaId = tts.body.id;
  // Record what the RPC service publishes (it calls the broker object the app gave it).
  const broker = t.app.broker as { publish: BrokerPort['publish'] };
  brokerPublish = broker.publish.bind(t.app.broker);
  broker.publish = (topic, payload, opts) => {
    if (topic.includes('/rpc/request/')) wire.push({ topic, payload: Buffer.from(payload) });
    return brokerPublish(topic, payload, opts);
  };
  t.app.bus.on('rpc.response', (e) => answers.push(e));
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(speakers.map((s) => s.stop()));
  await t?.stop();
});

describe('signed broadcast.play / broadcast.stop (device protocol §11.6)', () => {
  it('a broadcast made through the API plays on verifying speakers, id + secret and access token (`me` topics) alike', async () => {
    const listed = await keys();
    expect(listed).toHaveLength(1);
    const a = await speaker('loa-a', { keys: listed });
    const b = await speaker('loa-b', { keys: listed, token: true });
    const id = await playNow(['loa-a', 'loa-b']);
    await targets(id, (s) => s['loa-a'] === 'completed' && s['loa-b'] === 'completed');
    for (const sp of [a, b]) {
      expect(sp.refused).toEqual([]);
      expect(sp.events.map((e) => e.state)).toEqual(['started', 'completed']);
    }
    const [play] = sentTo('loa-a', 'broadcast.play');
    expect(play!.body.kid).toBe(listed[0]!.kid);
    expect(JSON.parse(play!.body.signed)).toEqual({
      deviceId: 'loa-a', requestId: play!.topic.split('/').pop(), method: 'broadcast.play', params: play!.body.params, expiresAt: play!.body.expiresAt,
    });
  }, 60_000);

  it('forged, misdirected, expired and replayed commands are refused with the reason, and nothing plays', async () => {
    const a = speakers.find((s) => s.id === 'loa-a')!;
    const before = a.events.length;
    const [genuine] = sentTo('loa-a', 'broadcast.play');
    const R = genuine!.topic.split('/').pop()!;
    const body = genuine!.body;
    const topic = (device: string, r: string) => `v1/devices/${device}/rpc/request/${r}`;
    const inject = (device: string, r: string, p: unknown) => brokerPublish(topic(device, r), Buffer.from(typeof p === 'string' ? p : JSON.stringify(p)), { qos: 1 });

    // An MQTT service account cannot even publish a command: Keng's service clients are read-only.
    const tok = await t.api('POST', '/api/v1/tokens', { name: 'ioc', role: 'service', areas: ['xa'] });
    const svc = await connectDevice(t.mqttUrl, tok.body.token);
    await publish(svc, topic('loa-a', 'r_svc1'), JSON.stringify({ ...body, signed: body.signed }));
    await end(svc);

    // The rest is published on the broker itself, as a member of an external broker cluster could.
    const attacker = generateKeyPairSync('ed25519');
    const forge = (r: string, kid: string) => {
      const signed = JSON.stringify({ deviceId: 'loa-a', requestId: r, method: 'broadcast.play', params: { ...body.params, volume: 100 }, expiresAt: body.expiresAt });
      return { method: 'broadcast.play', params: body.params, expiresAt: body.expiresAt, signed, kid, sig: sign(null, Buffer.from(signed), attacker.privateKey).toString('base64url') };
    };
    const tampered = { ...body, signed: body.signed.replace(`"requestId":"${R}"`, '"requestId":"r_tamper"').replace('"volume":70', '"volume":100') };
    await inject('loa-a', 'r_tamper', tampered);                        // signed altered, genuine sig
    await inject('loa-a', 'r_forged', forge('r_forged', body.kid));     // attacker's signature under Keng's kid
    await inject('loa-a', 'r_ownkey', forge('r_ownkey', 'attackerkey1'));
    await inject('loa-a', 'r_unsig', { method: 'broadcast.play', params: body.params, expiresAt: body.expiresAt });
    await inject('loa-a', 'r_moved', genuine!.payload.toString());       // a genuine command on another topic
    await inject('loa-b', R, genuine!.payload.toString());                // ... to another speaker (a token session)
    const old = t.app.commandKeys.sign({ deviceId: 'loa-a', requestId: 'r_old', method: 'broadcast.stop', params: {}, expiresAt: Date.now() - 1000 });
    await inject('loa-a', 'r_old', { method: 'broadcast.stop', params: {}, expiresAt: Date.now() + 60_000, ...old }); // outer expiresAt lies
    await inject('loa-a', R, genuine!.payload.toString());                // the very bytes again

    await waitFor(() => a.refused.length >= 7 && speakers.find((s) => s.id === 'loa-b')!.refused.length >= 1, 5000);
    expect(a.refused).toEqual([
      { requestId: 'r_tamper', detail: 'bad_signature' },
      { requestId: 'r_forged', detail: 'bad_signature' },
      { requestId: 'r_ownkey', detail: 'unknown_key' },
      { requestId: 'r_unsig', detail: 'unsigned' },
      { requestId: 'r_moved', detail: 'wrong_request_id' },
      { requestId: 'r_old', detail: 'expired' },
      { requestId: R, detail: 'replayed' },
    ]);
    expect(speakers.find((s) => s.id === 'loa-b')!.refused).toEqual([{ requestId: R, detail: 'wrong_device' }]);
    expect(a.received.map((x) => x.requestId)).not.toContain('r_svc1');
    // The refusals went back to Keng as answers; the replay's is a duplicate and changes nothing.
    await waitFor(() => answers.some((x) => x.requestId === R && x.payload.detail === 'replayed'));
    expect(answers.filter((x) => x.deviceId === 'loa-a' && x.requestId === 'r_old').map((x) => x.payload)).toEqual([{ status: 'rejected', detail: 'expired' }]);
    expect((await t.app.broadcast.rpc.get(R))!.response).toEqual({ status: 'accepted' });
    await new Promise((r) => setTimeout(r, 300));
    expect(a.events.length).toBe(before);
    expect(a.nowPlaying).toBeNull();
  }, 60_000);

  it('rotation: old key still listed, new commands carry the new kid, a speaker without it refuses unknown_key until given it; retire', async () => {
    const old = (await keys())[0]!;
    const c = await speaker('loa-c', { keys: [old], speed: 0.5 }); // plays long enough to be stopped
    const rot = await t.api('POST', '/api/v1/command-keys/rotate');
    expect(rot.status).toBe(201);
    expect(rot.body).toMatchObject({ alg: 'Ed25519', active: true });
    const listed = await keys();
    expect(listed.map((k) => k.kid)).toEqual([rot.body.kid, old.kid]);
    const d = await speaker('loa-d', { keys: listed });

    const first = await playNow(['loa-c', 'loa-d']);
    const st = await targets(first, (s) => s['loa-c'] === 'rejected' && s['loa-d'] === 'completed');
    expect(st['loa-c']!.detail).toBe('unknown_key');
    expect(sentTo('loa-d', 'broadcast.play').at(-1)!.body.kid).toBe(rot.body.kid);
    expect(d.refused).toEqual([]);

    c.setCommandKeys(listed);
    const second = await playNow(['loa-c']);
    await targets(second, (s) => s['loa-c'] === 'playing');
    // broadcast.stop is signed too, with the new key.
    expect((await t.api('POST', `/api/v1/broadcasts/${second}/stop`)).status).toBe(200);
    await waitFor(() => sentTo('loa-c', 'broadcast.stop').length === 1);
    expect(sentTo('loa-c', 'broadcast.stop')[0]!.body.kid).toBe(rot.body.kid);
    await targets(second, (s) => s['loa-c'] === 'stopped');
    expect(c.refused).toEqual([{ requestId: sentTo('loa-c', 'broadcast.play')[0]!.topic.split('/').pop(), detail: 'unknown_key' }]);

    const active = await t.api('DELETE', `/api/v1/command-keys/${rot.body.kid}`);
    expect(active.status).toBe(409);
    expect(active.body.error.code).toBe('KENG_ERR_COMMAND_KEY_ACTIVE');
    expect((await t.api('DELETE', `/api/v1/command-keys/${old.kid}`)).status).toBe(204);
    expect((await t.api('DELETE', `/api/v1/command-keys/${old.kid}`)).status).toBe(404);
    expect((await keys()).map((k) => k.kid)).toEqual([rot.body.kid]);
    const audit = (await t.api('GET', '/api/v1/audit?action=command_key.rotate')).body.entries;
    expect(audit[0]).toMatchObject({ actor: 'admin:admin', target: `command_key:${rot.body.kid}`, before: { active: old.kid } });
    expect((await t.api('GET', '/api/v1/audit?action=command_key.retire')).body.entries[0]).toMatchObject({ target: `command_key:${old.kid}` });
  }, 60_000);

  it('the independent Python speaker (paho-mqtt, cryptography) verifies too: plays a signed broadcast, refuses a replay and a forgery', async () => {
    const keysFile = path.join(t.dataDir, 'speaker-keys.json');
    writeFileSync(keysFile, JSON.stringify(await keys()));
    const py = spawn('/usr/bin/python3', [path.join(ROOT, 'src/sim/speaker/paho_speaker.py'), '127.0.0.1', String(t.mqttPort), 'loa-py', creds.get('loa-py')!.secret, '20', keysFile],
      { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    py.stdout.on('data', (d) => { out += String(d); });
    py.stderr.on('data', (d) => { out += String(d); });
    try {
      await waitFor(() => out.includes('"ready"'), 20_000).catch(() => { throw new Error(`paho speaker not ready: ${out}`); });
      await waitFor(() => t.app.broadcast.rpc.isReady('loa-py'));
      const id = await playNow(['loa-py']);
      await targets(id, (s) => s['loa-py'] === 'completed');
      const genuine = sentTo('loa-py', 'broadcast.play')[0]!;
      const R = genuine.topic.split('/').pop()!;
      await brokerPublish(genuine.topic, genuine.payload, { qos: 1 });
      const tampered = { ...genuine.body, signed: genuine.body.signed.replace('"volume":70', '"volume":100') };
      await brokerPublish(genuine.topic.replace(R, 'r_py_forged'), Buffer.from(JSON.stringify(tampered)), { qos: 1 });
      await brokerPublish(genuine.topic.replace(R, 'r_py_unsigned'), Buffer.from(JSON.stringify({ method: 'broadcast.stop', params: {}, expiresAt: Date.now() + 60_000 })), { qos: 1 });
      await waitFor(() => out.includes('r_py_unsigned'), 5000).catch(() => { throw new Error(`no refusals: ${out}`); });
      const refused = out.split('\n').filter((l) => l.startsWith('{"refused"')).map((l) => JSON.parse(l) as unknown);
      expect(refused).toEqual([{ refused: R, detail: 'replayed' }, { refused: 'r_py_forged', detail: 'bad_signature' }, { refused: 'r_py_unsigned', detail: 'unsigned' }]);
      expect(out.split('\n').filter((l) => l.includes('"started"'))).toHaveLength(1);
    } finally {
      py.stdin.end();
      await new Promise((r) => { py.once('exit', r); setTimeout(() => { py.kill('SIGKILL'); r(null); }, 3000); });
    }
  }, 60_000);

  it('every role reads the keys; only admins rotate and retire', async () => {
    for (const role of ['viewer', 'service', 'operator'] as const) {
      const tok = (await t.api('POST', '/api/v1/tokens', { name: `k-${role}`, role, areas: ['xa'] })).body.token as string;
      expect((await t.api('GET', '/api/v1/command-keys', undefined, tok)).status).toBe(200);
      expect((await t.api('POST', '/api/v1/command-keys/rotate', undefined, tok)).status).toBe(403);
      expect((await t.api('DELETE', `/api/v1/command-keys/${t.app.commandKeys.activeKid}`, undefined, tok)).status).toBe(403);
    }
    expect((await t.api('GET', '/api/v1/command-keys', undefined, 'not-a-token')).status).toBe(401);
  });
});
