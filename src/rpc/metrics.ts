/** Instruments of the RPC service, on the app's registry (names listed in docs/metrics.md). */
import type { Counter } from 'prom-client';
import { counterOn, type Metrics } from '../core/metrics.js';

export interface RpcMetrics {
  sent: Counter<'method' | 'resend'>;
  expired: Counter<'method'>;
  responses: Counter<'status'>;
  refused: Counter<'reason'>;
}

function counter<L extends string>(m: Metrics | undefined, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  return counterOn(m?.registry, name, help, labelNames);
}

export function rpcMetrics(m: Metrics | undefined): RpcMetrics {
  return {
    sent: counter(m, 'keng_rpc_sent_total', 'RPC requests published to devices (resend="true": replayed after a reconnect)', ['method', 'resend'] as const),
    expired: counter(m, 'keng_rpc_expired_total', 'RPC requests whose expiresAt passed before they were sent or answered', ['method'] as const),
    responses: counter(m, 'keng_rpc_responses_total', 'RPC responses matched to a request, by status', ['status'] as const),
    refused: counter(m, 'keng_rpc_responses_refused_total',
      'RPC responses refused: unknown request id, another device\'s request, or a request never sent to the device', ['reason'] as const),
  };
}
