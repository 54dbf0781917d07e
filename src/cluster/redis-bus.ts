/**
 * The live bus over a Redis stream (the one module that talks to Redis; see
 * port.ts for what the bus may and may not carry).
 *
 * Each node appends ONE entry per committed batch:
 *   XADD keng:live MAXLEN ~ <maxLen> * i <instance> n <nodeId> s <seq> t <sentAt> b <readings>
 * (`b`: codec.ts; entries over `maxEntryBytes` are split). Every node reads
 * the stream on its own connection (XREAD BLOCK), skips the entries of its
 * own instance (a random id per process, so two nodes given the same nodeId
 * still see each other) and hands the others' readings to `remote`.
 *
 * Redis is best effort, so:
 * - publish() never awaits: XADD goes out on a connection without an offline
 *   queue (a call while disconnected fails at once instead of piling up) and
 *   with a command timeout; at most `maxInFlight` XADDs are outstanding.
 *   What is not sent is counted by reason (keng_cluster_bus_unsent_readings_total).
 * - An outage is logged once when it starts and once when it ends, not per
 *   batch; both connections reconnect with back-off (100 ms doubling to 5 s,
 *   with jitter).
 * - After an outage the reader resumes at the stream's END, not at the last
 *   entry it read. The feed is a view of now: what other nodes committed
 *   meanwhile is in the database, and a client that wants it asks the HTTP
 *   API (latest values, history). Replaying the backlog would push minutes-old
 *   readings at clients as if live, in a burst, right when the node is
 *   recovering; and Redis keeps nothing across its own restart (no
 *   persistence), so an old position would not mean the same stream anyway.
 *   The gap is not hidden: each entry carries its sender's sequence number,
 *   and jumps are counted in keng_cluster_bus_missed_entries_total.
 *
 * Session claims (announceClaim) go on the same stream, as entries with a `c`
 * field (`[deviceId, epoch]` as JSON) instead of `b`: one reader, one
 * sequence, the same outage handling. A lost claim notice costs only time:
 * the claiming node's reconciliation closes the old connection anyway.
 * RPC pickup hints (nudgeRpc) likewise, with an `r` field (the node that owns
 * new commands): a lost one costs at most that node's pickup period (1 s).
 * Messages to one node (sendDirect: calls.ts) carry `d` (the node it is for)
 * and `m` (the body); every node reads them, only node `d` hands them on,
 * with their age on Redis's own clock (the entry id's time against TIME).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { TelemetryEvent } from '../core/events.js';
import { BadEntry, decodeReadings, encodeParts } from './codec.js';
import { busMetrics, type BusMetrics } from './metrics.js';
import type { ClusterBus, RemoteClaim, RemoteDirect, RemoteReadings } from './port.js';

export interface RedisBusTuning {
  /** Stream key shared by the nodes. */
  stream: string;
  /** Approximate stream length kept (entries are batches: 10,000 is minutes of a busy commune). */
  maxLen: number;
  /** Largest entry body; larger batches are split. */
  maxEntryBytes: number;
  /** XADDs outstanding at most; more are counted as unsent (`backlog`) instead of queued. */
  maxInFlight: number;
  /** How long one XREAD waits for new entries. */
  blockMs: number;
  /** Timeout of every non-blocking call (XADD, XREVRANGE). */
  commandTimeoutMs: number;
  /** Entries read per XREAD. */
  readCount: number;
  backoffMinMs: number;
  backoffMaxMs: number;
}

export const REDIS_BUS_DEFAULTS: RedisBusTuning = {
  stream: 'keng:live', maxLen: 10_000, maxEntryBytes: 256 * 1024, maxInFlight: 64,
  blockMs: 1000, commandTimeoutMs: 1000, readCount: 100, backoffMinMs: 100, backoffMaxMs: 5000,
};

export interface RedisBusOptions {
  url: string;
  nodeId: string;
  remote: RemoteReadings;
  /** Another node's session claims (absent: ignored). */
  claimed?: RemoteClaim;
  /** Another node stored RPC commands this node owns (absent: ignored; the pickup poll finds them). */
  rpcNudged?: () => void;
  /** Messages addressed to this node (absent: ignored; their senders get no answer). */
  direct?: RemoteDirect;
  logger: Logger;
  clock: Clock;
  metrics?: Pick<Metrics, 'registry'>;
  tuning?: Partial<RedisBusTuning>;
}

/** Last sequence number seen per sending instance (a bounded map: instances come and go with restarts). */
const MAX_TRACKED_SENDERS = 256;

