/**
 * Calls between nodes over the cluster bus (cluster mode): node B asks node A
 * to do something only A may do (a Modbus write on the line A polls:
 * src/modbus/writes.ts) and waits for A's answer, for a bounded time.
 *
 * The bus is best effort (port.ts), so every call ends in an outcome the
 * caller must tell apart:
 *  - answered: A ran it (or refused it) and said so;
 *  - unsent: the request never left B (Redis away): A certainly did nothing;
 *  - no_answer: the request left and no answer came within the timeout: A may
 *    have run it or not. Only the caller knows what that means for its users;
 *  - refused (A does not serve that kind: it did nothing) and failed (A's
 *    handler threw: it may have done part of it).
 *
 * At most once on the serving side: each call has a random id; a node
 * remembers the ids it served (`rememberMs`, at most `maxRemembered`) and runs
 * an id once: a copy arriving while it runs is dropped, a copy arriving later
 * is answered with the first answer again. A request older than its caller's
 * timeout (its age on Redis's clock: port.ts DirectMessage) is not run at all:
 * its caller has given up, and running it later, after the operator was told
 * the outcome is unknown and may have looked, would change the device behind
 * their back. Since anything older than the caller's timeout is refused anyway,
 * remembering ids for longer than the longest timeout covers every copy.
 *
 * Trust: the bus is the cluster's own Redis (password, internal network), and
 * what arrives on it is taken as coming from a node of this cluster. The node
 * that received the operator's request checks their role and areas before it
 * calls (docs/cluster.md).
 *
 * Wire (the body of a bus message to one node, JSON):
 *   request {"q": id, "k": kind, "w": timeoutMs, "p": payload}
 *   answer  {"a": id, "p": answer} | {"a": id, "x": "unknown_kind" | "failed", "m": message}
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import { callMetrics, type CallMetrics } from './metrics.js';
import type { ClusterBus, DirectMessage } from './port.js';

export type CallOutcome =
  | { status: 'answered'; id: string; answer: unknown }
  | { status: 'refused'; id: string; reason: string }
  | { status: 'failed'; id: string; reason: string }
  | { status: 'unsent'; id: string }
  | { status: 'no_answer'; id: string };

/** What a handler knows of a call it serves. */
export interface CallContext {
  /** The calling node. */
  from: string;
  /** The call's id (for logs and audit entries: the caller records it too). */
  id: string;
  /** How long the caller still waits, from now: its timeout less the request's age on the bus. */
  remainingMs: number;
}

/** Serves one kind of call; what it resolves with is the answer (JSON). It should not throw (a throw answers `failed`). */
export type CallHandler = (payload: unknown, ctx: CallContext) => Promise<unknown>;

export interface CallTuning {
  /** How long a served call's id (and answer) is remembered: longer than any caller's timeout. */
  rememberMs: number;
  /** Ids remembered at most (the oldest go first). */
  maxRemembered: number;
}

export const CALL_DEFAULTS: CallTuning = { rememberMs: 10 * 60_000, maxRemembered: 10_000 };

export interface BusCallsOptions {
  bus: Pick<ClusterBus, 'sendDirect'>;
  nodeId: string;
  logger: Logger;
  metrics?: Pick<Metrics, 'registry'>;
  tuning?: Partial<CallTuning>;
  /** Monotonic milliseconds (tests replace it). */
  now?: () => number;
}

type Seen = { state: 'new' } | { state: 'running' } | { state: 'done'; answer: string };

/** The ids of calls served lately, in arrival order, with their answers once known. */
export class RecentCalls {
  private readonly ids = new Map<string, { at: number; answer: string | null }>();

  constructor(private readonly rememberMs: number, private readonly max: number, private readonly now: () => number) {}

  /** `new` (remembered from now on: run it once), or what is known of it already. */
  admit(id: string): Seen {
    this.prune();
    const e = this.ids.get(id);
    if (e) return e.answer === null ? { state: 'running' } : { state: 'done', answer: e.answer };
    this.ids.set(id, { at: this.now(), answer: null });
    if (this.ids.size > this.max) this.ids.delete(this.ids.keys().next().value!);
    return { state: 'new' };
  }

  answered(id: string, answer: string): void {
    const e = this.ids.get(id);
    if (e) e.answer = answer;
  }

  get size(): number { return this.ids.size; }

  private prune(): void {
    const oldest = this.now() - this.rememberMs;
    for (const [id, e] of this.ids) {
      if (e.at > oldest) break; // arrival order: the rest are newer
      this.ids.delete(id);
    }
  }
}

interface Pending { kind: string; settle(o: CallOutcome): void }

export class BusCalls implements Component {
  readonly name = 'cluster-calls';
  private readonly t: CallTuning;
  private readonly now: () => number;
  private readonly m: CallMetrics;
  private readonly recent: RecentCalls;
  private readonly handlers = new Map<string, CallHandler>();
  private readonly pending = new Map<string, Pending>();
  private readonly serving = new Set<Promise<void>>();
  private running = false;

  constructor(private readonly o: BusCallsOptions) {
    this.t = { ...CALL_DEFAULTS, ...o.tuning };
    this.now = o.now ?? (() => performance.now());
    this.m = callMetrics(o.metrics?.registry);
    this.recent = new RecentCalls(this.t.rememberMs, this.t.maxRemembered, this.now);
  }

