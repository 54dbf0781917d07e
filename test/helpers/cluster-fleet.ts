/**
 * Devices for the cluster failure tests: each publishes telemetry QoS 1 at
 * its own pace, every message with its own `ts`, and behaves like firmware
 * that keeps unacknowledged messages: when its connection dies it reconnects
 * (after a short random back-off, through the same address: HAProxy) and
 * sends again, in order, every message that got no PUBACK. A PUBACK is the
 * only thing that counts as acknowledged (`acked`), which is what the audit
 * compares with the database.
 *
 * Each connection is a fresh mqtt.js client (clean session, the device id as
 * client id): the resend is this loop's, not mqtt.js's store, so it works the
 * same whichever node the device lands on.
 */
import net from 'node:net';
import { MqttClient, type IClientOptions } from 'mqtt';

export interface FleetOptions {
  /** Where devices connect (HAProxy's MQTT port). */
  port: number;
  /** One new message per device every periodMs while producing. */
  periodMs: number;
  /** Messages in flight (sent, not yet acknowledged) per device. */
  window: number;
  /** ts of message `seq` is t0 + seq × 1000. */
  t0: number;
  /** Bytes written before MQTT on every connection (a PROXY header when going around HAProxy). */
  header?: Buffer;
}

export class SimDevice {
  /** Messages produced so far: 1..produced. */
  produced = 0;
  /** Sequence numbers that got a PUBACK. */
  readonly acked = new Set<number>();
  /** Produced, not acknowledged, not in flight on the current connection; ascending. */
  private pending: number[] = [];
  private client: MqttClient | null = null;
  private inflight = new Set<number>();
  private closedAt = 0;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  connected = false;
  connects = 0;
  /** Messages sent again because their connection died before the PUBACK. */
  resent = 0;
  /** Time from losing a connection to the next CONNACK, ms (one entry per reconnection). */
  readonly moves: number[] = [];
  /** When the last CONNACK came (Date.now()). */
  connectedAt = 0;

  constructor(readonly id: string, private readonly secret: string, private readonly fleet: Fleet) {}

  open(): void {
    if (this.stopped) return;
    const o = this.fleet.opts;
    const c = new MqttClient(() => {
      const s = net.connect({ host: '127.0.0.1', port: o.port });
      if (o.header) s.write(o.header);
      return s;
    }, { protocol: 'mqtt', protocolVersion: 4, clientId: this.id, username: this.id, password: this.secret, reconnectPeriod: 0, connectTimeout: 10_000, keepalive: 60, clean: true } as IClientOptions);
    this.client = c;
    const mine = new Set<number>();
    c.on('error', () => { /* the node or the balancer closed the connection: 'close' follows */ });
    c.on('connect', () => {
      if (this.client !== c) return;
      this.connected = true;
      this.connects++;
      this.connectedAt = Date.now();
      if (this.closedAt) this.moves.push(this.connectedAt - this.closedAt);
      this.closedAt = 0;
      this.inflight = mine;
      this.pump();
    });
    c.on('close', () => {
      if (this.client !== c) return;
      this.client = null;
      this.connected = false;
      if (!this.closedAt) this.closedAt = Date.now();
      // No PUBACK came for these on that connection: send them again on the next one.
      for (const s of mine) if (!this.acked.has(s)) { this.pending.push(s); this.resent++; }
      mine.clear();
      this.pending.sort((a, b) => a - b);
      c.end(true);
      if (!this.stopped) setTimeout(() => this.open(), 100 + Math.random() * 300);
    });
  }

  produce(): void {
    this.produced++;
    this.pending.push(this.produced);
    this.pump();
  }

  startProducing(periodMs: number): void {
    const tick = (): void => { this.produce(); this.timer = setTimeout(tick, periodMs); };
    this.timer = setTimeout(tick, Math.random() * periodMs);
  }

  stopProducing(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  get done(): boolean { return this.acked.size === this.produced; }

  private pump(): void {
    const c = this.client;
    const mine = this.inflight;
    while (c && this.connected && this.client === c && mine.size < this.fleet.opts.window && this.pending.length) {
      const seq = this.pending.shift()!;
      if (this.acked.has(seq)) continue;
      mine.add(seq);
      const ts = this.fleet.tsOf(seq);
      c.publish(`v1/devices/${this.id}/telemetry`, JSON.stringify({ ts, values: { v: seq, s: `${this.id}:${seq}` } }), { qos: 1 }, (err) => {
        if (err) return; // the connection died: 'close' puts it back in pending
        this.acked.add(seq);
        mine.delete(seq);
        this.fleet.onAck(this);
        this.pump();
      });
    }
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.stopProducing();
    const c = this.client;
    this.client = null;
    this.connected = false;
    if (c) await new Promise<void>((r) => c.end(true, {}, () => r()));
  }
}

export class Fleet {
  readonly devices: SimDevice[];
  /** PUBACKs received, all devices. */
  acks = 0;
  /** Called on every PUBACK (tests trigger faults from here). */
  onAckHook: (() => void) | null = null;

  constructor(secrets: Record<string, string>, readonly opts: FleetOptions) {
    this.devices = Object.entries(secrets).map(([id, s]) => new SimDevice(id, s, this));
  }

  tsOf(seq: number): number { return this.opts.t0 + seq * 1000; }
  seqOf(ts: number): number { return (ts - this.opts.t0) / 1000; }

  onAck(_d: SimDevice): void {
    this.acks++;
    this.onAckHook?.();
  }

  /** Connect every device (staggered over `spreadMs`) and wait until all are connected. */
  async connect(spreadMs = 2_000, timeoutMs = 60_000): Promise<void> {
    this.devices.forEach((d, i) => setTimeout(() => d.open(), (spreadMs * i) / this.devices.length));
    const until = Date.now() + timeoutMs;
    while (this.connected() < this.devices.length) {
      if (Date.now() > until) throw new Error(`fleet: ${this.connected()} of ${this.devices.length} devices connected after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  startProducing(): void { for (const d of this.devices) d.startProducing(this.opts.periodMs); }
  stopProducing(): void { for (const d of this.devices) d.stopProducing(); }

  connected(): number { return this.devices.filter((d) => d.connected).length; }
  produced(): number { return this.devices.reduce((n, d) => n + d.produced, 0); }
  ackedTotal(): number { return this.devices.reduce((n, d) => n + d.acked.size, 0); }
  resent(): number { return this.devices.reduce((n, d) => n + d.resent, 0); }
  /** Every reconnection's time from losing the connection to the next CONNACK. */
  moves(): number[] { return this.devices.flatMap((d) => d.moves); }

  /** Stop producing and wait until every message produced is acknowledged (rejects after timeoutMs). */
  async settle(timeoutMs: number): Promise<void> {
    this.stopProducing();
    const until = Date.now() + timeoutMs;
    while (!this.devices.every((d) => d.done)) {
      if (Date.now() > until) {
        const behind = this.devices.filter((d) => !d.done);
        throw new Error(`fleet: ${behind.length} devices still have unacknowledged messages after ${timeoutMs} ms (${behind.slice(0, 5).map((d) => `${d.id} ${d.acked.size}/${d.produced} connected=${d.connected}`).join(', ')})`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async close(): Promise<void> { await Promise.all(this.devices.map((d) => d.close())); }
}
