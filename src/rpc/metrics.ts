/**
 * Instruments of the RPC service, registered on the app's Metrics registry
 * (src/core/metrics.ts is not ours; these names must be added to docs/metrics.md).
 */
import { Counter } from 'prom-client';
import type { Metrics } from '../core/metrics.js';

export interface RpcMetrics {
  sent: Counter<'method' | 'resend'>;
  expired: Counter<'method'>;
  responses: Counter<'status'>;
  refused: Counter<'reason'>;
}

function counter<L extends string>(m: Metrics | undefined, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  const existing = m?.registry.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter<L>({ name, help, labelNames, registers: m ? [m.registry] : [] });
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
