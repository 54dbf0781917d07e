/**
 * What the ThingsBoard gateway handlers share (firmware-protocols/gateway.md):
 * device-name checks and a sub-device's identity. Every gateway handler
 * resolves a name through ctx.gateways, which creates, refuses (counted and
 * listed per gateway) or finds the sub-device; a refused name is skipped,
 * never a reason to refuse the gateway's whole message (the gateway's other
 * devices keep their data, and the gateway is not disconnected as abusive).
 */
import type { InboundMessage } from '../../broker/types.js';
import type { DeviceIdentity } from '../../devices/types.js';
import { validSubDeviceName } from '../../gateway/names.js';
import { fail, quote, type Failure } from '../json.js';
import type { HandlerContext } from './context.js';

export { validSubDeviceName };

export function badName(name: unknown): Failure {
  const shown = typeof name === 'string' ? quote(name.slice(0, 64)) : typeof name;
  return fail('bad_device_name', `device name ${shown} must be 1 to 200 characters without control characters`);
}

/** The Keng device behind `name`, or null when refused (or gone). */
export async function subDevice(msg: InboundMessage, ctx: HandlerContext, name: string, type?: string): Promise<DeviceIdentity | null> {
  const r = await ctx.gateways.resolve(msg.identity, name, type, msg.receivedAt);
  if (!r.ok) return null;
  const d = ctx.registry.getDevice(r.deviceId);
  if (d === undefined) return null;
  ctx.gateways.connected(msg.identity.deviceId, d.id, msg.receivedAt);
  return { deviceId: d.id, kind: d.kind, area: d.area, viaToken: false };
}
