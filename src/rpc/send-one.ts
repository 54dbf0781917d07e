/**
 * The single send behind RpcService.send(), and the argument checks every send shares (checkCommand).
 *
 * The command is decided at once: when its device is ready (connected, subscribed, not being claimed) it is
 * stored directly as `sent` (with its ThingsBoard integer id for a token session, tb-ids.ts) and published
 * after the commit of the state window holding it; otherwise it is stored `queued` for the reconnect. The row
 * is built here rather than read back; 'sent' is emitted at the decision. The promise settles after that
 * window's COMMIT: KENG_ERR_NOT_FOUND when the device was deleted meanwhile (nothing kept).
 *
 * Cluster mode: the insert names the command's owner (the node holding the device's session); when that is
 * another node, memory here forgets it and the owner is hinted (it picks it up, ownership.ts).
 *
 * Separate from RpcService, like send-many.ts, so the service file holds the API and the wiring while each
 * send path, with its own bookkeeping, reads on its own; it uses the service's primitives through SendContext.
 */
import { Errors } from '../core/errors.js';
import type { StateWindow } from '../storage/state/window.js';
import { newId } from './ids.js';
import type { RpcMetrics } from './metrics.js';
import type { OpenCommands } from './open-commands.js';
import type { CommandPublisher } from './publisher.js';
import type { NewRequestRow, RpcStoreSql } from './store-sql.js';
import type { TbIds } from './tb-ids.js';
import type { RpcEvents, RpcRequest, RpcSendOptions, RpcSendResult } from './types.js';

const MAX_PARAMS_BYTES = 64 * 1024;

/** What the single send uses of RpcService. */
export interface SendContext {
  store: RpcStoreSql;
  window: StateWindow;
  open: OpenCommands;
  tbIds: TbIds;
  pub: Pick<CommandPublisher, 'payloadOf' | 'chainPublish'>;
  metrics: RpcMetrics;
  emit: <K extends keyof RpcEvents>(event: K, e: RpcEvents[K]) => void;
  now: number;
  check(method: string, params: Record<string, unknown>, opts: RpcSendOptions, now: number): string;
  isReady(deviceId: string): boolean;
  /** Cluster mode: this node's id; undefined on one node. */
  nodeId: string | undefined;
  /** Cluster mode, best effort: tells node `owner` that a command it owns was stored here. */
  nudge(owner: string): void;
}

/**
 * The checks of every send: throws KENG_ERR_VALIDATION for arguments send() and sendMany() would refuse.
 * Returns the params as stored (JSON).
 */
export function checkCommand(method: string, params: Record<string, unknown>, opts: RpcSendOptions, now: number): string {
  if (typeof method !== 'string' || method.length === 0 || method.length > 128) throw Errors.VALIDATION('method must be 1-128 characters');
  if (typeof params !== 'object' || params === null || Array.isArray(params)) throw Errors.VALIDATION('params must be an object');
  if (!Number.isFinite(opts.expiresAt)) throw Errors.VALIDATION('expiresAt must be epoch milliseconds');
  if (opts.expiresAt <= now) throw Errors.VALIDATION('expiresAt is not in the future');
  const paramsJson = JSON.stringify(params);
  if (Buffer.byteLength(paramsJson) > MAX_PARAMS_BYTES) throw Errors.VALIDATION(`params larger than ${MAX_PARAMS_BYTES} bytes`);
  return paramsJson;
}

export function sendOne(c: SendContext, deviceId: string, method: string, params: Record<string, unknown>, opts: RpcSendOptions): Promise<RpcSendResult> {
  const { now, open, window: w } = c;
  if (typeof deviceId !== 'string' || deviceId.length === 0) throw Errors.VALIDATION('deviceId is required');
  const paramsJson = c.check(method, params, opts, now);
  const id = newId('r', now);
  // The row as stored, built here rather than read back.
  let row: RpcRequest = {
    id, deviceId, method, params: JSON.parse(paramsJson) as Record<string, unknown>, expiresAt: opts.expiresAt, state: 'queued',
    createdAt: now, sentAt: null, answeredAt: null, response: null, tbId: null,
  };
  let payload: Buffer | null = null;
  if (c.isReady(deviceId)) {
    const tbId = c.tbIds.next(deviceId);
    const candidate = tbId !== undefined ? { ...row, tbId } : row;
    payload = c.pub.payloadOf(candidate, c.tbIds.topicId(candidate));
    if (payload !== null) row = { ...candidate, state: 'sent', sentAt: now };
  }
  const insert: NewRequestRow = {
    id, deviceId, method, paramsJson, expiresAt: opts.expiresAt, createdAt: now,
    ...(row.sentAt !== null ? { sentAt: now } : {}), ...(row.tbId !== null ? { tbId: row.tbId } : {}),
  };
  open.put(row);
  const committed = w.add(c.store.insert, insert);
  if (payload !== null) {
    const p = payload;
    const topicId = c.tbIds.topicId(row);
    w.afterCommit(() => { void c.pub.chainPublish(deviceId, id, topicId, p); });
    c.metrics.sent.labels({ method, resend: 'false' }).inc();
    c.emit('sent', { request: row, at: now, resend: false });
  }
  return w.durable(committed).then((o) => {
    if (!o.applied) { // its device was deleted meanwhile
      open.remove(id);
      throw Errors.NOT_FOUND(`Device "${deviceId}"`);
    }
    // Cluster mode: another node holds the device's session; it picks the command up (ownership.ts).
    if (o.owner !== undefined && o.owner !== c.nodeId) {
      open.remove(id);
      c.nudge(o.owner);
    }
    return { requestId: id, state: row.state === 'sent' ? 'sent' : 'queued' };
  });
}