export class RedisClusterBus implements ClusterBus {
  readonly name = 'cluster-bus';
  readonly shares = true;
  /** This process; skips its own entries by it. */
  readonly instance = randomBytes(8).toString('hex');
  private readonly t: RedisBusTuning;
  private readonly m: BusMetrics;
  private pub: Redis | null = null;
  private sub: Redis | null = null;
  private running = false;
  private reader: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private seq = 0;
  private inFlight = 0;
  /** 'starting' until Redis first answers or fails: both are logged once. */
  private state: 'starting' | 'up' | 'down' = 'starting';
  private downSince = 0;
  private unsentInOutage = 0;
  private readonly lastSeq = new Map<string, number>();

  constructor(private readonly o: RedisBusOptions) {
    this.t = { ...REDIS_BUS_DEFAULTS, ...o.tuning };
    this.m = busMetrics(o.metrics?.registry);
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.state = 'starting';
    this.unsentInOutage = 0;
    this.m.up.set(0);
    this.downSince = this.o.clock.now();
    // Not awaited: a node starts (and ingests) without Redis; the bus joins when Redis answers.
    this.pub = this.connection('pub', this.t.commandTimeoutMs);
    // The reader's calls block for blockMs: its timeout covers that plus the usual margin.
    this.sub = this.connection('sub', this.t.blockMs + this.t.commandTimeoutMs);
    this.reader = this.readLoop();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake?.();
    // disconnect() ends a blocked XREAD at once (quit would wait for it).
    this.sub?.disconnect();
    this.pub?.disconnect();
    await this.reader;
    this.reader = null;
    this.pub = this.sub = null;
    this.m.up.set(0);
  }

  publish(events: readonly TelemetryEvent[]): void {
    if (!this.running || events.length === 0) return;
    try { this.send(events); } catch (err) {
      // Never out of here: the caller is ingest's post-commit step.
      this.unsent('error', events.length);
      this.o.logger.error({ err }, 'live bus: could not send a batch');
    }
  }

  announceClaim(deviceId: string, epoch: number): void {
    const pub = this.pub;
    if (!this.running) return;
    const seq = ++this.seq;
    if (pub === null || pub.status !== 'ready' || this.inFlight >= this.t.maxInFlight) { this.m.claims.inc({ direction: 'unsent' }); return; }
    this.inFlight++;
    pub.xadd(this.t.stream, 'MAXLEN', '~', this.t.maxLen, '*',
      'i', this.instance, 'n', this.o.nodeId, 's', seq, 't', this.o.clock.now(), 'c', JSON.stringify([deviceId, epoch]))
      .then(() => { this.answered(); this.m.claims.inc({ direction: 'sent' }); },
        (err: unknown) => { this.m.claims.inc({ direction: 'unsent' }); this.failed(err, 'claim'); })
      .finally(() => { this.inFlight--; });
  }

  nudgeRpc(target: string): void {
    const pub = this.pub;
    if (!this.running || pub === null || pub.status !== 'ready' || this.inFlight >= this.t.maxInFlight) return; // the pickup poll finds them
    const seq = ++this.seq;
    this.inFlight++;
    pub.xadd(this.t.stream, 'MAXLEN', '~', this.t.maxLen, '*',
      'i', this.instance, 'n', this.o.nodeId, 's', seq, 't', this.o.clock.now(), 'r', target)
      .then(() => { this.answered(); }, (err: unknown) => { this.failed(err, 'rpc nudge'); })
      .finally(() => { this.inFlight--; });
  }

  sendDirect(to: string, body: string): boolean {
    const pub = this.pub;
    // Down (a command or the reader failed): its connection may not have noticed yet, and a message that might
    // or might not have gone would leave the caller unsure; not sending is the certain answer.
    if (!this.running || this.state === 'down' || pub === null || pub.status !== 'ready' || this.inFlight >= this.t.maxInFlight) return false;
    const seq = ++this.seq;
    this.inFlight++;
    pub.xadd(this.t.stream, 'MAXLEN', '~', this.t.maxLen, '*',
      'i', this.instance, 'n', this.o.nodeId, 's', seq, 't', this.o.clock.now(), 'd', to, 'm', body)
      .then(() => { this.answered(); }, (err: unknown) => { this.failed(err, 'direct'); })
      .finally(() => { this.inFlight--; });
    return true;
  }

  report(): { ok: true; detail: Record<string, unknown> } {
    const up = this.state === 'up';
    return { ok: true, detail: { degraded: !up, nodeId: this.o.nodeId, ...(up ? {} : { downSinceMs: this.o.clock.now() - this.downSince }) } };
  }

