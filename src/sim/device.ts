/**
 * One simulated sensor: an mqtt.js client speaking device protocol v1.
 * Connects with id + secret (or access token), sets its Last Will, reports
 * online and its attributes, sends telemetry on an interval (or as fast as a
 * window of in-flight QoS 1 messages allows), answers RPC with `rejected`,
 * and optionally goes offline now and then, buffering readings and uploading
 * the backlog oldest first when it is back.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { Backlog, backlogPayloads, type TimedReading } from './backlog.js';
import { ProfileGenerator, type ProfileName } from './profiles.js';
import { answerRpc, deviceTopics, rpcRequestId, type DeviceTopics } from './topics.js';
import type { Rng } from './random.js';
import type { SimCounters } from './stats.js';

export const SIM_ATTRIBUTES = { firmware: 'sim-1.0', model: 'keng-sim' } as const;

export interface StoreForwardOptions {
  /** Mean time between outages. */
  everyMs: number;
  /** How long each outage lasts. */
  offlineMs: number;
  /** Readings per uploaded array message. */
  chunk?: number;
  capacity?: number;
}

export interface SimDeviceOptions {
  id: string;
  secret?: string;
  accessToken?: string;
  /** Log in with the access token (topics under v1/devices/me) instead of id + secret. */
  useToken?: boolean;
  url: string;
  profile: ProfileName;
  qos: 0 | 1;
  /** Telemetry interval; ignored in window mode. */
  intervalMs: number;
  /** >0: max-throughput mode, keep this many QoS 1 telemetry messages in flight. */
  window: number;
  keepaliveSec: number;
  /** 0 = never reconnect by itself. */
  reconnectPeriodMs: number;
  connectTimeoutMs: number;
  storeForward?: StoreForwardOptions;
  /** Send attributes once after the first connect. */
  sendAttributes: boolean;
  rng: Rng;
  counters: SimCounters;
  /** Called for every acknowledged telemetry message (QoS 1: PUBACK; QoS 0: written). */
  onAck?: (ts: number, latencyMs: number, readings: number) => void;
  onError?: (err: Error) => void;
}

export class SimDevice {
  readonly id: string;
  private client: MqttClient | null = null;
  private readonly topics: DeviceTopics;
  private readonly gen: ProfileGenerator;
  private readonly backlog: Backlog | null;
  private lastTs = 0;
  private inflight = 0;
  private telemetryOn = false;
  private timer: NodeJS.Timeout | null = null;
  private outageTimer: NodeJS.Timeout | null = null;
  private connected = false;
  private offline = false;
  private stopped = false;
  private attributesSent = false;
  private uploading = false;

  constructor(private readonly o: SimDeviceOptions) {
    this.id = o.id;
    this.topics = deviceTopics(o.useToken ? 'me' : o.id);
    this.gen = new ProfileGenerator(o.profile, o.rng);
    this.backlog = o.storeForward ? new Backlog(o.storeForward.capacity ?? 10_000) : null;
    if (o.useToken ? !o.accessToken : !o.secret) throw new Error(`device ${o.id}: no ${o.useToken ? 'access token' : 'secret'}`);
  }

  get isConnected(): boolean {
    return this.connected;
  }

  get inFlight(): number {
    return this.inflight;
  }

  get backlogSize(): number {
    return this.backlog?.size ?? 0;
  }

  /** Connects; resolves on the first CONNACK, rejects if the first attempt fails. */
  start(): Promise<void> {
    this.stopped = false;
    this.scheduleOutage();
    return this.connect();
  }

  private connect(): Promise<void> {
    const o = this.o;
    this.o.counters.connecting++;
    const client = mqtt.connect(o.url, {
      clientId: o.id,
      username: o.useToken ? o.accessToken : o.id,
      password: o.useToken ? 'x' : o.secret,
      protocolVersion: 4,
      clean: true,
      keepalive: o.keepaliveSec,
      reconnectPeriod: o.reconnectPeriodMs,
      connectTimeout: o.connectTimeoutMs,
      will: { topic: this.topics.status, payload: Buffer.from('{"online":false}'), qos: 1, retain: true },
    });
    this.client = client;
    return new Promise((resolve, reject) => {
      let settled = false;
      client.on('connect', () => {
        if (!settled) { settled = true; o.counters.connecting--; resolve(); }
        this.onConnect(client);
      });
      client.on('close', () => {
        if (client === this.client && this.connected) { this.connected = false; o.counters.connected--; }
        if (!settled && o.reconnectPeriodMs === 0) {
          settled = true; o.counters.connecting--;
          reject(new Error(`${o.id}: connection closed before CONNACK`));
        }
      });
      client.on('error', (err) => {
        o.counters.errors++;
        o.onError?.(err);
        if (!settled && o.reconnectPeriodMs === 0) {
          settled = true; o.counters.connecting--;
          reject(err);
        }
      });
      client.on('reconnect', () => { o.counters.reconnects++; });
      client.on('message', (topic, payload) => this.onMessage(topic, payload));
    });
  }

  private onConnect(client: MqttClient): void {
    if (client !== this.client) return;
    this.connected = true;
    this.o.counters.connected++;
    client.subscribe(this.topics.rpcRequestFilter, { qos: 1 }, (err) => { if (err) this.o.counters.errors++; });
    client.publish(this.topics.status, '{"online":true}', { qos: 1, retain: true });
    if (this.o.sendAttributes && !this.attributesSent) {
      this.attributesSent = true;
      client.publish(this.topics.attributes, JSON.stringify(SIM_ATTRIBUTES), { qos: 1 });
    }
    if (this.backlog && this.backlog.size > 0) void this.uploadBacklog(client);
    else if (this.telemetryOn) this.resumeTelemetry();
  }

