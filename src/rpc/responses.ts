/**
 * Device answers to commands (device protocol "Commands (RPC)", §13.2): matches a response to its
 * request by id AND device, records the answer, and refuses what no command of that device asked
 * for (unknown id, another device's request, a request never sent), counted, logged (rate-limited)
 * and reported as a 'refused' event without changing anything.
 *
 * Separate from RpcService because answering is a path of its own (it runs inside the state
 * store's group commit, per device message), with its own refusal bookkeeping, while RpcService
 * owns when and where commands are published.
 */
import { isRpcStatus } from '../core/protocol.js';
import type { Clock } from '../core/clock.js';
import type { KengEvents } from '../core/events.js';
import type { Logger } from '../core/logger.js';
import type { RpcMetrics } from './metrics.js';
import type { RpcStore } from './store.js';
import type { RpcEvents, RpcRefusal, RpcRequest, RpcStatus } from './types.js';

/** An integer request id as a ThingsBoard SDK writes it back (`%u` of what atoi gave). */
const TB_ID_RE = /^[0-9]{1,10}$/;

const REFUSAL_WARNINGS_PER_MIN = 10;

export interface RpcResponsesDeps {
  metrics: RpcMetrics;
  logger: Logger;
  clock: Clock;
  emit: <K extends keyof RpcEvents>(event: K, e: RpcEvents[K]) => void;
}

export class RpcResponses {
  private refusalWindow = { start: 0, count: 0 };

  constructor(private readonly d: RpcResponsesDeps) {}

  /** Records a device's answer (or refuses it) and emits 'response' / 'refused'. */
  handle(store: RpcStore, e0: KengEvents['rpc.response']): void {
    // An integer id is a ThingsBoard SDK's answer (§13.2): the device's command published with that id.
    const mapped = TB_ID_RE.test(e0.requestId) ? store.idOfTbId(e0.deviceId, Number(e0.requestId)) : undefined;
    const e = mapped !== undefined ? { ...e0, requestId: mapped } : e0;
    const statusRaw = e.payload.status;
    const status: RpcStatus = isRpcStatus(statusRaw) ? statusRaw : 'ok';
    const detail = typeof e.payload.detail === 'string' ? e.payload.detail : undefined;
    const responseJson = JSON.stringify(e.payload);
    // The usual case, a first answer to a sent request of this device, in one statement; anything else
    // (refusals, duplicates, late answers) is sorted out below from the stored row.
    const answered = store.answerSent(e.requestId, e.deviceId, e.at, responseJson);
    if (answered) {
      this.d.metrics.responses.labels({ status }).inc();
      const request: RpcRequest = { ...answered, response: e.payload };
      this.d.emit('response', { request, status, ...(detail !== undefined ? { detail } : {}), payload: e.payload, at: e.at, duplicate: false });
      return;
    }
    const r = store.get(e.requestId);
    if (!r) { this.refuse(e, 'unknown_request'); return; }
    if (r.deviceId !== e.deviceId) { this.refuse(e, 'wrong_device'); return; }
    if (r.sentAt === null) { this.refuse(e, 'never_sent'); return; }
    const duplicate = r.state === 'answered';
    if (!duplicate) {
      store.markAnswered(r.id, e.at, responseJson);
      this.d.metrics.responses.labels({ status }).inc();
      if (r.state === 'expired') this.d.logger.info({ requestId: r.id, deviceId: r.deviceId, status }, 'late rpc response to an expired request');
    }
    const request: RpcRequest = duplicate ? r : { ...r, state: 'answered', answeredAt: e.at, response: e.payload };
    this.d.emit('response', { request, status, ...(detail !== undefined ? { detail } : {}), payload: e.payload, at: e.at, duplicate });
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