  private send(events: readonly TelemetryEvent[]): void {
    const pub = this.pub;
    if (pub === null || pub.status !== 'ready') {
      // Not even encoded: nothing can take it. The sequence moves on, so receivers count the gap.
      this.seq++;
      this.unsent('redis_down', events.length);
      return;
    }
    const { parts, tooLarge } = encodeParts(events, this.t.maxEntryBytes);
    if (tooLarge > 0) this.unsent('too_large', tooLarge);
    for (const p of parts) {
      const seq = ++this.seq;
      if (this.inFlight >= this.t.maxInFlight) { this.unsent('backlog', p.readings); continue; }
      this.inFlight++;
      pub.xadd(this.t.stream, 'MAXLEN', '~', this.t.maxLen, '*',
        'i', this.instance, 'n', this.o.nodeId, 's', seq, 't', this.o.clock.now(), 'b', p.body)
        .then(() => {
          this.answered();
          this.m.entries.inc({ direction: 'sent' });
          this.m.readings.inc({ direction: 'sent' }, p.readings);
        }, (err: unknown) => {
          this.unsent('error', p.readings);
          this.failed(err, 'publish');
        })
        .finally(() => { this.inFlight--; });
    }
  }

  private connection(role: 'pub' | 'sub', commandTimeout: number): Redis {
    const r = new Redis(this.o.url, {
      lazyConnect: true,
      connectionName: `keng-${this.o.nodeId}-${role}`,
      // Fail at once while disconnected, never queue (a queued call is an await that hangs for the outage).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // An XADD that may have reached Redis is not sent twice after a reconnect.
      autoResendUnfulfilledCommands: false,
      commandTimeout,
      connectTimeout: 2000,
      retryStrategy: (times) => {
        const base = Math.min(this.t.backoffMinMs * 2 ** Math.min(times - 1, 16), this.t.backoffMaxMs);
        return Math.round(base / 2 + Math.random() * base / 2);
      },
    });
    // ioredis reports every failed reconnect as 'error'; the outage is logged once (failed()), not per attempt.
    r.on('error', (err: unknown) => this.failed(err, role));
    r.on('close', () => this.failed(null, role));
    r.on('ready', () => { this.answered(); this.wake?.(); });
    r.connect().catch(() => { /* 'error' handled it; retryStrategy keeps trying */ });
    return r;
  }

