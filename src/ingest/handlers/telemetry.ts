/**
 * v1/devices/D/telemetry (spec device-protocol.md "Telemetry payload").
 *
 * decode → group commit (durable on disk) → latest values, metrics, events.
 * Refusals are returned (the broker drops the message); a store failure is
 * THROWN so the broker withholds PUBACK and disconnects the device, which
 * keeps its data and retries (spec "Delivery guarantee").
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import type { Scalar } from '../../core/events.js';
import type { TelemetryRecord } from '../../storage/telemetry/types.js';
import { decodeTelemetry, type DecodedRecord } from '../codec.js';
import { OK, type HandlerContext, type IngestRegistry } from './context.js';

export async function handleTelemetry(msg: InboundMessage, ctx: HandlerContext): Promise<HandleResult> {
  const decoded = decodeTelemetry(msg.payload, msg.receivedAt, ctx.limits);
  if (!decoded.ok) return decoded;

  const { deviceId } = msg.identity;
  // The registry is authoritative (a device may have moved area since it connected).
  const device = ctx.registry.getDevice(deviceId);
  const kind: string = device?.kind ?? msg.identity.kind;
  const area = device?.area ?? msg.identity.area;
  const records: TelemetryRecord[] = decoded.records.map((r) => ({ deviceId, kind, ts: r.ts, values: r.values }));

  // Rejects when the store cannot make the batch durable: propagate (no PUBACK).
  await ctx.commit.submit(records, decoded.readings);

  // Durable from here on: nothing below may make the broker refuse the message.
  try {
    updateLatest(ctx.registry, deviceId, decoded.records);
    ctx.metrics.readingsAcceptedTotal.inc(decoded.readings);
    for (const r of decoded.records) ctx.bus.emit('telemetry', { deviceId, area, kind, ts: r.ts, values: r.values });
  } catch (err) {
    ctx.logger.error({ err, deviceId }, 'post-commit telemetry step failed (readings are stored)');
  }
  return OK;
}

/**
 * registry.updateLatest keeps the newest ts per field; for a backlog (records
 * sorted by ts) pass each field once, from its newest record, instead of
 * calling once per record.
 */
export function updateLatest(registry: Pick<IngestRegistry, 'updateLatest'>, deviceId: string, records: DecodedRecord[]): void {
  if (records.length === 1) {
    const r = records[0]!;
    registry.updateLatest(deviceId, r.ts, r.values);
    return;
  }
  const seen = new Set<string>();
  for (let i = records.length - 1; i >= 0; i--) {
    const r = records[i]!;
    let part: Record<string, Scalar> | null = null;
    for (const k in r.values) {
      if (seen.has(k)) continue;
      seen.add(k);
      (part ??= {})[k] = r.values[k]!;
    }
    if (part) registry.updateLatest(deviceId, r.ts, part);
  }
}
