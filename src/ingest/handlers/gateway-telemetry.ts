/**
 * v1/gateway/telemetry `{"Name A": [{"ts": ms, "values": {...}}, ...], "Name B": [...]}`
 * (ThingsBoard gateway API; tb_gateway_mqtt.gw_send_telemetry always sends a
 * list per device). Each device's part is any telemetry payload of the device
 * protocol (§6: a flat object, `{"ts","values"}`, or a list of either) and
 * takes exactly the path of that device's own `v1/devices/D/telemetry`:
 * the same validation, group commit, de-duplication, latest values, events
 * and store (handlers/telemetry.ts).
 *
 * Every part is validated before anything is stored: one invalid part
 * refuses the whole message (as one invalid record refuses a device's
 * message). The message resolves, so the gateway gets its PUBACK, only once
 * the readings of every sub-device in it are durable; a store failure
 * rejects it (no PUBACK, the gateway sends it again). Names that are refused
 * (not allowed to be created, another gateway's) are skipped and counted.
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import { decodeTelemetry } from '../codec.js';
import { fail, isPlainObject, parseJson, quote } from '../json.js';
import { OK, type HandlerContext } from './context.js';
import { badName, subDevice, validSubDeviceName } from './gateway-common.js';
import { handleTelemetry } from './telemetry.js';

export async function handleGatewayTelemetry(msg: InboundMessage, ctx: HandlerContext): Promise<HandleResult> {
  const p = parseJson(msg.payload);
  if (!p.ok) return p;
  if (!isPlainObject(p.value)) return fail('not_object', 'payload must be a JSON object of device name → telemetry');
  const parts: Array<{ name: string; payload: Buffer }> = [];
  for (const name in p.value) {
    if (!validSubDeviceName(name)) return badName(name);
    const payload = Buffer.from(JSON.stringify(p.value[name]), 'utf8');
    const d = decodeTelemetry(payload, msg.receivedAt, ctx.limits);
    if (!d.ok) return { ok: false, reason: d.reason, detail: `${quote(name.slice(0, 64))}: ${d.detail}` };
    parts.push({ name, payload });
  }
  if (parts.length === 0) return fail('empty', 'no device in the message');

  const durable: Array<Promise<HandleResult> | HandleResult> = [];
  for (const { name, payload } of parts) {
    const identity = await subDevice(msg, ctx, name);
    if (identity === null) continue;
    durable.push(handleTelemetry({ ...msg, identity, type: 'telemetry', payload }, ctx));
  }
  // Rejects when the store could not make some of them durable: no PUBACK for any.
  const results = await Promise.all(durable);
  return results.find((r) => !r.ok) ?? OK;
}
