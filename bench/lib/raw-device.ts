/**
 * Lean load generator: simulated telemetry devices speaking real MQTT 3.1.1
 * over TCP (raw-mqtt.ts framing) with QoS 1 and per-packet-id PUBACK
 * accounting. The default generator of `npm run bench:ingest`
 * (`--generator mqttjs` runs the mqtt.js SensorSim instead).
 *
 * Each device keeps up to `window` PUBLISHes in flight. Every packet id in
 * flight remembers its message's ts and send time; a PUBACK for an id that is
 * not in flight (duplicate or unknown) is a protocol error, counted in
 * `errors`, never as an acknowledgement. After a read's PUBACKs are handled
 * the device refills its window with ONE socket write holding all the new
 * frames (pipelining, as a device flushing its buffer would); that, and not
 * skipping any protocol step, is where the CPU saving over mqtt.js comes from.
 *
 * Payloads: `{"ts": <unique increasing ms>, "values": {...}}` with the soil
 * profile's 4 fields from the same random walks as the mqtt.js simulator.
 */
import net from 'node:net';
import { ProfileGenerator, createRng, hashSeed, type SimCredential } from '../../src/sim/index.js';
import { drainInFlight, runRamp, type RampResult } from '../../src/sim/ramp.js';
import { DISCONNECT, PINGREQ, PublishEncoder, ServerPacketReader, encodeConnect, isAscii } from './raw-mqtt.js';

export interface RawCounters { sent: number; acked: number; errors: number; connected: number }

export interface RawFleetOptions {
  host: string;
  port: number;
  devices: SimCredential[];
  /** In-flight QoS 1 messages per device (1..65535). */
  window: number;
  rampPerSec: number;
  maxPendingConnects: number;
  keepaliveSec: number;
  connectTimeoutMs: number;
  seed?: number;
  onAck: (deviceIndex: number, ts: number, latencyMs: number, readings: number) => void;
}

const MAX_ID = 65_535;

/** One device: one TCP connection, a packet-id table, a payload generator. */
export class RawDevice {
  private socket: net.Socket | null = null;
  private readonly encoder: PublishEncoder;
  private readonly gen: ProfileGenerator;
  private readonly fieldKeys: string[];
  /** Per packet id: in flight?, message ts, send time (performance.now()). */
  private readonly inUse = new Uint8Array(MAX_ID + 1);
  private readonly tsOf = new Float64Array(MAX_ID + 1);
  private readonly sentAt = new Float64Array(MAX_ID + 1);
  private nextId = 1;
  private lastTs = 0;
  inflight = 0;
  private sending = false;
  private connected = false;

  constructor(
    readonly index: number,
    private readonly cred: SimCredential,
    private readonly o: RawFleetOptions,
    private readonly counters: RawCounters,
  ) {
    if (o.window < 1 || o.window > MAX_ID) throw new Error(`window must be 1..${MAX_ID}`);
    const topic = `v1/devices/${cred.id}/telemetry`;
    this.encoder = new PublishEncoder(topic);
    this.gen = new ProfileGenerator('soil', createRng((o.seed ?? 1) ^ hashSeed(cred.id)));
    // Field names go into the payload as-is: check once that they are ASCII JSON-safe identifiers.
    this.fieldKeys = this.gen.fields.map((f) => {
      if (!/^[a-z][a-z0-9_]*$/.test(f) || !isAscii(f)) throw new Error(`unexpected field name ${f}`);
      return `"${f}":`;
    });
  }

