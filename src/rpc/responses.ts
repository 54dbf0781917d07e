/**
 * Device answers to commands (device protocol "Commands (RPC)", §13.2): matches a response to its
 * request by id AND device, records the answer, and refuses what no command of that device asked
 * for (unknown id, another device's request, a request never sent), counted, logged (rate-limited)
 * and reported as a 'refused' event without changing anything.
 *
 * Decided from memory (open-commands.ts): the usual answer, the first one to a `sent` command of
 * this device, is recorded at once as a compare-and-set `sent → answered` in the state window and
 * reported ('response') synchronously, so the broadcast executor's move lands in the same window;
 * the ingest acknowledges the message only once that window is committed (RpcService.settled()).
 * Anything else (a duplicate, a late answer to an expired command, an unknown id) is not in memory:
 * it costs one database read first (`handle` then returns that lookup's promise).
 *
 * Separate from RpcService because answering is a path of its own, with its own refusal
 * bookkeeping, while RpcService owns when and where commands are published.
 */
import { isRpcStatus } from '../core/protocol.js';
import type { Clock } from '../core/clock.js';
import type { KengEvents } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { RpcMetrics } from './metrics.js';
import type { OpenCommands } from './open-commands.js';
import type { RpcCas, RpcStoreSql } from './store-sql.js';
import type { RpcEvents, RpcRefusal, RpcRequest, RpcStatus } from './types.js';

/** An integer request id as a ThingsBoard SDK writes it back (`%u` of what atoi gave). */
const TB_ID_RE = /^[0-9]{1,10}$/;

const REFUSAL_WARNINGS_PER_MIN = 10;

export interface RpcResponsesDeps {
  metrics: RpcMetrics;
  logger: Logger;
  clock: Clock;
  emit: <K extends keyof RpcEvents>(event: K, e: RpcEvents[K]) => void;
  open: OpenCommands;
  /** Reads for what memory does not hold (rare). */
  store: () => RpcStoreSql | null;
  /** Writes a move through the state window (nobody awaits it: the ingest waits for the whole window). */
  write: (c: RpcCas) => void;
  /** The command is no longer open: `r` is its final version (open-commands.ts `finish`). */
  finish: (r: RpcRequest) => void;
}

export class RpcResponses {
  private refusalWindow = { start: 0, count: 0 };
  /** Answers being matched by a database read (RpcService.settled() waits for them). */
  private readonly lookups = new Set<Promise<void>>();

  constructor(private readonly d: RpcResponsesDeps) {}

  /** handle(), remembering a database read it starts until it ends (see idle()). */
  receive(e: KengEvents['rpc.response']): void {
    const p = this.handle(e);
    if (p) {
      this.lookups.add(p);
      void p.finally(() => this.lookups.delete(p));
    }
  }

  /** Resolves once the reads begun so far by receive() have ended; undefined when none runs. */
  idle(): Promise<unknown> | undefined {
    return this.lookups.size === 0 ? undefined : Promise.all([...this.lookups]);
  }

  /** Like idle(), never rejecting (at stop). */
  drained(): Promise<unknown> {
    return Promise.allSettled([...this.lookups]);
  }

  /**
   * Records a device's answer (or refuses it) and emits 'response' / 'refused': at once when memory holds the
   * command, else after one database read (the returned promise; it never rejects).
   */
  handle(e0: KengEvents['rpc.response']): void | Promise<void> {
    const open = this.d.open;
    // An integer id is a ThingsBoard SDK's answer (§13.2): the device's command published with that id.
    const tb = TB_ID_RE.test(e0.requestId) ? Number(e0.requestId) : undefined;
    const tbHit = tb !== undefined ? open.byTbId(e0.deviceId, tb) : undefined;
    if (tb !== undefined && !tbHit) return this.lookUp(e0, tb);
    const e = tbHit ? { ...e0, requestId: tbHit.id } : e0;
    const held = open.get(e.requestId);
    if (held && held.deviceId === e.deviceId && held.sentAt !== null) { // sent (or queued again after a failed publish)
      this.record(e, held);
      return;
    }
    if (held) { // held, so never answered: another device's, or not sent yet
      this.refuse(e, held.deviceId !== e.deviceId ? 'wrong_device' : 'never_sent');
      return;
    }
    const done = open.finished(e.requestId);
    if (done) { // finished in a window still to commit: the database row is not the truth yet
      this.late(e, done);
      return;
    }
    return this.lookUp(e, undefined);
  }

