/**
 * Writes to Modbus devices as operators ask for them (POST /api/v1/devices/{id}/modbus/write),
 * each with its audit entry, and in cluster mode from any node (docs/cluster.md "Modbus writes
 * from any node").
 *
 * Embedded mode, or a line this node polls: the write goes out here (poller.ts write).
 *
 * Cluster mode, a line another node polls: only that node may talk to the line (a gateway takes
 * one connection; leases.ts), so this node checks the write as the holder would (prepareWrite:
 * a bad field or value is answered at once), finds the holder (a valid lease row) and calls it
 * over the bus (src/cluster/calls.ts, passed in by the wiring as NodeCalls) with the caller as
 * the actor. The holder writes exactly as it would for its own caller, records the audit entry
 * (the caller as actor, itself as `node`, this node as `via`) and answers; its errors come back
 * with their codes. The caller's role and areas were checked by the route before anything here.
 *
 * The bus may lose the request or the answer, so:
 *  - not sent (Redis away), no holder, the holder refusing the kind: 503 KENG_ERR_MODBUS_UNREACHABLE,
 *    certainly not written;
 *  - sent, no answer within forwardTimeoutMs: 504 KENG_ERR_MODBUS_OUTCOME_UNKNOWN. The holder may
 *    have written; the operator must read the register back before trying again. This node records
 *    that outcome too (the holder's entry, if it wrote, has the same requestId).
 * The holder runs a request once per id, and not at all once its caller stopped waiting
 * (calls.ts); it starts the write only while it can still finish and answer in time (startBy).
 */
