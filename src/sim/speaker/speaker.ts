/**
 * One simulated IP loudspeaker cluster (cụm loa) speaking device protocol v1
 * faithfully (firmware-protocols/device-protocol.md §1.5, §11, §12):
 * - connects with id + secret (or access token), clean session, client id =
 *   device id, Last Will `{"online":false}` retained QoS 1 on its status topic;
 * - after CONNACK: subscribe `rpc/request/+` (QoS 1), then status
 *   `{"online":true,...}` retained, attributes, held events, telemetry;
 * - answers every request: `broadcast.play` (validate → `rejected` + detail,
 *   or `accepted`; then fetch + sha256 check and play, see playout.ts),
 *   `broadcast.stop` (`ok`, `stopped` events), `speaker.setVolume`
 *   (`ok` + volume, or `rejected` "volume out of range"), anything else
 *   `rejected` "unknown method"; an expired request is `rejected` "expired";
 * - `media.prefetch` (§12.7, optional; listed in `capabilities` unless
 *   `prefetch: false`): downloads and caches the file by its SHA-256, then
 *   answers `ok` (`error` + detail when the download fails), so a later
 *   broadcast.play of the same hash starts without downloading;
 *   a repeated request id gets the previous answer again (§11.4);
 * - signed commands (§11.6), when given the command keys: acts only on what
 *   `signed` says, refuses a bad signature, another device's or another
 *   topic's command, an expired one and a replay (verify.ts); with
 *   `requireSignedCommands`, also an unsigned broadcast.play / broadcast.stop;
 * - telemetry: volume, playing, rssi, power_source, battery_v, amp_temp_c,
 *   uptime_s every interval and at each start/stop of playback;
 * - faults: failRate, rejectAll, acceptDelayMs, offline periods.
 */
import { EventEmitter } from 'node:events';
import mqtt, { type MqttClient } from 'mqtt';
import { createRng, hashSeed, type Rng } from '../random.js';
import { deviceTopics, rpcRequestId, type DeviceTopics } from '../topics.js';
import { PREFETCH_METHOD } from '../../core/protocol.js';
import { MediaCache } from './media.js';
import { parsePlayParams } from './params.js';
import { Playout, type PlaybackState } from './playout.js';
import { CommandVerifier, type CommandKey } from './verify.js';

export interface SpeakerFaults {
  /** Probability (0-1) that a playback fails midway ("simulated amplifier fault"). */
  failRate?: number;
  /** Answer every broadcast.play `rejected`. */
  rejectAll?: boolean;
  /** Delay before answering a broadcast.play (slow accept). */
  acceptDelayMs?: number;
  /** Drop off-line (abruptly: the will is published) after `afterMs`, for `forMs`, every `everyMs` if set. */
  offline?: { afterMs: number; forMs: number; everyMs?: number };
}

export interface SimSpeakerOptions {
  id: string;
  secret?: string;
  accessToken?: string;
  /** Log in with the access token and use `v1/devices/me/...` topics. */
  useToken?: boolean;
  /** mqtt://host:port */
  url: string;
  /** Play-time factor (1 = real time, 10 = ten times faster). Default 1. */
  speed?: number;
  /** Telemetry interval. Default 60,000. */
  telemetryIntervalMs?: number;
  keepaliveSec?: number;
  /** Automatic reconnect after a lost connection. Default 1,000. */
  reconnectPeriodMs?: number;
  faults?: SpeakerFaults;
  /** The installation's command keys (GET /api/v1/command-keys): given, the speaker verifies signed commands (§11.6). */
  commandKeys?: readonly CommandKey[];
  /** With commandKeys: refuse broadcast.play / broadcast.stop that carry no signature (`unsigned`). */
  requireSignedCommands?: boolean;
  /** Support `media.prefetch` (§12.7) and list it in `capabilities`. Default true; false imitates firmware without it. */
  prefetch?: boolean;
  rng?: Rng;
  onError?: (err: Error) => void;
}

export interface SpeakerEvent { broadcastId: string; state: PlaybackState; at: number; detail?: string }