  /** Connects; resolves on CONNACK 0, rejects on refusal, close, error or timeout. */
  connect(): Promise<void> {
    const { o, cred } = this;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const sock = net.connect({ host: o.host, port: o.port, noDelay: true });
      const timer = setTimeout(() => fail(new Error(`${cred.id}: no CONNACK within ${o.connectTimeoutMs} ms`)), o.connectTimeoutMs);
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        reject(err);
      };
      const reader = new ServerPacketReader({
        connack: (rc) => {
          if (settled) { this.protocolError(new Error('second CONNACK')); return; }
          if (rc !== 0) { fail(new Error(`${cred.id}: CONNACK return code ${rc}`)); return; }
          settled = true;
          clearTimeout(timer);
          this.connected = true;
          this.counters.connected++;
          resolve();
        },
        puback: (id) => this.onPuback(id),
        other: () => { /* PINGRESP */ },
        error: (err) => this.protocolError(err),
      });
      sock.on('data', (chunk: Buffer) => {
        reader.push(chunk);
        if (this.sending) this.pump(); // refill the window once per read, not once per PUBACK
      });
      sock.on('error', (err) => { if (settled) this.counters.errors++; fail(err); });
      sock.on('close', () => {
        if (this.sending) this.counters.errors++; // dropped under load: its in-flight messages stay unacknowledged
        if (this.connected) { this.connected = false; this.counters.connected--; }
        fail(new Error(`${cred.id}: connection closed before CONNACK`));
      });
      sock.write(encodeConnect({
        clientId: cred.id, username: cred.id, password: cred.secret ?? '', keepaliveSec: o.keepaliveSec, // id + secret login
        will: { topic: `v1/devices/${cred.id}/status`, payload: '{"online":false}', retain: true },
      }));
      this.socket = sock;
    });
  }

  private onPuback(id: number): void {
    if (this.inUse[id] !== 1) { this.counters.errors++; return; } // unknown or duplicate PUBACK: not an ack
    this.inUse[id] = 0;
    this.inflight--;
    this.counters.acked++;
    this.o.onAck(this.index, this.tsOf[id]!, performance.now() - this.sentAt[id]!, this.fieldKeys.length);
  }

  private protocolError(err: Error): void {
    this.counters.errors++;
    this.socket?.destroy(err);
  }

  start(): void { this.sending = true; this.pump(); }
  stopSending(): void { this.sending = false; }

  /** Unique, increasing timestamp per device (ms), as the mqtt.js simulator does. */
  private nextTs(): number {
    const now = Date.now();
    this.lastTs = now > this.lastTs ? now : this.lastTs + 1;
    return this.lastTs;
  }

  private freeId(): number {
    // At most `window` ids are in use, so a free one is found in at most window + 1 steps.
    while (this.inUse[this.nextId] === 1) this.nextId = this.nextId === MAX_ID ? 1 : this.nextId + 1;
    const id = this.nextId;
    this.nextId = id === MAX_ID ? 1 : id + 1;
    return id;
  }

  /** Fills the window: all new frames in one buffer, one socket write. */
  private pump(): void {
    const sock = this.socket;
    const n = this.o.window - this.inflight;
    if (!sock || !this.connected || n <= 0 || sock.destroyed) return;
    const payloads: string[] = new Array<string>(n);
    const tss = new Float64Array(n);
    let size = 0;
    for (let i = 0; i < n; i++) {
      const ts = this.nextTs();
      const v = this.gen.next(ts);
      let body = `{"ts":${ts},"values":{`;
      let j = 0;
      for (const k in v) body += (j ? ',' : '') + this.fieldKeys[j++] + String(v[k]);
      payloads[i] = body + '}}';
      tss[i] = ts;
      size += this.encoder.size(payloads[i]!);
    }
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    const t = performance.now();
    for (let i = 0; i < n; i++) {
      const id = this.freeId();
      this.inUse[id] = 1;
      this.tsOf[id] = tss[i]!;
      this.sentAt[id] = t;
      off = this.encoder.write(buf, off, id, payloads[i]!);
    }
    this.inflight += n;
    this.counters.sent += n;
    sock.write(buf);
  }

  ping(): void { if (this.connected) this.socket?.write(PINGREQ); }

  /** DISCONNECT (no Last Will) and close. */
  async stop(): Promise<void> {
    this.sending = false;
    const sock = this.socket;
    this.socket = null;
    if (!sock || sock.destroyed) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { sock.destroy(); resolve(); }, 3000);
      sock.once('close', () => { clearTimeout(t); resolve(); });
      sock.end(DISCONNECT);
    });
  }
}

/** The slice's devices: ramped connects, start/stop, drain, stop. */
export class RawFleet {
  readonly counters: RawCounters = { sent: 0, acked: 0, errors: 0, connected: 0 };
  readonly devices: RawDevice[];
  private pingTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: RawFleetOptions) {
    this.devices = o.devices.map((d, i) => new RawDevice(i, d, o, this.counters));
  }

  async connectAll(): Promise<RampResult> {
    const r = await runRamp(this.devices, { ratePerSec: this.o.rampPerSec, maxPending: this.o.maxPendingConnects }, (d) => d.connect());
    // Keep-alive: PUBLISHes count as activity, but the drain and verification phases may be quiet.
    this.pingTimer = setInterval(() => { for (const d of this.devices) d.ping(); }, (this.o.keepaliveSec * 1000) / 2);
    this.pingTimer.unref();
    return r;
  }

  startTelemetry(): void { for (const d of this.devices) d.start(); }
  stopTelemetry(): void { for (const d of this.devices) d.stopSending(); }

  inFlight(): number {
    let n = 0;
    for (const d of this.devices) n += d.inflight;
    return n;
  }

  drain(timeoutMs: number): Promise<boolean> {
    return drainInFlight(() => this.inFlight(), timeoutMs);
  }

  async stop(): Promise<void> {
    if (this.pingTimer) { clearInterval(this.pingTimer); this.pingTimer = null; }
    await Promise.all(this.devices.map((d) => d.stop()));
  }
}