import { performance } from 'node:perf_hooks';
import type { Actor, AuditRecorder } from '../audit/index.js';
import { Errors, isKengError, restoreKengError, toWireError, withDetails, type KengError, type WireError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { worstRequestMs } from './line.js';
import type { ModbusPoller } from './poller.js';
import { lineKey } from './types.js';
import type { WriteResult } from './write.js';

/** One write as asked: who, from where, what; `before` is the field's latest value the asking node knew. */
export interface WriteRequest {
  actor: Actor;
  ip: string | null;
  deviceId: string;
  field: string;
  value: number | boolean;
  before: unknown;
}

/** The outcome of a call to another node (structurally src/cluster/calls.ts CallOutcome). */
export type ForwardOutcome =
  | { status: 'answered'; id: string; answer: unknown }
  | { status: 'refused' | 'failed'; id: string; reason: string }
  | { status: 'unsent' | 'no_answer'; id: string };

/** Calls to another node, as this module needs them (the wiring passes the cluster's BusCalls). */
export interface NodeCalls {
  call(nodeId: string, kind: string, payload: unknown, timeoutMs: number): Promise<ForwardOutcome>;
}

/** What the serving node knows of a forwarded write (structurally calls.ts CallContext). */
export interface ForwardContext { from: string; id: string; remainingMs: number }

/** What the holder answers: the write's result, or its error as the holder would have answered it. */
export type ForwardAnswer = { ok: true; result: WriteResult } | { ok: false; error: WireError };

/** The kind of call a forwarded write is (calls.ts). */
export const FORWARD_KIND = 'modbus.write';

/** The bus both ways (the request, Redis's TIME on the holder, the answer) on a loaded machine. */
const BUS_MARGIN_MS = 1500;
/** What the holder keeps for its answer's trip back when it decides whether a write can still start. */
const ANSWER_MARGIN_MS = 750;

/**
 * How long the asking node waits for the holder: one request of a poll under way on the line
 * (the write waits its turn), the write itself at worst (a connection made first, the request,
 * its guard: line.ts worstRequestMs), and the bus both ways. 6.5 s for the default 1 s request
 * timeout. Shorter would give "outcome unknown" for writes that merely queued behind a poll; longer
 * keeps an operator waiting when the holder is gone (its lease then runs out and the line moves).
 */
export function forwardTimeoutMs(requestTimeoutMs: number): number {
  return requestTimeoutMs + 500 + worstRequestMs(requestTimeoutMs) + BUS_MARGIN_MS;
}

export interface ModbusWritesDeps {
  poller: Pick<ModbusPoller, 'write' | 'prepareWrite' | 'mayWriteOn'>;
  audit: Pick<AuditRecorder, 'record'>;
  logger: Logger;
  /** Cluster mode only. */
  cluster?: {
    nodeId: string;
    /** Line key → the node holding a valid lease on it (lease-repo.ts lineHolders). */
    holders(): Promise<ReadonlyMap<string, string>>;
    calls: NodeCalls;
    requestTimeoutMs: number;
  };
}

export class ModbusWrites {
  constructor(private readonly d: ModbusWritesDeps) {}

  /** A write asked of this node (the API, after it checked the caller's role and areas). */
  async write(req: WriteRequest): Promise<WriteResult> {
    const c = this.d.cluster;
    if (!c) return this.local(req, {});
    const { settings } = await this.d.poller.prepareWrite(req.deviceId, req.field, req.value);
    const key = lineKey(settings.transport);
    const here = { node: c.nodeId };
    if (this.d.poller.mayWriteOn(key)) return this.local(req, here);
    let holder: string | undefined;
    try {
      holder = (await c.holders()).get(key);
    } catch (err) {
      this.d.logger.warn({ err, deviceId: req.deviceId }, 'modbus write: could not read the line leases');
      throw await this.refused(req, here, Errors.MODBUS_UNREACHABLE('which node polls its line cannot be told now (the cluster database did not answer): not written'));
    }
    if (holder === undefined) {
      throw await this.refused(req, here, Errors.MODBUS_UNREACHABLE(
        `no node polls its line (${key}) now: its lease is free or ran out, and a node takes it within a few seconds; not written, try again`));
    }
    // This node holds the row but may not write (giving the line up, or its lease about to run out): the local path says so.
    if (holder === c.nodeId) return this.local(req, here);
    return this.forward(req, holder, c);
  }

  /** A write another node forwarded here (calls.ts handler): done as for a caller of this node, answered with the outcome. */
  async serve(payload: unknown, ctx: ForwardContext): Promise<ForwardAnswer> {
    const c = this.d.cluster;
    const req = parseRequest(payload);
    if (!c || !req) return { ok: false, error: toWireError(Errors.VALIDATION('a forwarded Modbus write of no known shape')) };
    // Started only while it can still finish and its answer arrive before the asking node stops waiting.
    const startBy = performance.now() + ctx.remainingMs - worstRequestMs(c.requestTimeoutMs) - ANSWER_MARGIN_MS;
    try {
      return { ok: true, result: await this.local(req, { node: c.nodeId, via: ctx.from, requestId: ctx.id }, startBy) };
    } catch (err) {
      if (isKengError(err)) return { ok: false, error: toWireError(err) };
      this.d.logger.error({ err, deviceId: req.deviceId, from: ctx.from }, 'modbus write forwarded by another node failed');
      return { ok: false, error: toWireError(Errors.INTERNAL()) };
    }
  }

  private async forward(req: WriteRequest, holder: string, c: NonNullable<ModbusWritesDeps['cluster']>): Promise<WriteResult> {
    const timeoutMs = forwardTimeoutMs(c.requestTimeoutMs);
    const out = await c.calls.call(holder, FORWARD_KIND, { req }, timeoutMs);
    const asked = { node: c.nodeId, forwardedTo: holder, requestId: out.id };
    switch (out.status) {
      case 'answered': {
        const a = out.answer as Partial<{ ok: boolean; result: WriteResult; error: unknown }> | null;
        if (a?.ok === true && typeof a.result === 'object' && a.result !== null) return a.result;
        const e = a?.ok === false ? restoreKengError(a.error) : null;
        if (e) throw e; // the holder's own outcome, audited there
        this.d.logger.warn({ holder, requestId: out.id }, 'modbus write: the holder\'s answer could not be read');
        throw await this.refused(req, asked, unknown(holder, out.id, timeoutMs, `node ${holder} answered, but not in a form this node reads (another version?)`));
      }
      case 'unsent':
        throw await this.refused(req, asked, Errors.MODBUS_UNREACHABLE(
          `node ${holder} polls its line, and the write could not be sent to it (the bus between nodes, Redis, is not reachable from this node): not written; try again`));
      case 'refused':
        throw await this.refused(req, asked, Errors.MODBUS_UNREACHABLE(`node ${holder} polls its line and does not take writes from other nodes (${out.reason}): not written`));
      case 'failed':
        throw await this.refused(req, asked, unknown(holder, out.id, timeoutMs, `node ${holder} failed while writing (${out.reason})`));
      case 'no_answer':
        this.d.logger.warn({ holder, requestId: out.id, timeoutMs }, 'modbus write sent to the node polling its line; no answer in time: outcome unknown');
        throw await this.refused(req, asked, unknown(holder, out.id, timeoutMs, `node ${holder}, which polls its line, did not answer within ${timeoutMs} ms`));
    }
  }

  /** The write on this node's line, audited whatever its outcome (as the API always did). */
  private async local(req: WriteRequest, extra: Record<string, unknown>, startBy?: number): Promise<WriteResult> {
    const { field, value } = req;
    let res: WriteResult;
    try {
      res = await this.d.poller.write(req.deviceId, field, value, startBy === undefined ? {} : { startBy });
    } catch (err) {
      // Once the request may have gone out (the device did not answer, refused, or answered oddly), the attempt is audited too.
      if (isKengError(err) && err.code.startsWith('KENG_ERR_MODBUS_')) await this.record(req, { field, value, error: err.code, message: err.message, ...extra });
      throw err;
    }
    await this.record(req, { field, value, address: res.address, function: res.function, sent: res.sent, confirmation: res.confirmation, ...extra });
    return res;
  }

  /** Records an outcome this node decided without the line, and hands the error back to throw. */
  private async refused(req: WriteRequest, extra: Record<string, unknown>, e: KengError): Promise<KengError> {
    await this.record(req, { field: req.field, value: req.value, error: e.code, message: e.message, ...extra });
    return e;
  }

  private record(req: WriteRequest, after: Record<string, unknown>): Promise<unknown> {
    return this.d.audit.record({ actor: req.actor, ip: req.ip, action: 'device.modbus_write', target: `device:${req.deviceId}`, before: req.before, after });
  }
}

function unknown(holder: string, requestId: string, timeoutMs: number, why: string): KengError {
  return withDetails(Errors.MODBUS_OUTCOME_UNKNOWN(
    `${why}; the write may or may not have happened. Read the register back before writing again`), { node: holder, requestId, timeoutMs });
}

/** A forwarded request, checked field by field: it comes from another process. */
function parseRequest(payload: unknown): WriteRequest | null {
  const r = (payload as { req?: unknown } | null)?.req as Partial<WriteRequest> | undefined;
  if (typeof r !== 'object' || r === null) return null;
  const a = r.actor as Partial<Actor> | undefined;
  if (typeof a !== 'object' || a === null || typeof a.kind !== 'string' || typeof a.id !== 'string') return null;
  if (typeof r.deviceId !== 'string' || typeof r.field !== 'string') return null;
  if (typeof r.value !== 'boolean' && (typeof r.value !== 'number' || !Number.isFinite(r.value))) return null;
  if (r.ip !== null && typeof r.ip !== 'string') return null;
  return { actor: { kind: a.kind, id: a.id }, ip: r.ip, deviceId: r.deviceId, field: r.field, value: r.value, before: r.before ?? null };
}
