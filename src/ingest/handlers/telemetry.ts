/**
 * v1/devices/D/telemetry (firmware-protocols/device-protocol.md §6).
 *
 * decode → `telemetry.accepted` events (live view) → group commit (durable
 * on disk) → latest values, metrics, `telemetry` events.
 * Refusals are returned (the broker drops the message); a store failure is
 * THROWN so the broker withholds PUBACK and disconnects the device, which
 * keeps its data and retries (device protocol §8).
 */
import type { HandleResult, InboundMessage } from '../../broker/types.js';
import type { Scalar, TelemetryEvent } from '../../core/events.js';
import type { SetAsideReading, TelemetryRecord } from '../../storage/telemetry/types.js';
import { decodeTelemetry, decodeTelemetryWithoutNulls, isNullValueFailure, type DecodedRecord } from '../codec.js';
import type { BatchResult } from '../group-commit.js';
import { OK, type HandlerContext, type IngestRegistry } from './context.js';

/** What the post-commit step needs of one message: its readings as bus events (made once, emitted twice). */
interface Accepted { deviceId: string; events: TelemetryEvent[]; readings: number }

/**
 * The messages of the batch currently gathering, and the one promise all of
 * them return. Messages of one batch share its outcome, so their post-commit
 * work runs once per batch, in one callback, instead of one async
 * continuation (promise + closure + suspended frame) per message.
 */
interface BatchAfter { durable: Promise<BatchResult>; items: Accepted[]; ok: Promise<HandleResult> }

/** Per group committer (one per IngestService): the batch the last message joined. */
const current = new WeakMap<object, BatchAfter>();

export function handleTelemetry(msg: InboundMessage, ctx: HandlerContext): Promise<HandleResult> | HandleResult {
  let decoded = decodeTelemetry(msg.payload, msg.receivedAt, ctx.limits);
  if (!decoded.ok) {
    if (!msg.identity.viaToken || !isNullValueFailure(decoded)) return decoded;
    decoded = decodeTelemetryWithoutNulls(msg.payload, msg.receivedAt, ctx.limits);
    if (!decoded.ok) return decoded;
  }

  const { deviceId } = msg.identity;
  // The registry is authoritative (a device may have moved area since it connected).
  const device = ctx.registry.getDevice(deviceId);
  const kind: string = device?.kind ?? msg.identity.kind;
  const area = device?.area ?? msg.identity.area;
  const src = decoded.records;
  // One object per reading serves as the store's record and as the bus event (the same
  // fields): neither the store nor any listener changes it.
  const events: TelemetryEvent[] = new Array<TelemetryEvent>(src.length);
  for (let i = 0; i < src.length; i++) {
    const { ts, values } = src[i]!;
    events[i] = { deviceId, area, kind, ts, values };
  }
  const records: TelemetryRecord[] = events;
  // The live view does not wait for the disk (a commit takes tens of ms under load).
  try {
    for (const e of events) ctx.bus.emit('telemetry.accepted', e);
  } catch (err) {
    ctx.logger.error({ err, deviceId }, 'live telemetry listener failed (the readings are still stored)');
  }

  // Rejects (every message of the batch) when the store cannot make it durable: no PUBACK.
  const durable = ctx.commit.join(records, decoded.readings);
  let after = current.get(ctx.commit);
  if (after === undefined || after.durable !== durable) after = openAfter(durable, ctx);
  after.items.push({ deviceId, events, readings: decoded.readings });
  return after.ok;
}

/**
 * The first message of a batch opens its post-commit step. A function of its
 * own: a closure over `ctx` inside handleTelemetry would make V8 allocate a
 * context for every message, not once per batch.
 */
function openAfter(durable: Promise<BatchResult>, ctx: HandlerContext): BatchAfter {
  const items: Accepted[] = [];
  const after: BatchAfter = { durable, items, ok: durable.then((r) => afterCommit(items, ctx, r.batch.setAside)) };
  current.set(ctx.commit, after);
  return after;
}

/**
 * Durable from here on: nothing below may make the broker refuse a message.
 * Readings the store set aside (field type conflict, in its dead-letter
 * table) are left out of latest values and `telemetry` events, so those agree
 * with the history.
 */
function afterCommit(items: Accepted[], ctx: HandlerContext, setAside: readonly SetAsideReading[] | undefined): HandleResult {
  let readings = 0;
  const aside = setAside?.length ? asideKeys(setAside) : null;
  for (const it of items) {
    readings += it.readings;
    try {
      if (aside !== null) it.events = withoutSetAside(it.events, aside);
      updateLatest(ctx.registry, it.deviceId, it.events);
      for (const e of it.events) ctx.bus.emit('telemetry', e);
    } catch (err) {
      ctx.logger.error({ err, deviceId: it.deviceId }, 'post-commit telemetry step failed (readings are stored)');
    }
  }
  try {
    ctx.metrics.readingsAcceptedTotal.inc(readings); // once per batch, not per message
  } catch (err) {
    ctx.logger.error({ err }, 'post-commit telemetry metrics failed (readings are stored)');
  }
  return OK;
}

function asideKey(deviceId: string, ts: number, field: string): string { return deviceId + '\u0000' + ts + '\u0000' + field; }

function asideKeys(list: readonly SetAsideReading[]): Set<string> {
  const s = new Set<string>();
  for (const a of list) s.add(asideKey(a.deviceId, a.ts, a.field));
  return s;
}

/** The events without the set-aside readings (an event left with no value is dropped). */
export function withoutSetAside(events: TelemetryEvent[], aside: ReadonlySet<string>): TelemetryEvent[] {
  const out: TelemetryEvent[] = [];
  for (const e of events) {
    let values: Record<string, Scalar> | null = null;
    let n = 0;
    for (const k in e.values) {
      if (aside.has(asideKey(e.deviceId, e.ts, k))) { values ??= { ...e.values }; delete values[k]; } else n++;
    }
    if (values === null) out.push(e);
    else if (n > 0) out.push({ ...e, values });
  }
  return out;
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
