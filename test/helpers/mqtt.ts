/** Small promise wrappers around mqtt.js for tests. */
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';

export async function connectDevice(url: string, username: string, password?: string, extra: IClientOptions = {}): Promise<MqttClient> {
  const client = mqtt.connect(url, {
    username, password, clientId: `${username.slice(0, 40)}-${Math.random().toString(16).slice(2, 8)}`,
    reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...extra,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', (e) => { client.end(true); reject(e); });
    client.once('close', () => reject(new Error('closed before connect')));
  });
  return client;
}

/** Connect and expect a refusal; resolves with the CONNACK return code (or error message). */
export async function connectRefused(url: string, username: string, password?: string): Promise<number | string> {
  const client = mqtt.connect(url, { username, password, reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4 });
  return new Promise((resolve, reject) => {
    client.once('connect', () => { client.end(true); reject(new Error('connection was accepted')); });
    client.once('error', (e: Error & { code?: number }) => { client.end(true); resolve(e.code ?? e.message); });
  });
}

export function publish(client: MqttClient, topic: string, payload: string | Buffer, qos: 0 | 1 = 1): Promise<void> {
  return new Promise((resolve, reject) => client.publish(topic, payload, { qos }, (err) => (err ? reject(err) : resolve())));
}

export function end(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.end(false, {}, () => resolve()));
}

export async function waitFor<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 5000, stepMs = 25): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() - t0 > timeoutMs) throw new Error(`waitFor: condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Parse a Prometheus text exposition into `name{labels}` → value. */
export function parseMetrics(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}