  async start(): Promise<void> { this.running = true; }

  /** Calls waiting end as `no_answer` (their requests may have gone); calls being served finish and answer first. */
  async stop(): Promise<void> {
    this.running = false;
    for (const [id, p] of [...this.pending]) p.settle({ status: 'no_answer', id });
    await Promise.allSettled([...this.serving]);
  }

  /** This node serves calls of `kind` with `handler` (set by the wiring before start). */
  serve(kind: string, handler: CallHandler): void { this.handlers.set(kind, handler); }

  /** Calls node `to`; resolves (never rejects) with the outcome, at the latest after `timeoutMs`. */
  call(to: string, kind: string, payload: unknown, timeoutMs: number): Promise<CallOutcome> {
    const id = randomUUID();
    if (!this.running) { this.m.calls.inc({ kind, outcome: 'unsent' }); return Promise.resolve({ status: 'unsent', id }); }
    return new Promise<CallOutcome>((resolve) => {
      const settle = (o: CallOutcome): void => {
        if (this.pending.get(id) !== p) return;
        this.pending.delete(id);
        clearTimeout(timer);
        this.m.calls.inc({ kind, outcome: o.status === 'unsent' || o.status === 'no_answer' ? o.status : 'answered' });
        resolve(o);
      };
      const p: Pending = { kind, settle };
      const timer = setTimeout(() => settle({ status: 'no_answer', id }), timeoutMs);
      this.pending.set(id, p);
      let sent = false;
      try { sent = this.o.bus.sendDirect(to, JSON.stringify({ q: id, k: kind, w: timeoutMs, p: payload })); } catch (err) {
        this.o.logger.error({ err, to, kind }, 'cluster calls: sending a call threw; not sent');
      }
      if (!sent) settle({ status: 'unsent', id });
    });
  }

  /** A message for this node from the bus (the wiring passes RedisClusterBus's `direct` here). */
  received(m: DirectMessage): void {
    if (!this.running) return;
    let msg: Record<string, unknown>;
    try {
      const v: unknown = JSON.parse(m.body);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
      msg = v as Record<string, unknown>;
    } catch {
      this.o.logger.debug({ from: m.from }, 'cluster calls: unreadable message skipped');
      return;
    }
    if (typeof msg.a === 'string') { this.answerReceived(msg.a, msg); return; }
    if (typeof msg.q === 'string' && typeof msg.k === 'string' && typeof msg.w === 'number' && Number.isFinite(msg.w)) {
      this.requestReceived(m, msg.q, msg.k, msg.w, msg.p);
      return;
    }
    this.o.logger.debug({ from: m.from }, 'cluster calls: message of no known shape skipped');
  }

  private answerReceived(id: string, msg: Record<string, unknown>): void {
    const p = this.pending.get(id);
    if (!p) return; // answered after the timeout, or a copy: the caller has its outcome already
    if (msg.x === 'unknown_kind') p.settle({ status: 'refused', id, reason: `the other node does not serve calls of kind ${p.kind}` });
    else if (msg.x !== undefined) p.settle({ status: 'failed', id, reason: typeof msg.m === 'string' ? msg.m : 'the other node failed' });
    else p.settle({ status: 'answered', id, answer: msg.p });
  }

  private requestReceived(m: DirectMessage, id: string, kind: string, timeoutMs: number, payload: unknown): void {
    const remainingMs = m.ageMs === null ? null : timeoutMs - m.ageMs;
    if (remainingMs === null || remainingMs <= 0) {
      // Its caller has given up (or its age cannot be told): running it now would act after the caller said "unknown".
      this.m.served.inc({ kind, result: 'stale' });
      this.o.logger.warn({ from: m.from, id, kind, ageMs: m.ageMs, timeoutMs }, 'cluster calls: a call arrived after its caller stopped waiting (or of unknown age); not run');
      return;
    }
    const seen = this.recent.admit(id);
    if (seen.state !== 'new') {
      this.m.served.inc({ kind, result: 'duplicate' });
      if (seen.state === 'done') this.answer(m.from, kind, seen.answer);
      return;
    }
    const handler = this.handlers.get(kind);
    if (!handler) {
      this.m.served.inc({ kind, result: 'unknown_kind' });
      const body = JSON.stringify({ a: id, x: 'unknown_kind' });
      this.recent.answered(id, body);
      this.answer(m.from, kind, body);
      return;
    }
    const run = (async (): Promise<void> => {
      let body: string;
      try {
        const answer = await handler(payload, { from: m.from, id, remainingMs });
        body = JSON.stringify({ a: id, p: answer ?? null });
        this.m.served.inc({ kind, result: 'done' });
      } catch (err) {
        this.m.served.inc({ kind, result: 'failed' });
        this.o.logger.error({ err, from: m.from, id, kind }, 'cluster calls: serving a call failed');
        body = JSON.stringify({ a: id, x: 'failed', m: err instanceof Error ? err.message : String(err) });
      }
      this.recent.answered(id, body);
      this.answer(m.from, kind, body);
    })();
    this.serving.add(run);
    void run.finally(() => this.serving.delete(run));
  }

  private answer(to: string, kind: string, body: string): void {
    // Not sent: the caller ends with no_answer (outcome unknown), which is what it must say anyway.
    if (!this.o.bus.sendDirect(to, body)) this.m.served.inc({ kind, result: 'answer_unsent' });
  }
}
