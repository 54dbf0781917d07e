/** The gateway instruments (docs/metrics.md, "Gateways"). */
import type { Registry } from 'prom-client';
import { counterOn, gaugeOn } from '../core/metrics.js';

export function gatewayMetrics(registry: Registry | undefined) {
  return {
    created: counterOn(registry, 'keng_gateway_sub_devices_created_total',
      'Sub-devices created on first sight for gateways allowed to create them'),
    refused: counterOn<'reason'>(registry, 'keng_gateway_sub_devices_refused_total',
      'Sub-device names a gateway published for and Keng refused, by reason (not_allowed, other_gateway, id_taken, disabled, create_failed)', ['reason']),
    connected: gaugeOn(registry, 'keng_gateway_sub_devices_connected', 'Sub-devices connected through a connected gateway'),
  };
}

export type GatewayMetrics = ReturnType<typeof gatewayMetrics>;