  /** The reading side: XREAD BLOCK from the stream's end, back-off while Redis is away. */
  private async readLoop(): Promise<void> {
    let from: string | null = null;
    let backoff = this.t.backoffMinMs;
    while (this.running) {
      const sub = this.sub!;
      if (sub.status !== 'ready') { await this.pause(backoff); backoff = Math.min(backoff * 2, this.t.backoffMaxMs); continue; }
      try {
        // '$' resolved once to a concrete id: XREAD '$' repeated would lose what arrives between two calls.
        from ??= await this.streamEnd(sub);
        const res: Array<[string, Array<[string, string[]]>]> | null = await sub.xread('COUNT', this.t.readCount, 'BLOCK', this.t.blockMs, 'STREAMS', this.t.stream, from);
        backoff = this.t.backoffMinMs;
        this.answered();
        if (res) for (const [, entries] of res) for (const [id, fields] of entries) { from = id; this.received(id, fields); }
      } catch (err) {
        if (!this.running) break;
        this.failed(err, 'read');
        from = null; // resume at the end (see the file comment)
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, this.t.backoffMaxMs);
      }
    }
  }

  /** The id of the newest entry, or 0-0 when the stream does not exist (yet, or since a Redis restart). */
  private async streamEnd(sub: Redis): Promise<string> {
    const last = await sub.xrevrange(this.t.stream, '+', '-', 'COUNT', 1);
    return last[0]?.[0] ?? '0-0';
  }

  private received(id: string, fields: string[]): void {
    const f: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
    const inst = f.i;
    if (inst === this.instance) return;
    const seq = Number(f.s);
    const sentAt = Number(f.t);
    if (inst !== undefined && f.c !== undefined && Number.isSafeInteger(seq)) { this.claimReceived(inst, seq, f.c, f.n ?? ''); return; }
    if (inst !== undefined && f.d !== undefined && f.m !== undefined && Number.isSafeInteger(seq)) {
      this.countGap(inst, seq);
      if (f.d === this.o.nodeId) void this.deliverDirect(id, f.n ?? '', f.m);
      return;
    }
    if (inst !== undefined && f.r !== undefined && Number.isSafeInteger(seq)) {
      this.countGap(inst, seq);
      if (f.r !== this.o.nodeId) return;
      try { this.o.rpcNudged?.(); } catch (err) { this.o.logger.error({ err, from: f.n }, 'live bus: handling an rpc pickup hint failed'); }
      return;
    }
    if (inst === undefined || f.b === undefined || !Number.isSafeInteger(seq) || !Number.isFinite(sentAt)) { this.bad('missing fields'); return; }
    let events: TelemetryEvent[];
    try { events = decodeReadings(f.b); } catch (err) {
      this.bad(err instanceof BadEntry ? err.message : String(err), f.n);
      return;
    }
    this.countGap(inst, seq);
    this.m.entries.inc({ direction: 'received' });
    this.m.readings.inc({ direction: 'received' }, events.length);
    this.m.delay.observe(Math.max(0, this.o.clock.now() - sentAt) / 1000);
    try { this.o.remote(events); } catch (err) {
      this.o.logger.error({ err, from: f.n }, 'live bus: handing remote readings to the live views failed');
    }
  }

  /**
   * Hands a message for this node on with its age on Redis's clock: the entry id's milliseconds
   * (Redis's time when it was added) against Redis's TIME now. A node that stalled (a long pause of its
   * event loop, a stopped process) reads old messages late; their age says so, whatever the clocks of
   * the two nodes say.
   */
  private async deliverDirect(entryId: string, from: string, body: string): Promise<void> {
    let ageMs: number | null = null;
    const addedAt = Number(entryId.split('-')[0]);
    const pub = this.pub;
    if (pub !== null && pub.status === 'ready' && Number.isSafeInteger(addedAt)) {
      try {
        const [sec, micro] = await pub.time();
        ageMs = Math.max(0, Number(sec) * 1000 + Math.floor(Number(micro) / 1000) - addedAt);
      } catch { ageMs = null; }
    }
    if (!this.running) return;
    try { this.o.direct?.({ from, body, ageMs }); } catch (err) {
      this.o.logger.error({ err, from }, 'live bus: handling a message for this node failed');
    }
  }

  private claimReceived(inst: string, seq: number, body: string, nodeId: string): void {
    let c: unknown;
    try { c = JSON.parse(body); } catch { c = null; }
    if (!Array.isArray(c) || typeof c[0] !== 'string' || !Number.isSafeInteger(c[1])) { this.bad('bad claim', nodeId); return; }
    this.countGap(inst, seq);
    this.m.claims.inc({ direction: 'received' });
    try { this.o.claimed?.({ deviceId: c[0], epoch: c[1] as number, nodeId }); } catch (err) {
      this.o.logger.error({ err, from: nodeId }, 'live bus: handling another node\'s session claim failed');
    }
  }

  private countGap(inst: string, seq: number): void {
    const last = this.lastSeq.get(inst);
    if (last !== undefined && seq > last + 1) this.m.missedEntries.inc(seq - last - 1);
    this.lastSeq.delete(inst); // re-insert: the map's order is least recently heard first
    this.lastSeq.set(inst, last === undefined ? seq : Math.max(last, seq));
    if (this.lastSeq.size > MAX_TRACKED_SENDERS) this.lastSeq.delete(this.lastSeq.keys().next().value!);
  }

  private bad(why: string, from?: string): void {
    this.m.badEntries.inc();
    this.o.logger.debug({ from, why }, 'live bus: undecodable entry skipped');
  }

  private unsent(reason: 'redis_down' | 'error' | 'backlog' | 'too_large', readings: number): void {
    this.m.unsent.inc({ reason }, readings);
    if (this.state !== 'up') this.unsentInOutage += readings;
  }

  /** Once per outage: the first failure logs, the rest only count. */
  private failed(err: unknown, where: string): void {
    if (!this.running || this.state === 'down') return;
    if (this.state === 'up') this.downSince = this.o.clock.now();
    this.state = 'down';
    this.m.up.set(0);
    this.m.outages.inc();
    this.o.logger.warn({ err, where, url: redactedUrl(this.o.url) },
      'live bus: Redis unreachable; readings stay in this node\'s live feed until it is back (ingest is not affected)');
  }

  /**
   * A connection became ready or a call succeeded: up again once both
   * connections are ready. Calls matter too: a Redis that stalled (calls
   * timed out) and then went on never closed the connection, so no 'ready'
   * would ever say it is back.
   */
  private answered(): void {
    if (!this.running || this.state === 'up') return;
    if (this.pub?.status !== 'ready' || this.sub?.status !== 'ready') return;
    this.state = 'up';
    this.m.up.set(1);
    this.o.logger.info({ downMs: this.o.clock.now() - this.downSince, unsentReadings: this.unsentInOutage, nodeId: this.o.nodeId },
      'live bus: Redis reachable; sharing readings with the other nodes');
    this.unsentInOutage = 0;
  }

  /** Sleeps up to ms; stop() or a reconnect ends it early. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void { clearTimeout(timer); resolve(); }
      this.wake = () => { this.wake = null; done(); };
    });
  }
}

/** The URL without its password, for logs. */
function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch { return 'redis://(unparsable)'; }
}
