/**
 * The ThingsBoard gateway API's message types (firmware-protocols/gateway.md),
 * one handler each; `v1/gateway/claim` (ThingsBoard device claiming) has no
 * meaning in Keng and is refused as unsupported.
 */
import type { InboundType } from '../../broker/types.js';
import { fail } from '../json.js';
import type { MessageHandler } from './context.js';
import { handleGatewayAttributes } from './gateway-attributes.js';
import { handleGatewayAttributesRequest } from './gateway-attributes-request.js';
import { handleGatewayConnect } from './gateway-connect.js';
import { handleGatewayDisconnect } from './gateway-disconnect.js';
import { handleGatewayRpc } from './gateway-rpc.js';
import { handleGatewayTelemetry } from './gateway-telemetry.js';

type GatewayType = Extract<InboundType, `gateway.${string}`>;

export const GATEWAY_HANDLERS: Record<GatewayType, MessageHandler> = {
  'gateway.connect': handleGatewayConnect,
  'gateway.disconnect': handleGatewayDisconnect,
  'gateway.telemetry': handleGatewayTelemetry,
  'gateway.attributes': handleGatewayAttributes,
  'gateway.attributes.request': handleGatewayAttributesRequest,
  'gateway.rpc': handleGatewayRpc,
  'gateway.claim': () => fail('unsupported', 'device claiming is not supported by Keng'),
};