  private lookUp(e0: KengEvents['rpc.response'], tb: number | undefined): Promise<void> {
    return this.read(e0, tb).catch((err: unknown) => {
      this.d.logger.error({ err, deviceId: e0.deviceId, requestId: e0.requestId.slice(0, 128) }, 'rpc response could not be matched');
    });
  }

  private async read(e0: KengEvents['rpc.response'], tb: number | undefined): Promise<void> {
    const store = this.d.store();
    if (!store) return;
    const mapped = tb !== undefined ? await store.idOfTbId(e0.deviceId, tb) : undefined;
    const e = mapped !== undefined ? { ...e0, requestId: mapped } : e0;
    // Memory may have got it meanwhile (sent while we read): decide on what is held.
    const held = this.d.open.get(e.requestId);
    const r = held ?? this.d.open.finished(e.requestId) ?? await store.get(e.requestId);
    if (held && held.deviceId === e.deviceId && held.sentAt !== null) { this.record(e, held); return; }
    this.late(e, this.d.open.get(e.requestId) ?? this.d.open.finished(e.requestId) ?? r);
  }

  /** An answer to a command not open in memory: refused, a duplicate, or late (to an expired command). */
  private late(e: KengEvents['rpc.response'], r: RpcRequest | undefined): void {
    if (!r) { this.refuse(e, 'unknown_request'); return; }
    if (r.deviceId !== e.deviceId) { this.refuse(e, 'wrong_device'); return; }
    if (r.sentAt === null) { this.refuse(e, 'never_sent'); return; }
    if (r.state === 'sent' || r.state === 'queued') { // open in the database, not in memory (evicted): record it
      this.record(e, r);
      return;
    }
    const duplicate = r.state === 'answered';
    const { status, detail } = statusOf(e.payload);
    if (!duplicate) {
      this.d.write({ id: r.id, deviceId: r.deviceId, from: r.state, to: 'answered', at: e.at, responseJson: JSON.stringify(e.payload) });
      this.d.finish({ ...r, state: 'answered', answeredAt: e.at, response: e.payload });
      this.d.metrics.responses.labels({ status }).inc();
      if (r.state === 'expired') this.d.logger.info({ requestId: r.id, deviceId: r.deviceId, status }, 'late rpc response to an expired request');
    }
    const request: RpcRequest = duplicate ? r : { ...r, state: 'answered', answeredAt: e.at, response: e.payload };
    this.d.emit('response', { request, status, ...(detail !== undefined ? { detail } : {}), payload: e.payload, at: e.at, duplicate });
  }

  /** The usual case: the first answer to a sent command of this device. */
  private record(e: KengEvents['rpc.response'], held: RpcRequest): void {
    const { status, detail } = statusOf(e.payload);
    this.d.write({ id: held.id, deviceId: held.deviceId, from: held.state, to: 'answered', at: e.at, responseJson: JSON.stringify(e.payload) });
    const request: RpcRequest = { ...held, state: 'answered', answeredAt: e.at, response: e.payload };
    this.d.finish(request);
    this.d.metrics.responses.labels({ status }).inc();
    this.d.emit('response', { request, status, ...(detail !== undefined ? { detail } : {}), payload: e.payload, at: e.at, duplicate: false });
  }

  private refuse(e: KengEvents['rpc.response'], reason: RpcRefusal): void {
    this.d.metrics.refused.labels({ reason }).inc();
    const now = this.d.clock.now();
    if (now - this.refusalWindow.start > 60_000) this.refusalWindow = { start: now, count: 0 };
    const fields = { deviceId: e.deviceId, requestId: e.requestId.slice(0, 128), reason, status: e.payload.status };
    if (++this.refusalWindow.count <= REFUSAL_WARNINGS_PER_MIN) this.d.logger.warn(fields, 'rpc response refused: the device was never sent this request');
    else this.d.logger.debug(fields, 'rpc response refused');
    this.d.emit('refused', { deviceId: e.deviceId, requestId: e.requestId, reason, at: e.at });
  }
}

function statusOf(payload: Record<string, unknown>): { status: RpcStatus; detail: string | undefined } {
  return { status: isRpcStatus(payload.status) ? payload.status : 'ok', detail: typeof payload.detail === 'string' ? payload.detail : undefined };
}