  private onMessage(topic: string, payload: Buffer): void {
    const requestId = rpcRequestId(topic);
    if (requestId === null || !this.client) return;
    const answer = answerRpc(payload);
    this.client.publish(this.topics.rpcResponse(requestId), JSON.stringify(answer), { qos: 1 }, (err) => {
      if (err) this.o.counters.errors++; else this.o.counters.rpcAnswered++;
    });
  }

  /** Starts sending telemetry (interval or window mode). */
  startTelemetry(): void {
    this.telemetryOn = true;
    if (this.connected && !this.uploading) this.resumeTelemetry();
    else if (this.backlog && !this.timer && this.o.window === 0) this.startTimer();
  }

  /** Stops sending new telemetry; in-flight messages still complete. */
  stopTelemetry(): void {
    this.telemetryOn = false;
    if (this.timer) { clearInterval(this.timer); this.timer = null; }
  }

  private resumeTelemetry(): void {
    if (this.o.window > 0) this.pump();
    else if (!this.timer) this.startTimer();
  }

  private startTimer(): void {
    // Random phase so that N devices do not all send in the same millisecond.
    const phase = Math.floor(this.o.rng() * this.o.intervalMs);
    this.timer = setTimeout(() => {
      this.tick();
      this.timer = setInterval(() => this.tick(), this.o.intervalMs);
    }, phase);
  }

  /** Unique, increasing timestamp per device (ms). */
  private nextTs(): number {
    const now = Date.now();
    this.lastTs = now > this.lastTs ? now : this.lastTs + 1;
    return this.lastTs;
  }

  private tick(): void {
    if (!this.telemetryOn) return;
    const ts = this.nextTs();
    const reading: TimedReading = { ts, values: this.gen.next(ts) };
    if (!this.connected || this.uploading) {
      // A store-and-forward device keeps what it measured while offline; others lose it.
      if (this.backlog) { this.backlog.push(reading); this.o.counters.backlogged++; }
      return;
    }
    this.send(reading);
  }

  private pump(): void {
    while (this.telemetryOn && this.connected && this.inflight < this.o.window) {
      const ts = this.nextTs();
      this.send({ ts, values: this.gen.next(ts) });
    }
  }

  private send(r: TimedReading): void {
    const client = this.client;
    if (!client) return;
    const payload = JSON.stringify(r);
    const readings = Object.keys(r.values).length;
    const t0 = performance.now();
    this.inflight++;
    this.o.counters.sent++;
    client.publish(this.topics.telemetry, payload, { qos: this.o.qos }, (err) => {
      this.inflight--;
      if (err) {
        this.o.counters.errors++;
      } else {
        this.o.counters.acked++;
        this.o.onAck?.(r.ts, performance.now() - t0, readings);
      }
      if (this.o.window > 0) this.pump();
    });
  }

  private async uploadBacklog(client: MqttClient): Promise<void> {
    if (!this.backlog || this.uploading) return;
    this.uploading = true;
    const chunk = this.o.storeForward?.chunk ?? 100;
    try {
      while (this.backlog.size > 0 && this.connected && client === this.client) {
        const batch = this.backlog.take(chunk);
        const [payload] = backlogPayloads(batch, chunk);
        try {
          await client.publishAsync(this.topics.telemetry, payload!, { qos: 1 });
          this.o.counters.sent++;
          this.o.counters.acked++;
        } catch {
          this.o.counters.errors++;
          this.backlog.putBack(batch);
          break;
        }
      }
    } finally {
      this.uploading = false;
    }
    if (this.telemetryOn && this.connected) this.resumeTelemetry();
  }

  private scheduleOutage(): void {
    const sf = this.o.storeForward;
    if (!sf || this.stopped) return;
    const wait = Math.max(1000, Math.round(sf.everyMs * (0.5 + this.o.rng())));
    this.outageTimer = setTimeout(() => this.goOffline(sf.offlineMs), wait);
  }

  /** Drops the connection abruptly (the server publishes the Last Will) and comes back after `ms`. */
  goOffline(ms: number): void {
    if (this.offline || this.stopped || !this.client) return;
    this.offline = true;
    const old = this.client;
    this.client = null;
    if (this.connected) { this.connected = false; this.o.counters.connected--; }
    old.end(true);
    this.outageTimer = setTimeout(() => {
      this.offline = false;
      if (this.stopped) return;
      this.connect().catch(() => { /* counted in errors; reconnectPeriod retries */ });
      this.scheduleOutage();
    }, ms);
  }

  /** Waits until no telemetry is in flight (or the timeout passes). */
  async drain(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (this.inflight > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    return this.inflight === 0;
  }

  /** Disconnects cleanly (DISCONNECT: no Last Will), after publishing offline status. */
  async stop(opts: { announceOffline?: boolean } = {}): Promise<void> {
    this.stopped = true;
    this.stopTelemetry();
    if (this.outageTimer) { clearTimeout(this.outageTimer); this.outageTimer = null; }
    const client = this.client;
    this.client = null;
    if (!client) return;
    if (this.connected && opts.announceOffline !== false) {
      await Promise.race([
        client.publishAsync(this.topics.status, '{"online":false}', { qos: 1, retain: true }).catch(() => undefined),
        new Promise((r) => setTimeout(r, 2000)),
      ]);
    }
    await Promise.race([client.endAsync(false).catch(() => undefined), new Promise((r) => setTimeout(r, 3000))]);
    client.end(true);
    if (this.connected) { this.connected = false; this.o.counters.connected--; }
  }
}