/**
 * A command that passed the signature checks (or needed none), emitted as 'command' before the
 * speaker acts on it: what a benchmark times as "the speaker has the command". `params` are the
 * ones acted on (from `signed` when signed); `at` is after verification.
 */
export interface SpeakerCommand { requestId: string; method: string; params: unknown; signed: boolean; at: number }

export const SPEAKER_ATTRIBUTES = {
  firmware: 'sim-speaker-1.0', model: 'keng-sim-loa',
  capabilities: ['broadcast.play', 'broadcast.stop', 'speaker.setVolume', 'stream', PREFETCH_METHOD],
  codecs: ['audio/mpeg', 'audio/ogg', 'audio/wav'], amp_power_w: 30, horns: 4,
} as const;

const DEDUP_SIZE = 128;

/** Events: 'online', 'offline', 'playback' (SpeakerEvent, as sent), 'command' (SpeakerCommand), 'prefetched' ({sha256, bytes, at}). */
export class SimSpeaker extends EventEmitter {
  readonly id: string;
  /** Every playback event sent (for tests and the CLI summary). */
  readonly events: SpeakerEvent[] = [];
  /** Request ids and methods received, in order (duplicates included). */
  readonly received: Array<{ requestId: string; method: string }> = [];
  /** Commands refused by the signature checks (§11.6), in order. */
  readonly refused: Array<{ requestId: string; detail: string }> = [];
  volume = 70;
  private readonly topics: DeviceTopics;
  private readonly eventsTopic: string;
  private readonly rng: Rng;
  private readonly playout: Playout;
  private readonly media = new MediaCache();
  private readonly verifier: CommandVerifier | null;
  private readonly answers = new Map<string, Record<string, unknown> | 'pending'>();
  private readonly outbox: Array<{ topic: string; payload: string }> = [];
  private client: MqttClient | null = null;
  private ready = false;
  private stopped = false;
  private playing = false;
  private readonly bootAt = Date.now();
  /** Supports media.prefetch (§12.7): options.prefetch, changed by setPrefetch (a firmware update). */
  private prefetchOn: boolean;
  private timers = new Set<NodeJS.Timeout>();
  private telemetryTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: SimSpeakerOptions) {
    super();
    this.id = o.id;
    this.prefetchOn = o.prefetch !== false;
    if (o.useToken ? !o.accessToken : !o.secret) throw new Error(`speaker ${o.id}: no ${o.useToken ? 'access token' : 'secret'}`);
    this.topics = deviceTopics(o.useToken ? 'me' : o.id);
    this.eventsTopic = `v1/devices/${o.useToken ? 'me' : o.id}/events`;
    this.rng = o.rng ?? createRng(hashSeed(o.id));
    this.verifier = o.commandKeys
      ? new CommandVerifier({ deviceId: o.id, keys: o.commandKeys, requireSigned: o.requireSignedCommands ?? false })
      : null;
    this.playout = new Playout({
      prepare: async (item) => {
        // Already in the cache (fetched ahead with media.prefetch, §12.7, or played before): nothing to
        // download, so it starts at once, as firmware would.
        if (item.media && this.media.has(item.media.sha256)) return { ok: true, durationMs: item.media.durationSec * 1000 };
        // The download starts on the next turn of the event loop, after the `accepted` answer has been
        // written (device protocol §12.1: answer accepted/rejected, then report progress). A real speaker has its own CPU;
        // here one process simulates the fleet, and starting 2,000 downloads inside the message handlers
        // held back the answers of the speakers whose command was still waiting to be read.
        await new Promise<void>((r) => setImmediate(r));
        if (this.stopped) return { ok: false, detail: 'speaker powered off' };
        const r = item.media ? await this.media.fetchMedia(item.media.url, item.media.sha256) : await this.media.probeStream(item.stream!.url);
        if (!r.ok) return r;
        return { ok: true, durationMs: item.media ? item.media.durationSec * 1000 : 3_600_000 };
      },
      event: (broadcastId, state, detail) => this.playbackEvent(broadcastId, state, detail),
      playing: (on) => { this.playing = on; this.sendTelemetry(); },
    }, { speed: o.speed ?? 1, failRate: o.faults?.failRate ?? 0, rng: this.rng });
  }

  get isConnected(): boolean { return this.ready; }

  /** New command keys (the installation rotated); only for a speaker started with commandKeys. */
  setCommandKeys(keys: readonly CommandKey[]): void {
    if (!this.verifier) throw new Error(`speaker ${this.id}: started without command keys, it does not verify`);
    this.verifier.setKeys(keys);
  }
  get nowPlaying(): string | null { return this.playout.playingId; }

  /** Turns media.prefetch support on or off, as a firmware update would, and publishes the new capabilities. */
  setPrefetch(on: boolean): void {
    this.prefetchOn = on;
    if (this.ready && this.client) this.client.publish(this.topics.attributes, JSON.stringify(this.attributes()), { qos: 1 });
  }
  /** Whether a media file with this SHA-256 is in the speaker's cache; how many files it has downloaded. */
  hasMedia(sha256: string): boolean { return this.media.has(sha256.toLowerCase()); }
  get downloads(): number { return this.media.downloads; }

  /** Connects; resolves once subscribed and online. Schedules the offline fault if configured. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.connect();
    const off = this.o.faults?.offline;
    if (off) {
      const cycle = (delay: number): void => {
        this.later(delay, () => {
          void this.goOffline(off.forMs);
          if (off.everyMs) cycle(off.everyMs);
        });
      };
      cycle(off.afterMs);
    }
    this.telemetryTimer = setInterval(() => this.sendTelemetry(), this.o.telemetryIntervalMs ?? 60_000);
    this.telemetryTimer.unref();
  }

  /** Power off: clean offline status, DISCONNECT, nothing more. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.telemetryTimer) clearInterval(this.telemetryTimer);
    this.playout.close();
    const c = this.client;
    this.client = null;
    this.ready = false;
    if (!c) return;
    if (c.connected) {
      await new Promise<void>((r) => c.publish(this.topics.status, JSON.stringify({ online: false, reason: 'shutdown' }), { qos: 1, retain: true }, () => r()));
    }
    await new Promise<void>((r) => c.end(false, {}, () => r()));
  }

  /** Network loss: the connection drops without DISCONNECT (the broker publishes the will); back after forMs. Playback continues locally. */
  async goOffline(forMs: number): Promise<void> {
    const c = this.client;
    this.client = null;
    this.ready = false;
    if (c) await new Promise<void>((r) => c.end(true, {}, () => r()));
    this.emit('offline');
    this.later(forMs, () => { if (!this.stopped) void this.connect().catch((err: Error) => this.o.onError?.(err)); });
  }

  // ------------------------------------------------------------ connection

  private connect(): Promise<void> {
    const o = this.o;
    const client = mqtt.connect(o.url, {
      clientId: o.id,
      username: o.useToken ? o.accessToken! : o.id,
      ...(o.useToken ? {} : { password: o.secret! }),
      clean: true, protocolVersion: 4, keepalive: o.keepaliveSec ?? 60,
      reconnectPeriod: o.reconnectPeriodMs ?? 1000, connectTimeout: 10_000,
      will: { topic: this.topics.status, payload: Buffer.from('{"online":false}'), qos: 1, retain: true },
    });
    this.client = client;
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('close', () => { if (this.client === client) this.ready = false; });
    client.on('error', (err) => o.onError?.(err));
    return new Promise<void>((resolve, reject) => {
      let first = true;
      client.on('connect', () => {
        // Connect sequence (guide §1.5), on every (re)connect.
        client.subscribe(this.topics.rpcRequestFilter, { qos: 1 }, (err) => {
          if (err) { if (first) reject(err); return; }
          client.publish(this.topics.status, JSON.stringify({ online: true, firmware: SPEAKER_ATTRIBUTES.firmware, reset_reason: 'power_on' }),
            { qos: 1, retain: true });
          client.publish(this.topics.attributes, JSON.stringify(this.attributes()), { qos: 1 });
          if (this.client !== client) return;
          this.ready = true;
          for (const m of this.outbox.splice(0)) client.publish(m.topic, m.payload, { qos: 1 });
          this.sendTelemetry();
          this.emit('online');
          if (first) { first = false; resolve(); }
        });
      });
      client.once('error', (err) => { if (first) { first = false; client.end(true); reject(err); } });
    });
  }

  private send(topic: string, body: unknown): void {
    const payload = JSON.stringify(body);
    if (this.ready && this.client) this.client.publish(topic, payload, { qos: 1 });
    else this.outbox.push({ topic, payload }); // held until the connection is back (store-and-forward)
  }

  // ------------------------------------------------------------ RPC (device protocol §11)

  private onMessage(topic: string, payload: Buffer): void {
    const requestId = rpcRequestId(topic);
    if (!requestId) return;
    let req: Record<string, unknown>;
    try {
      const v: unknown = JSON.parse(payload.toString('utf8'));
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
      req = v as Record<string, unknown>;
    } catch { this.answer(requestId, { status: 'rejected', detail: 'request is not valid JSON' }); return; }
    this.received.push({ requestId, method: typeof req.method === 'string' ? req.method : '' });
    const now = Date.now();
    // §11.6: a speaker that verifies acts only on what `signed` says.
    const cmd = this.verifier ? this.verifier.check(requestId, req, now) : { ok: true as const, signed: false, method: req.method, params: req.params, expiresAt: req.expiresAt };
    if (!cmd.ok) {
      // Not remembered as the answer to R: a forgery must not decide what the genuine command with that id gets.
      this.refused.push({ requestId, detail: cmd.detail });
      this.send(this.topics.rpcResponse(requestId), { status: 'rejected', detail: cmd.detail });
      return;
    }
    // Guide §11.4: a repeated request id gets the previous answer, without acting again.
    const prev = this.answers.get(requestId);
    if (prev !== undefined) {
      if (prev !== 'pending') this.send(this.topics.rpcResponse(requestId), prev);
      return;
    }
    const method = typeof cmd.method === 'string' ? cmd.method : '';
    this.emit('command', { requestId, method, params: cmd.params, signed: cmd.signed, at: Date.now() } satisfies SpeakerCommand);
    if (typeof cmd.expiresAt === 'number' && cmd.expiresAt < now) { this.answer(requestId, { status: 'rejected', detail: 'expired' }); return; }
    this.dispatch(requestId, method, cmd.params, now);
    // Carried out (or about to be, after a slow accept): a second delivery of R is a replay.
    const answered = this.answers.get(requestId);
    if (cmd.signed && (answered === 'pending' || answered?.status === 'accepted' || answered?.status === 'ok')) {
      this.verifier!.markExecuted(requestId, cmd.expiresAt as number, now);
    }
  }

  private dispatch(requestId: string, method: string, params: unknown, now: number): void {
    switch (method) {
      case 'broadcast.play': this.play(requestId, params, now); break;
      case 'broadcast.stop': {
        const p = (typeof params === 'object' && params !== null ? params : {}) as { broadcastId?: unknown };
        const id = typeof p.broadcastId === 'string' ? p.broadcastId : undefined;
        this.answer(requestId, { status: 'ok' });
        this.playout.stop(id);
        break;
      }
      case 'speaker.setVolume': {
        const v = (params as { volume?: unknown } | undefined)?.volume;
        if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 100) { this.answer(requestId, { status: 'rejected', detail: 'volume out of range' }); break; }
        this.volume = Math.round(v);
        this.answer(requestId, { status: 'ok', volume: this.volume });
        this.sendTelemetry();
        break;
      }
      case PREFETCH_METHOD:
        if (this.prefetchOn) { this.prefetch(requestId, params); break; }
      // falls through: firmware without media.prefetch
      default: this.answer(requestId, { status: 'rejected', detail: `unknown method${method ? ` "${method.slice(0, 64)}"` : ''}` });
    }
  }

  /** What the speaker publishes on its attributes topic after connecting. */
  private attributes(): Record<string, unknown> {
    if (this.prefetchOn) return SPEAKER_ATTRIBUTES;
    return { ...SPEAKER_ATTRIBUTES, capabilities: SPEAKER_ATTRIBUTES.capabilities.filter((c) => c !== PREFETCH_METHOD) };
  }

  /** §12.7: download and verify now, answer once the file is in the cache (or could not be). */
  private prefetch(requestId: string, params: unknown): void {
    const media = (typeof params === 'object' && params !== null ? (params as { media?: unknown }).media : undefined) as
      { url?: unknown; sha256?: unknown } | undefined;
    if (typeof media?.url !== 'string' || !/^https?:\/\//.test(media.url)) { this.answer(requestId, { status: 'rejected', detail: 'bad media.url' }); return; }
    if (typeof media.sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(media.sha256)) { this.answer(requestId, { status: 'rejected', detail: 'bad media.sha256' }); return; }
    const { url } = media;
    const sha256 = media.sha256.toLowerCase();
    this.answers.set(requestId, 'pending');
    // As for a play: the download starts on the next turn, after this message's handling.
    setImmediate(() => {
      if (this.stopped) return;
      void this.media.fetchMedia(url, sha256).then((r) => {
        if (this.stopped) return;
        this.answer(requestId, r.ok ? { status: 'ok', cached: true } : { status: 'error', detail: r.detail });
        if (r.ok) this.emit('prefetched', { sha256, bytes: r.bytes, at: Date.now() });
      });
    });
  }

  private play(requestId: string, params: unknown, now: number): void {
    if (this.o.faults?.rejectAll) { this.answer(requestId, { status: 'rejected', detail: 'simulated fault: rejectAll' }); return; }
    const p = parsePlayParams(params, now);
    if (!p.ok) { this.answer(requestId, { status: 'rejected', detail: p.detail }); return; }
    if (this.playout.knows(p.item.broadcastId)) { this.answer(requestId, { status: 'rejected', detail: 'already playing or queued' }); return; }
    const delay = this.o.faults?.acceptDelayMs ?? 0;
    const go = (): void => {
      if (this.stopped) return;
      this.answer(requestId, { status: 'accepted' });
      this.playout.enqueue(p.item);
    };
    if (delay > 0) { this.answers.set(requestId, 'pending'); this.later(delay, go); } else go();
  }

  private answer(requestId: string, body: Record<string, unknown>): void {
    this.answers.set(requestId, body);
    if (this.answers.size > DEDUP_SIZE) this.answers.delete(this.answers.keys().next().value!);
    this.send(this.topics.rpcResponse(requestId), body);
  }

  // ------------------------------------------------------------ events and telemetry

  private playbackEvent(broadcastId: string, state: PlaybackState, detail?: string): void {
    const e: SpeakerEvent = { broadcastId, state, at: Date.now(), ...(detail !== undefined ? { detail } : {}) };
    this.events.push(e);
    this.send(this.eventsTopic, { type: 'playback', ...e });
    this.emit('playback', e);
  }

  private sendTelemetry(): void {
    if (!this.ready || !this.client) return; // telemetry is live data: not held while offline
    const r = this.rng;
    const values = {
      volume: this.volume, playing: this.playing, rssi: Math.round(-55 - 25 * r()),
      power_source: this.id.charCodeAt(this.id.length - 1) % 3 === 0 ? 'solar' : 'ac',
      battery_v: Math.round((12.4 + 0.4 * r()) * 100) / 100,
      amp_temp_c: Math.round((this.playing ? 45 : 32) + 5 * r()),
      uptime_s: Math.floor((Date.now() - this.bootAt) / 1000),
    };
    this.client.publish(this.topics.telemetry, JSON.stringify({ ts: Date.now(), values }), { qos: 1 });
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    t.unref();
    this.timers.add(t);
  }
}
