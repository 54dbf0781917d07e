/**
 * The batch send behind RpcService.sendMany(): one command per device with the same method,
 * params and expiry (a broadcast to every speaker of a commune). Cheaper than a send() per device:
 * the params are checked, serialised and passed through the params hook once, the request payload
 * is built once (per device for a signed method, §11.6), and each command is inserted directly in
 * its state (`sent` with sentAt when its device is ready, else `queued`) rather than inserted
 * queued and updated when published.
 *
 * The commands go into the state window (src/storage/state/window.ts) and memory at once; the
 * returned promise settles when that window commits. `persist(results)` is called synchronously
 * with the results, before the commands are stored (when it throws, nothing is) or published: the caller writes its own rows there (the
 * broadcast's targets). Nothing is published before the window holding the commands has committed
 * (the publishes are after-commit callbacks, in creation order), so no device is ever sent a command
 * that is not stored; a failed window publishes nothing. A crash between that commit and a publish
 * loses nothing: a `sent` command without an answer is published again when its device reconnects
 * (publisher.ts flush), like one lost with a dropped connection.
 *
 * A signed method needs one signature per device (§11.6). With a signer that signs off the main
 * thread (signAsync), only the first is made here (a signer that cannot sign keeps the whole
 * batch queued, as it keeps a send() queued); the others are made on libuv's thread pool while
 * the rows are written and committed, and each command is published once its signature is there
 * (still after the commit, in the device's order). A signature that fails
 * then leaves its command for the device's next connect, like a publish that failed. 2,000
 * signatures on the event loop were ~130 ms before the caller's commit and reply.
 *
 * Separate from RpcService because the batch path builds, stores and publishes thousands of
 * commands in one go with its own bookkeeping (shared payloads, pooled signatures, urgent hold),
 * while it reuses the service's per-device primitives through BatchSendContext.
 */
import type { UrgentOutbound } from '../core/urgent.js';
import { Errors } from '../core/errors.js';
import type { CommandEncoder, Envelope } from './encoder.js';
import { newId } from './ids.js';
import type { RpcMetrics } from './metrics.js';
import type { NewRequestRow } from './store-sql.js';
import type { CommandSigner, RpcSendOptions, RpcSendResult } from './types.js';

/** What the batch send uses of RpcService (its per-device publish order, ids and checks). */
export interface BatchSendContext {
  /** Puts the commands in memory and the state window; settles when that window commits. */
  insert(rows: readonly NewRequestRow[]): Promise<void>;
  /** Runs `f` after that window's COMMIT (never if it fails). */
  afterCommit(f: () => void): void;
  enc: CommandEncoder;
  signer: CommandSigner | undefined;
  metrics: RpcMetrics;
  urgent: Pick<UrgentOutbound, 'hold'> | undefined;
  now: number;
  check(method: string, params: Record<string, unknown>, opts: RpcSendOptions, now: number): string;
  isReady(deviceId: string): boolean;
  nextTbId(deviceId: string): number | undefined;
  chainPublish(deviceId: string, requestId: string, topicId: string, payload: Buffer | Promise<Buffer | null>): Promise<void>;
}

export function sendMany(c: BatchSendContext, deviceIds: readonly string[], method: string, params: Record<string, unknown>, opts: RpcSendOptions,
  persist: (results: readonly RpcSendResult[]) => void): Promise<RpcSendResult[]> {
  const { enc, now } = c;
  if (deviceIds.some((d) => typeof d !== 'string' || d.length === 0)) throw Errors.VALIDATION('deviceId is required');
  const paramsJson = c.check(method, params, opts, now);
  // The send-time params are the same for every device of the batch (sent at the same instant).
  const sendParams = enc.sendParams({
    id: '', deviceId: '', method, params: JSON.parse(paramsJson) as Record<string, unknown>, expiresAt: opts.expiresAt, state: 'queued', createdAt: now, sentAt: null, answeredAt: null, response: null, tbId: null,
  });
  // So is the payload, unless it is signed: a signature names the device and the request id (§11.6).
  const perDevice = enc.signs(method);
  const common = sendParams !== null && !perDevice ? enc.encode({ topicId: '', deviceId: '', method, expiresAt: opts.expiresAt }, sendParams) : null;
  const pooled = perDevice && c.signer!.signAsync !== undefined;
  let probed = false;
  let poolFailures = 0;
  const payloads: Array<Buffer | Promise<Buffer | null> | null> = [];
  const tbIds: Array<number | undefined> = [];
  let signerFailed = false;
  const results: RpcSendResult[] = deviceIds.map((deviceId) => {
    const requestId = newId('r', now);
    let payload: Buffer | Promise<Buffer | null> | null = null;
    let tbId: number | undefined;
    if (sendParams !== null && !signerFailed && c.isReady(deviceId)) {
      tbId = c.nextTbId(deviceId);
      const e: Envelope = { topicId: tbId !== undefined ? String(tbId) : requestId, deviceId, method, expiresAt: opts.expiresAt };
      if (!perDevice) payload = common;
      else if (pooled && probed) payload = enc.encodeAsync(e, sendParams, () => poolFailures++ === 0);
      else { payload = enc.encode(e, sendParams); probed = true; }
      if (payload === null) { signerFailed = true; tbId = undefined; } // logged once; the rest of the batch stays queued too
    }
    payloads.push(payload);
    tbIds.push(payload !== null ? tbId : undefined);
    return { requestId, state: payload !== null ? 'sent' : 'queued' };
  });
  const rows: NewRequestRow[] = results.map((r, i) => {
    const tbId = tbIds[i];
    return {
      id: r.requestId, deviceId: deviceIds[i]!, method, paramsJson, expiresAt: opts.expiresAt, createdAt: now,
      ...(r.state === 'sent' ? { sentAt: now } : {}), ...(tbId !== undefined ? { tbId } : {}),
    };
  });
  persist(results); // first: when it throws, nothing is stored or sent
  const committed = c.insert(rows);
  let sent = 0;
  const urgent = opts.urgent === true ? c.urgent : undefined;
  const published: Promise<void>[] = [];
  c.afterCommit(() => {
    for (let i = 0; i < deviceIds.length; i++) {
      const payload = payloads[i];
      if (!payload) continue;
      const tbId = tbIds[i];
      published.push(c.chainPublish(deviceIds[i]!, results[i]!.requestId, tbId !== undefined ? String(tbId) : results[i]!.requestId, payload));
    }
  });
  for (const p of payloads) if (p) sent++;
  // Registered now, so device answers handled before the commit already wait; the after-commit callback
  // above has run (and filled `published`) by the time `committed` resolves.
  if (urgent && sent > 0) urgent.hold(committed.then(() => Promise.all(published)));
  if (sent > 0) c.metrics.sent.labels({ method, resend: 'false' }).inc(sent);
  return committed.then(() => results);
}
