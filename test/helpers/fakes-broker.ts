/**
 * Fakes for running AedesBroker alone (component tests): an in-memory
 * authenticator, a presence recorder and a recording inbound handler.
 */
import net from 'node:net';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { AedesBroker, type AedesBrokerDeps, type BrokerTuning } from '../../src/broker/index.js';
import type { HandleResult, InboundMessage } from '../../src/broker/types.js';
import { createLogger, Metrics, systemClock } from '../../src/core/index.js';
import type { DeviceAuthenticator, DeviceIdentity, DeviceKind } from '../../src/devices/types.js';
import type { DevicePresence } from '../../src/broker/index.js';
import type { Config } from '../../src/config/index.js';

export interface FakeDevice { id: string; secret: string; token: string; enabled?: boolean; kind?: DeviceKind }

export class FakeAuthenticator implements DeviceAuthenticator {
  readonly devices = new Map<string, FakeDevice>();
  delayMs = 5;
  constructor(devs: FakeDevice[] = []) { for (const d of devs) this.add(d); }
  add(d: FakeDevice): void { this.devices.set(d.id, d); }
  isDevice(id: string): boolean { return this.devices.has(id); }
  async authenticate(username: string, password: Buffer | undefined): ReturnType<DeviceAuthenticator['authenticate']> {
    await new Promise((r) => setTimeout(r, this.delayMs));
    let dev = this.devices.get(username);
    let viaToken = false;
    if (!dev) {
      dev = [...this.devices.values()].find((d) => d.token === username);
      if (!dev) return { ok: false, reason: 'unknown_device' };
      viaToken = true;
    } else if (!password || password.toString('utf8') !== dev.secret) {
      return { ok: false, reason: 'bad_secret' };
    }
    if (dev.enabled === false) return { ok: false, reason: 'disabled' };
    const identity: DeviceIdentity = { deviceId: dev.id, kind: dev.kind ?? 'sensor', area: 'thon-1', viaToken };
    return { ok: true, identity };
  }
}

export interface PresenceEvent { deviceId: string; online: boolean; at: number }

export class FakePresence implements DevicePresence {
  readonly events: PresenceEvent[] = [];
  readonly online = new Map<string, boolean>();
  readonly touched = new Map<string, number>();
  setOnline(deviceId: string, online: boolean, at: number): void {
    this.events.push({ deviceId, online, at });
    this.online.set(deviceId, online);
  }
  touch(deviceId: string, at: number): void { this.touched.set(deviceId, at); }
  isOnline(deviceId: string): boolean { return this.online.get(deviceId) ?? false; }
}

export class RecordingHandler {
  readonly messages: (InboundMessage & { resolvedAt?: number })[] = [];
  delayMs = 0;
  /** Return this result instead of ok (per call). */
  result: (m: InboundMessage) => HandleResult = () => ({ ok: true });
  /** Throw this error instead (per call). */
  throwError: ((m: InboundMessage) => Error | null) = () => null;
  readonly handle = async (m: InboundMessage): Promise<HandleResult> => {
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const err = this.throwError(m);
    if (err) throw err;
    this.messages.push({ ...m, resolvedAt: Date.now() });
    return this.result(m);
  };
  waitFor(n: number, timeoutMs = 5000): Promise<void> { return until(() => this.messages.length >= n, timeoutMs); }
}

