/**
 * The inbound path (device protocol §4, "Telemetry payload" delivery
 * guarantee): ACL, payload size, per-device rate limit as flow control, abuse disconnect,
 * QoS 1 PUBACK only after the handler resolved, handler failure → no PUBACK.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { publishHeader, rawConnect, startBroker, until, type BrokerHarness } from '../helpers/fakes-broker.js';

const execFileP = promisify(execFile);

let h: BrokerHarness | undefined;
afterEach(async () => { await h?.stop(); h = undefined; });

const soil1 = { clientId: 'soil-01', username: 'soil-01', password: 'secret-soil-01' };
const soil2 = { clientId: 'soil-02', username: 'soil-02', password: 'secret-soil-02' };

function pub(c: MqttClient, topic: string, payload: string | Buffer, qos: 0 | 1 = 1, retain = false): Promise<void> {
  return new Promise((resolve, reject) => c.publish(topic, payload, { qos, retain }, (err) => (err ? reject(err) : resolve())));
}

function pubacks(c: MqttClient): number[] {
  const ids: number[] = [];
  c.on('packetreceive', (p) => { if (p.cmd === 'puback') ids.push(p.messageId!); });
  return ids;
}

describe('AedesBroker inbound path', () => {
  it('passes own telemetry to the handler with identity, type and payload; touches presence', async () => {
    h = await startBroker();
    const c = await h.connect(soil1);
    await pub(c, 'v1/devices/soil-01/telemetry', '{"soil_moisture":31.5}');
    await pub(c, 'v1/devices/soil-01/rpc/response/abc', '{"status":"ok"}');
    await pub(c, 'v1/devices/soil-01/events', '{"type":"playback"}', 0);
    await h.handler.waitFor(3);
    const [t, r, e] = h.handler.messages;
    expect(t).toMatchObject({ type: 'telemetry', qos: 1, retain: false, identity: { deviceId: 'soil-01', viaToken: false } });
    expect(t!.payload.toString()).toBe('{"soil_moisture":31.5}');
    expect(r).toMatchObject({ type: 'rpc.response', requestId: 'abc' });
    expect(e).toMatchObject({ type: 'events', qos: 0 });
    expect(h.presence.touched.get('soil-01')).toBeGreaterThan(0);
    expect(await h.counter('keng_messages_in_total', { type: 'telemetry' })).toBe(1);
  });

  it("drops a publish to another device's topic without disconnecting; acked and counted", async () => {
    h = await startBroker();
    const c = await h.connect(soil1);
    await pub(c, 'v1/devices/soil-02/telemetry', '{"x":1}'); // PUBACK still arrives (no retransmit loop)
    await pub(c, '$SYS/fake/heartbeat', 'x');
    await pub(c, 'v1/devices/soil-01/rpc/request/1', '{}'); // server → device topic
    await pub(c, 'v1/devices/me/telemetry', '{"x":1}'); // me needs the token
    await pub(c, 'v1/devices/soil-01/telemetry', '{"ok":1}');
    await h.handler.waitFor(1);
    expect(c.connected).toBe(true);
    expect(h.handler.messages.map((m) => m.type)).toEqual(['telemetry']);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'other_device' })).toBe(1);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'reserved_topic' })).toBe(1);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'forbidden_topic' })).toBe(1);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'me_requires_token' })).toBe(1);
    expect(await h.counter('keng_rejected_total', { reason: 'other_device' })).toBe(1);
  });

  it('a refused publish is not routed to anyone and not retained', async () => {
    h = await startBroker();
    const victim = await h.connect(soil2);
    const got: string[] = [];
    victim.on('message', (t) => got.push(t));
    await new Promise<void>((r, j) => victim.subscribe('v1/devices/soil-02/rpc/request/+', { qos: 1 }, (e) => (e ? j(e) : r())));
    const attacker = await h.connect(soil1);
    await pub(attacker, 'v1/devices/soil-02/rpc/request/evil', '{"method":"broadcast.play"}', 1, true);
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual([]);
    // nothing retained either: a fresh subscription gets nothing
    const late = await h.connect({ ...soil2, clientId: 'soil-02-b' });
    const got2: string[] = [];
    late.on('message', (t) => got2.push(t));
    await new Promise<void>((r, j) => late.subscribe('v1/devices/soil-02/rpc/request/+', { qos: 1 }, (e) => (e ? j(e) : r())));
    await new Promise((r) => setTimeout(r, 200));
    expect(got2).toEqual([]);
  });

  it('refuses forbidden subscriptions with SUBACK 0x80, grants own rpc/request', async () => {
    h = await startBroker();
    const c = await h.connect(soil1);
    const subacks: number[][] = [];
    c.on('packetreceive', (p) => { if (p.cmd === 'suback') subacks.push(p.granted as number[]); });
    await new Promise<void>((r) => c.subscribe({
      'v1/devices/soil-01/rpc/request/+': { qos: 1 },
      'v1/devices/soil-02/rpc/request/+': { qos: 1 },
      '#': { qos: 0 },
      '$SYS/#': { qos: 0 },
      'v1/devices/soil-01/telemetry': { qos: 1 },
    }, () => r()));
    await until(() => subacks.length === 1);
    expect(subacks[0]).toEqual([1, 128, 128, 128, 128]);
    expect(c.connected).toBe(true);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'subscribe', reason: 'other_device' })).toBe(1);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'subscribe', reason: 'reserved_topic' })).toBe(1);
    // the granted subscription works: server RPC arrives
    const msgs: string[] = [];
    c.on('message', (t, p) => msgs.push(`${t} ${p.toString()}`));
    await h.broker.publish('v1/devices/soil-01/rpc/request/r1', '{"method":"speaker.setVolume"}');
    await h.broker.publish('v1/devices/soil-02/rpc/request/r2', '{"method":"x"}');
    await until(() => msgs.length >= 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(msgs).toEqual(['v1/devices/soil-01/rpc/request/r1 {"method":"speaker.setVolume"}']);
  });

  it('SUBACK tells the QoS granted: a QoS 2 subscription is answered 1, and deliveries come at QoS 1', async () => {
    h = await startBroker();
    const c = await h.connect(soil1);
    const subacks: number[][] = [];
    c.on('packetreceive', (p) => { if (p.cmd === 'suback') subacks.push(p.granted as number[]); });
    const granted = await new Promise<number[]>((resolve, reject) => c.subscribe(
      { 'v1/devices/soil-01/rpc/request/+': { qos: 2 }, 'v1/devices/soil-01/rpc/request/r9': { qos: 0 } },
      (err, g) => (err ? reject(err) : resolve((g ?? []).map((x) => x.qos))),
    ));
    expect(granted).toEqual([1, 0]);
    expect(subacks).toEqual([[1, 0]]); // the SUBACK on the wire, not mqtt.js' reading of it
    const got: number[] = [];
    c.on('message', (_t, _p, packet) => got.push(packet.qos));
    await h.broker.publish('v1/devices/soil-01/rpc/request/r1', '{"method":"x"}', { qos: 1 });
    await until(() => got.length === 1);
    expect(got).toEqual([1]);
  });

  it('SUBACK as a command-line client sees it: mosquitto_sub -q 2 is granted 1', async () => {
    h = await startBroker();
    const { stdout } = await execFileP('mosquitto_sub', [
      '-h', '127.0.0.1', '-p', String(h.port), '-V', 'mqttv311', '-i', 'soil-01', '-u', 'soil-01', '-P', 'secret-soil-01',
      '-t', 'v1/devices/soil-01/rpc/request/+', '-q', '2', '-d', '-W', '1',
    ], { timeout: 10_000 }).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' })); // -W ends it with status 27
    expect(stdout).toMatch(/Subscribed \(mid: \d+\): 1\b/);
  });

  it('drops a payload over maxPayloadBytes without disconnecting', async () => {
    h = await startBroker({ maxPayloadBytes: 1024 });
    const c = await h.connect(soil1);
    await pub(c, 'v1/devices/soil-01/telemetry', Buffer.alloc(1025, 0x61));
    await pub(c, 'v1/devices/soil-01/telemetry', Buffer.alloc(1024, 0x61));
    await h.handler.waitFor(1);
    expect(h.handler.messages[0]!.payload.length).toBe(1024);
    expect(c.connected).toBe(true);
    expect(await h.counter('keng_rejected_total', { reason: 'payload_too_large' })).toBe(1);
  });

  it('closes a connection whose frame header announces far more than the limit', async () => {
    h = await startBroker({ maxPayloadBytes: 1024 });
    const raw = await rawConnect(h.port, { clientId: 'big', username: 'soil-01', password: 'secret-soil-01', keepalive: 30 });
    expect((await raw.connack)[3]).toBe(0);
    raw.sock.write(publishHeader('v1/devices/soil-01/telemetry', 50_000_000));
    raw.sock.write(Buffer.alloc(1000));
    await raw.closed;
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'frame_too_large' })).toBe(1);
  });

  it('over its rate a device is slowed, not dropped: every message handled, PUBACKs paced, no refusal, no disconnect', async () => {
    h = await startBroker({ rateLimitPerSec: 50, rateLimitBurst: 10, abuseDisconnectAfter: 3 });
    const flooder = await h.connect(soil1);
    const acks: number[] = [];
    flooder.on('packetreceive', (p) => { if (p.cmd === 'puback') acks.push(Date.now()); });
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 60 }, (_, i) => pub(flooder, 'v1/devices/soil-01/telemetry', `{"i":${i}}`)));
    const took = Date.now() - t0;
    const handled = h.handler.messages.filter((m) => m.identity.deviceId === 'soil-01');
    expect(handled.map((m) => JSON.parse(m.payload.toString()).i)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    // 10 at once, the other 50 at 50/s: one second at least (a held callback never fires early),
    // and never all at once: within the first 300 ms at most 10 + 15 acknowledgements.
    expect(took).toBeGreaterThanOrEqual(980);
    expect(acks.filter((a) => a - t0 < 300).length).toBeLessThanOrEqual(25);
    expect(await h.counter('keng_rejected_total', { reason: 'rate_limited' })).toBe(0);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'abuse_disconnect' })).toBe(0);
    expect(await h.counter('keng_throttled_messages_total')).toBe(50);
    // Σ waits of 50 messages at 20 ms spacing ≈ 20+40+…+1000 ms = 25.5 s (minus what refilled meanwhile).
    expect(await h.counter('keng_throttled_seconds_total')).toBeGreaterThan(15);
    expect(flooder.connected).toBe(true);
  });

  it('a throttled device does not slow another device', async () => {
    h = await startBroker({ rateLimitPerSec: 20, rateLimitBurst: 5 });
    const flooder = await h.connect(soil1);
    const calm = await h.connect(soil2);
    const flood = Promise.all(Array.from({ length: 45 }, (_, i) => pub(flooder, 'v1/devices/soil-01/telemetry', `{"i":${i}}`)));
    await until(() => h!.handler.messages.length >= 5);
    const lat: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = Date.now();
      await pub(calm, 'v1/devices/soil-02/telemetry', `{"i":${i}}`);
      lat.push(Date.now() - t);
    }
    // The flooder still has ~2 s of messages held back while the calm device is answered at once.
    expect(h.handler.messages.filter((m) => m.identity.deviceId === 'soil-01').length).toBeLessThan(45);
    expect(Math.max(...lat)).toBeLessThan(250);
    await flood;
    expect(h.handler.messages.filter((m) => m.identity.deviceId === 'soil-01')).toHaveLength(45);
  });

  it('a message held back when the connection closes is not acknowledged and not handled', async () => {
    h = await startBroker({ rateLimitPerSec: 1, rateLimitBurst: 1 });
    const c = await h.connect(soil1);
    await pub(c, 'v1/devices/soil-01/telemetry', '{"i":0}');
    c.publish('v1/devices/soil-01/telemetry', '{"i":1}', { qos: 1 }); // held ~1 s
    while (await h.counter('keng_throttled_messages_total') < 1) await new Promise((r) => setTimeout(r, 10));
    c.end(true);
    await new Promise((r) => setTimeout(r, 1_300));
    expect(h.handler.messages.map((m) => m.payload.toString())).toEqual(['{"i":0}']);
  });

  it('disconnects a device after more than abuseDisconnectAfter refusals within 60 s', async () => {
    h = await startBroker({ abuseDisconnectAfter: 5 });
    const c = await h.connect(soil1);
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    for (let i = 0; i < 6; i++) c.publish('v1/devices/soil-02/telemetry', '{}', { qos: 0 });
    await closed;
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'abuse_disconnect' })).toBe(1);
    await until(() => h!.presence.online.get('soil-01') === false);
  });

  it('handler rejections ({ok:false}) are dropped, acknowledged and counted by reason', async () => {
    h = await startBroker();
    h.handler.result = (m) => (m.payload.toString() === 'bad' ? { ok: false, reason: 'invalid_json' } : { ok: true });
    const c = await h.connect(soil1);
    await pub(c, 'v1/devices/soil-01/telemetry', 'bad');
    expect(c.connected).toBe(true);
    expect(await h.counter('keng_rejected_total', { reason: 'invalid_json' })).toBe(1);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'invalid_json' })).toBe(1);
  });

  it('QoS 1: PUBACK only after the handler resolved (handler delays 200 ms)', async () => {
    h = await startBroker();
    h.handler.delayMs = 200;
    const c = await h.connect(soil1);
    const t0 = Date.now();
    await pub(c, 'v1/devices/soil-01/telemetry', '{"a":1}');
    const ackedAt = Date.now();
    expect(ackedAt - t0).toBeGreaterThanOrEqual(195);
    expect(h.handler.messages).toHaveLength(1);
    expect(h.handler.messages[0]!.resolvedAt!).toBeLessThanOrEqual(ackedAt);
  });

  it('pipelined QoS 1 publishes are handled concurrently (group commit possible)', async () => {
    h = await startBroker();
    h.handler.delayMs = 100;
    const c = await h.connect(soil1);
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 50 }, (_, i) => pub(c, 'v1/devices/soil-01/telemetry', `{"i":${i}}`)));
    expect(Date.now() - t0).toBeLessThan(2000); // 50 × 100 ms serially would be 5 s
    expect(h.handler.messages).toHaveLength(50);
  });

  it('a handler that throws (queue full): no PUBACK, connection closed, counted store_unavailable', async () => {
    h = await startBroker();
    h.handler.throwError = () => Object.assign(new Error('Telemetry queue is full'), { code: 'KENG_ERR_QUEUE_FULL' });
    const c = await h.connect(soil1);
    const acks = pubacks(c);
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.publish('v1/devices/soil-01/telemetry', '{"a":1}', { qos: 1 });
    await closed;
    expect(acks).toEqual([]);
    expect(await h.counter('keng_rejected_total', { reason: 'store_unavailable' })).toBe(1);
  });

  it('server publishes are always allowed (client null) and reach subscribers', async () => {
    h = await startBroker();
    const c = await h.connect(soil1);
    await new Promise<void>((r) => c.subscribe('v1/devices/soil-01/rpc/request/+', { qos: 1 }, () => r()));
    const got = new Promise<string>((r) => c.once('message', (t) => r(t)));
    await h.broker.publish('v1/devices/soil-01/rpc/request/9', Buffer.from('{"method":"m"}'), { qos: 1 });
    expect(await got).toBe('v1/devices/soil-01/rpc/request/9');
    expect(h.handler.messages).toHaveLength(0);
  });
});
