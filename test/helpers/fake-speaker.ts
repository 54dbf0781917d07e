/**
 * A bare loudspeaker over real MQTT (mqtt.js, QoS 1, clean session) for tests that must decide
 * when it answers: it subscribes to its requests (device protocol §1.5 step 1), records every
 * `broadcast.play` it receives, and answers / reports only when the test says so (§11.2, §12.5).
 * Unlike the reference speaker (src/sim/speaker) it never answers, downloads or plays on its own.
 */
import mqtt, { type MqttClient } from 'mqtt';

export interface PlayRequest { requestId: string; broadcastId: string; at: number }

export interface FakeSpeaker {
  readonly id: string;
  readonly client: MqttClient;
  /** Every `broadcast.play` received, duplicates included (a re-delivery would show twice). */
  readonly plays: PlayRequest[];
  /** Publishes `body` at QoS 1 on `topic`; `onAck` runs synchronously inside mqtt.js's PUBACK callback. */
  publish(topic: string, body: unknown, onAck?: () => void): Promise<void>;
  answer(requestId: string, body: unknown, onAck?: () => void): Promise<void>;
  playback(broadcastId: string, state: string, onAck?: () => void): Promise<void>;
  close(): Promise<void>;
}

/**
 * Connects (CONNACK) and subscribes (SUBACK) before resolving; with `status`, then publishes it (retained, QoS 1)
 * and waits for its PUBACK, as the connect sequence advises (§1.5 step 2, §5.3).
 */
export async function connectSpeaker(url: string, id: string, secret: string, o: { status?: Record<string, unknown> } = {}): Promise<FakeSpeaker> {
  const client = mqtt.connect(url, { username: id, password: secret, clientId: id, reconnectPeriod: 0, connectTimeout: 60_000, protocolVersion: 4, clean: true });
  client.on('error', () => { /* a killed server: the test looks at what was acknowledged */ });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('close', () => reject(new Error(`${id}: closed before connect`)));
  });
  const plays: PlayRequest[] = [];
  client.on('message', (topic, payload) => {
    const requestId = topic.split('/').at(-1)!;
    const body = JSON.parse(String(payload)) as { method?: string; params?: { broadcastId?: string } };
    if (body.method === 'broadcast.play') plays.push({ requestId, broadcastId: String(body.params?.broadcastId), at: Date.now() });
  });
  await new Promise<void>((resolve, reject) => client.subscribe(`v1/devices/${id}/rpc/request/+`, { qos: 1 }, (e) => (e ? reject(e) : resolve())));
  const publish = (topic: string, body: unknown, onAck?: () => void): Promise<void> => new Promise((resolve, reject) => {
    client.publish(topic, JSON.stringify(body), { qos: 1 }, (err) => {
      if (err) { reject(err); return; }
      onAck?.();
      resolve();
    });
  });
  if (o.status) {
    const status = o.status;
    await new Promise<void>((resolve, reject) => client.publish(`v1/devices/${id}/status`, JSON.stringify(status), { qos: 1, retain: true }, (e) => (e ? reject(e) : resolve())));
  }
  return {
    id, client, plays, publish,
    answer: (requestId, body, onAck) => publish(`v1/devices/${id}/rpc/response/${requestId}`, body, onAck),
    playback: (broadcastId, state, onAck) => publish(`v1/devices/${id}/events`, { type: 'playback', broadcastId, state, at: Date.now() }, onAck),
    close: () => new Promise<void>((resolve) => client.end(true, {}, () => resolve())),
  };
}