export async function until(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const DEVICES: FakeDevice[] = [
  { id: 'soil-01', secret: 'secret-soil-01', token: 'TOKENSOIL01xxxxxxxx' },
  { id: 'soil-02', secret: 'secret-soil-02', token: 'TOKENSOIL02xxxxxxxx' },
  { id: 'spk-01', secret: 'secret-spk-01', token: 'TOKENSPK01xxxxxxxxx', kind: 'speaker' },
  { id: 'off-01', secret: 'secret-off-01', token: 'TOKENOFF01xxxxxxxxx', enabled: false },
];

export interface BrokerHarness {
  broker: AedesBroker;
  auth: FakeAuthenticator;
  presence: FakePresence;
  handler: RecordingHandler;
  metrics: Metrics;
  port: number;
  url: string;
  /** Connect with mqtt.js; resolves on CONNACK, rejects on refusal. Clients are ended in stop(). */
  connect(opts: IClientOptions): Promise<MqttClient>;
  /** Value of a counter sample, by labels. */
  counter(name: string, labels?: Record<string, string>): Promise<number>;
  stop(): Promise<void>;
}

export async function startBroker(
  mqtt: Partial<Config['mqtt']> = {}, tuning: Partial<BrokerTuning> = {}, extra: Pick<AedesBrokerDeps, 'provisioner' | 'provisionTuning' | 'tls'> = {},
): Promise<BrokerHarness> {
  const auth = new FakeAuthenticator(DEVICES);
  const presence = new FakePresence();
  const handler = new RecordingHandler();
  const metrics = new Metrics({ defaultMetrics: false });
  const config: Config['mqtt'] = {
    port: 0, host: '127.0.0.1', maxPayloadBytes: 4096, rateLimitPerSec: 50, rateLimitBurst: 500,
    abuseDisconnectAfter: 20, maxInflightMessages: 100, maxConnectionsPerIp: 1000, exemptLoopback: true, provisionRequestsPerMinute: 10,
    proxyProtocol: 'off', trustedProxies: ['127.0.0.0/8', '::1'], ...mqtt,
  };
  const logger = createLogger(process.env.KENG_TEST_LOG_LEVEL ?? 'silent');
  const broker = new AedesBroker({ config, authenticator: auth, presence, logger, metrics, clock: systemClock, tuning, inbound: handler.handle, ...extra });
  await broker.start();
  const port = broker.address().mqtt.port;
  const url = `mqtt://127.0.0.1:${port}`;
  const clients: MqttClient[] = [];
  return {
    broker, auth, presence, handler, metrics, port, url,
    connect(opts) {
      return new Promise((resolve, reject) => {
        const c = connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
        clients.push(c);
        c.once('connect', () => resolve(c));
        c.once('error', (err) => { c.end(true); reject(err); });
      });
    },
    async counter(name, labels = {}) {
      const m = await metrics.registry.getSingleMetric(name)?.get();
      const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => (x.labels as Record<string, unknown>)[k] === val));
      return v?.value ?? 0;
    },
    async stop() {
      for (const c of clients) c.end(true);
      await broker.stop();
    },
  };
}

// ---------------------------------------------------------------- raw MQTT 3.1.1 over a socket


function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

/** A CONNECT packet (MQTT 3.1.1, clean session). */
export function connectPacket(o: { clientId: string; username?: string; password?: string; keepalive: number }): Buffer {
  let flags = 0x02;
  if (o.username !== undefined) flags |= 0x80;
  if (o.password !== undefined) flags |= 0x40;
  const ka = Buffer.alloc(2);
  ka.writeUInt16BE(o.keepalive);
  const body = Buffer.concat([
    str('MQTT'), Buffer.from([4, flags]), ka, str(o.clientId),
    ...(o.username !== undefined ? [str(o.username)] : []),
    ...(o.password !== undefined ? [str(o.password)] : []),
  ]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

/** The fixed header and topic of a QoS 0 PUBLISH announcing `totalPayload` bytes (the payload is not included). */
export function publishHeader(topic: string, totalPayload: number): Buffer {
  const t = str(topic);
  return Buffer.concat([Buffer.from([0x30]), remainingLength(t.length + totalPayload), t]);
}

export interface RawClient { sock: net.Socket; received: Buffer[]; closed: Promise<void>; connack: Promise<Buffer> }

/** Open a socket, send CONNECT, resolve with the socket once CONNACK (4 bytes) arrived. */
export async function rawConnect(port: number, o: Parameters<typeof connectPacket>[0]): Promise<RawClient> {
  const sock = net.connect(port, '127.0.0.1');
  const received: Buffer[] = [];
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  let resolveConnack!: (b: Buffer) => void;
  const connack = new Promise<Buffer>((r) => { resolveConnack = r; });
  sock.on('data', (d) => { received.push(d); const all = Buffer.concat(received); if (all.length >= 4) resolveConnack(all.subarray(0, 4)); });
  sock.on('error', () => undefined);
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(connectPacket(o));
  return { sock, received, closed, connack };
}
