/**
 * A speaker's answer and playback event are acknowledged (PUBACK) only once what they changed is committed:
 * the whole app over real MQTT (mqtt.js speaker, QoS 1), its own state window (8 ms on SQLite), and a
 * read-only connection to state.db looking at the rows the moment mqtt.js reports the PUBACK. The RPC row
 * (`answered`) and the target move (`accepted`) commit in one transaction, so both are visible, or neither.
 */
import Database from 'better-sqlite3';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, waitFor } from '../helpers/mqtt.js';

let t: TestApp | undefined;
let speaker: MqttClient | undefined;
let ro: Database.Database | undefined;
afterEach(async () => {
  if (speaker) await end(speaker);
  ro?.close();
  await t?.stop();
  t = undefined; speaker = undefined; ro = undefined;
});

/** Publishes at QoS 1 and, inside mqtt.js's PUBACK callback (synchronously), runs `look`. */
function publishThen<T>(c: MqttClient, topic: string, body: unknown, look: () => T): Promise<T> {
  return new Promise((resolve, reject) => {
    c.publish(topic, JSON.stringify(body), { qos: 1 }, (err) => (err ? reject(err) : resolve(look())));
  });
}

describe('device answers are acknowledged after their commit', () => {
  it('the PUBACK of an accepted answer comes once the RPC row and the target move are both visible; a started event once playing is', async () => {
    t = await startTestApp();
    const { app } = t;
    await app.registry.createArea({ code: '01', name: 'Tỉnh', level: 'province' });
    const { credentials } = await app.registry.createDevice({ id: 'loa-ack', kind: 'speaker', name: 'Loa', area: '01' });
    ro = new Database(app.stateDb.file, { readonly: true });
    const requests: Array<{ id: string; body: { method: string; params: { broadcastId: string } } }> = [];
    speaker = await connectDevice(t.mqttUrl, 'loa-ack', credentials.secret);
    speaker.on('message', (topic, payload) => {
      if (topic.includes('/rpc/request/')) requests.push({ id: topic.split('/').at(-1)!, body: JSON.parse(String(payload)) });
    });
    await new Promise<void>((r, j) => speaker!.subscribe('v1/devices/loa-ack/rpc/request/+', { qos: 1 }, (e) => (e ? j(e) : r())));

    const b = await app.broadcast.executor.startBroadcast({
      priority: 'normal', volume: 60, targets: ['loa-ack'], notAfter: Date.now() + 60_000,
      media: { mediaId: 'm_ack', sha256: 'a'.repeat(64), durationSec: 30, mime: 'audio/mpeg' },
    });
    const req = await waitFor(() => requests.find((r) => r.body.method === 'broadcast.play'), 10_000);
    expect(req.body.params.broadcastId).toBe(b.id);

    const rpcState = ro.prepare('SELECT state FROM rpc_requests WHERE id = ?').pluck();
    const targetState = ro.prepare('SELECT state FROM broadcast_targets WHERE broadcast_id = ? AND device_id = ?').pluck();
    const look = () => [rpcState.get(req.id), targetState.get(b.id, 'loa-ack')];
    expect(look()).toEqual(['sent', 'sent']);

    const atAck = await publishThen(speaker, `v1/devices/loa-ack/rpc/response/${req.id}`, { status: 'accepted' }, look);
    expect(atAck).toEqual(['answered', 'accepted']);

    const atEventAck = await publishThen(speaker, 'v1/devices/loa-ack/events',
      { type: 'playback', broadcastId: b.id, state: 'started', at: Date.now() }, look);
    expect(atEventAck).toEqual(['answered', 'playing']);
    const log = ro.prepare('SELECT state FROM broadcast_log WHERE broadcast_id = ? ORDER BY seq').pluck().all(b.id);
    expect(log).toEqual(['pending', 'sent', 'accepted', 'playing']);
  }, 30_000);
});
