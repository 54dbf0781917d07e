import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { IngestService, sessionLimits, tbRate, type IngestDeps } from '../../src/ingest/index.js';
import type { DeliverOptions, InboundMessage, InboundType, PublishOptions } from '../../src/broker/types.js';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { Value } from 'typebox/value';
import { EventBus, type KengEvents } from '../../src/core/events.js';
import { Metrics } from '../../src/core/metrics.js';
import { createLogger } from '../../src/core/logger.js';
import { UrgentOutbound } from '../../src/core/urgent.js';
import type { Scalar } from '../../src/core/events.js';
import type { TelemetryRecord, WriteResult } from '../../src/storage/telemetry/types.js';
import type { Device, DeviceIdentity } from '../../src/devices/types.js';

const NOW = Date.UTC(2025, 11, 1);

class FakeRegistry {
  calls: { fn: string; args: unknown[] }[] = [];
  attrs: Record<string, Record<string, unknown>> = {};
  devices: Record<string, Partial<Device>> = {};
  updateLatest(deviceId: string, ts: number, values: Record<string, Scalar>): void { this.calls.push({ fn: 'updateLatest', args: [deviceId, ts, { ...values }] }); }
  mergeAttributes(deviceId: string, a: Record<string, unknown>): void {
    this.calls.push({ fn: 'mergeAttributes', args: [deviceId, a] });
    this.attrs[deviceId] = { ...(this.attrs[deviceId] ?? {}), ...a };
  }
  attributes(deviceId: string): Record<string, unknown> { return { ...(this.attrs[deviceId] ?? {}) }; }
  getDevice(id: string): Device | undefined { return this.devices[id] as Device | undefined; }
}

class FakeStore {
  batches: TelemetryRecord[][] = [];
  failWith: unknown = null;
  /** Readings the next writes report as set aside (field type conflict). */
  setAside: WriteResult['setAside'] = undefined;
  async writeBatch(records: TelemetryRecord[]): Promise<WriteResult> {
    if (this.failWith) throw this.failWith;
    this.batches.push(records);
    const setAside = this.setAside;
    return setAside ? { written: records.length - setAside.length, duplicates: 0, setAside } : { written: records.length, duplicates: 0 };
  }
}

class FakeBroker {
  published: { topic: string; payload: unknown; opts?: PublishOptions }[] = [];
  fail = false;
  /** Answers to a device's own requests (BrokerPort.deliverTo): recorded like publishes. */
  async deliverTo(deviceId: string, topic: string, payload: string | Buffer, opts?: DeliverOptions): Promise<boolean> {
    if (this.fail) throw new Error('publish failed');
    // QoS 0: raw bytes written straight to the connection (OTA chunks).
    if (opts?.qos === 0) { this.delivered.push({ deviceId, topic, payload: Buffer.from(payload) }); return true; }
    this.published.push({ topic, payload: JSON.parse(payload.toString()), opts: { qos: opts?.qos ?? 1, ...(opts?.viaMe === true ? { viaMe: true } : {}) } });
    return true;
  }
  delivered: { deviceId: string; topic: string; payload: Buffer }[] = [];
}

function makeConfig(): Config {
  const c = Value.Default(ConfigSchema, {}) as Config;
  c.telemetry.commitIntervalMs = 0;
  return c;
}

const identity: DeviceIdentity = { deviceId: 'sensor-01', kind: 'sensor', area: 'thon-3', viaToken: false };
const tokenIdentity: DeviceIdentity = { deviceId: 'tb-dev', kind: 'speaker', area: 'thon-3', viaToken: true };

function msg(type: InboundType, payload: unknown, extra: Partial<InboundMessage> = {}): InboundMessage {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
  return { identity, type, payload: p, qos: 1, retain: false, receivedAt: NOW, ...extra };
}

function setup(over: Partial<IngestDeps> = {}) {
  const registry = new FakeRegistry();
  const store = new FakeStore();
  const broker = new FakeBroker();
  const bus = new EventBus();
  const metrics = new Metrics({ defaultMetrics: false });
  const config = makeConfig();
  const events: { name: keyof KengEvents; payload: unknown }[] = [];
  for (const name of ['telemetry', 'device.event', 'rpc.response', 'attributes'] as const) {
    bus.on(name, (payload) => events.push({ name, payload }));
  }
  const ingest = new IngestService({
    config, registry, store, broker, bus, metrics, logger: createLogger('silent'), clock: { now: () => NOW }, ...over,
  });
  const counter = async (name: string, labels: Record<string, string> = {}) => {
    const m = await metrics.registry.getSingleMetric(name)!.get();
    return m.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ?? 0;
  };
  return { ingest, registry, store, broker, bus, metrics, config, events, counter };
}

describe('IngestService', () => {
  let s: ReturnType<typeof setup>;
  beforeEach(async () => { s = setup(); await s.ingest.start(); });
  afterEach(async () => { await s.ingest.stop(); });

  it('is a Component named ingest whose handle works unbound', async () => {
    expect(s.ingest.name).toBe('ingest');
    const { handle } = s.ingest;
    await expect(handle(msg('telemetry', { a: 1 }))).resolves.toEqual({ ok: true });
  });

  describe('telemetry', () => {
    it('commits, then updates latest values, counts readings and emits one event per record', async () => {
      const res = await s.ingest.handle(msg('telemetry', [
        { ts: NOW - 2000, values: { soil_moisture: 30, temperature: 24 } },
        { ts: NOW - 1000, values: { soil_moisture: 31 } },
      ]));
      expect(res).toEqual({ ok: true });
      expect(s.store.batches).toHaveLength(1);
      expect(s.store.batches[0]).toEqual([
        { deviceId: 'sensor-01', kind: 'sensor', area: 'thon-3', ts: NOW - 2000, values: { soil_moisture: 30, temperature: 24 } },
        { deviceId: 'sensor-01', kind: 'sensor', area: 'thon-3', ts: NOW - 1000, values: { soil_moisture: 31 } },
      ]);
      // newest value of each field, once
      expect(s.registry.calls).toEqual([
        { fn: 'updateLatest', args: ['sensor-01', NOW - 1000, { soil_moisture: 31 }] },
        { fn: 'updateLatest', args: ['sensor-01', NOW - 2000, { temperature: 24 }] },
      ]);
      expect(await s.counter('keng_readings_accepted_total')).toBe(3);
      expect(s.events.filter((e) => e.name === 'telemetry').map((e) => e.payload)).toEqual([
        { deviceId: 'sensor-01', area: 'thon-3', kind: 'sensor', ts: NOW - 2000, values: { soil_moisture: 30, temperature: 24 } },
        { deviceId: 'sensor-01', area: 'thon-3', kind: 'sensor', ts: NOW - 1000, values: { soil_moisture: 31 } },
      ]);
    });

    it('leaves out null values of access-token (ThingsBoard) sessions, as ThingsBoard does; refuses them from id + secret sessions', async () => {
      // The Arduino SDK's firmware-update state report.
      const res = await s.ingest.handle(msg('telemetry', { fw_error: null, fw_state: 'DOWNLOADING' }, { identity: tokenIdentity }));
      expect(res).toEqual({ ok: true });
      expect(s.store.batches).toHaveLength(1);
      expect(s.store.batches[0]![0]!.values).toEqual({ fw_state: 'DOWNLOADING' });
      const arr = await s.ingest.handle(msg('telemetry', [{ ts: NOW - 1000, values: { a: null, b: 2 } }, { c: 3, d: null }], { identity: tokenIdentity }));
      expect(arr).toEqual({ ok: true });
      expect(s.store.batches[1]!.map((r) => r.values)).toEqual([{ b: 2 }, { c: 3 }]);
      // Nothing but nulls: nothing to store.
      await expect(s.ingest.handle(msg('telemetry', { fw_error: null }, { identity: tokenIdentity }))).resolves.toMatchObject({ ok: false, reason: 'empty' });
      // The native protocol keeps its rule: a null value refuses the whole message.
      await expect(s.ingest.handle(msg('telemetry', { fw_error: null, fw_state: 'DOWNLOADING' }))).resolves.toMatchObject({ ok: false, reason: 'bad_value' });
      expect(s.store.batches).toHaveLength(2);
    });

    it('leaves readings the store set aside (field type conflict) out of latest values and telemetry events', async () => {
      s.store.setAside = [{ deviceId: 'sensor-01', ts: NOW - 1000, field: 'rssi', value: 'weak', reason: 'field_type_conflict' }];
      await s.ingest.handle(msg('telemetry', [
        { ts: NOW - 2000, values: { rssi: -70, temperature: 24 } },
        { ts: NOW - 1000, values: { rssi: 'weak', temperature: 25 } },
        { ts: NOW - 500, values: { rssi: 'weak' } },
      ]));
      // Only (NOW - 1000, rssi) was set aside: the older number stays the latest rssi.
      expect(s.registry.calls).toEqual([
        { fn: 'updateLatest', args: ['sensor-01', NOW - 500, { rssi: 'weak' }] },
        { fn: 'updateLatest', args: ['sensor-01', NOW - 1000, { temperature: 25 }] },
      ]);
      s.registry.calls.length = 0;
      s.store.setAside = [
        { deviceId: 'sensor-01', ts: NOW - 1000, field: 'rssi', value: 'weak', reason: 'field_type_conflict' },
        { deviceId: 'sensor-01', ts: NOW - 500, field: 'rssi', value: 'weak', reason: 'field_type_conflict' },
      ];
      s.events.length = 0;
      await s.ingest.handle(msg('telemetry', [
        { ts: NOW - 2000, values: { rssi: -70, temperature: 24 } },
        { ts: NOW - 1000, values: { rssi: 'weak', temperature: 25 } },
        { ts: NOW - 500, values: { rssi: 'weak' } },
      ]));
      expect(s.registry.calls).toEqual([
        { fn: 'updateLatest', args: ['sensor-01', NOW - 1000, { temperature: 25 }] },
        { fn: 'updateLatest', args: ['sensor-01', NOW - 2000, { rssi: -70 }] },
      ]);
      // The durable event stream agrees with the store.
      expect(s.events.filter((e) => e.name === 'telemetry').map((e) => (e.payload as { values: unknown }).values)).toEqual([
        { rssi: -70, temperature: 24 }, { temperature: 25 },
      ]);
      expect(await s.counter('keng_readings_accepted_total')).toBe(10);
    });

    it('uses the registry for area and kind when it knows the device', async () => {
      s.registry.devices['sensor-01'] = { id: 'sensor-01', kind: 'gateway', area: 'thon-9' };
      await s.ingest.handle(msg('telemetry', { a: 1 }));
      expect(s.events[0]!.payload).toMatchObject({ area: 'thon-9', kind: 'gateway', ts: NOW });
      expect(s.store.batches[0]![0]!.kind).toBe('gateway');
    });

    it('refuses bad payloads with a reason, writes and emits nothing, never throws', async () => {
      for (const [payload, reason] of [
        ['nope', 'not_json'],
        [{ a: null }, 'bad_value'],
        ['{"a":1e999}', 'bad_value'],
        [{ ts: NOW + 600_000, values: { a: 1 } }, 'future_ts'],
        ['['.repeat(100_000), 'too_deep'],
      ] as const) {
        await expect(s.ingest.handle(msg('telemetry', payload))).resolves.toMatchObject({ ok: false, reason });
      }
      expect(s.store.batches).toHaveLength(0);
      expect(s.events).toHaveLength(0);
      expect(s.registry.calls).toHaveLength(0);
    });

    it('does not count messages or refusals itself (the broker does) unless countInbound', async () => {
      await s.ingest.handle(msg('telemetry', 'nope'));
      expect(await s.counter('keng_rejected_total', { reason: 'not_json' })).toBe(0);
      expect(await s.counter('keng_messages_in_total', { type: 'telemetry' })).toBe(0);
      const c = setup({ countInbound: true });
      await c.ingest.handle(msg('telemetry', 'nope'));
      await c.ingest.handle(msg('attributes', { fw: '1.0' }));
      expect(await c.counter('keng_rejected_total', { reason: 'not_json' })).toBe(1);
      expect(await c.counter('keng_messages_in_total', { type: 'telemetry' })).toBe(1);
      expect(await c.counter('keng_messages_in_total', { type: 'attributes' })).toBe(1);
    });

    it('THROWS when the store cannot make the readings durable (no PUBACK), and emits nothing', async () => {
      s.store.failWith = Object.assign(new Error('full'), { code: 'KENG_ERR_QUEUE_FULL' });
      await expect(s.ingest.handle(msg('telemetry', { a: 1 }))).rejects.toMatchObject({ code: 'KENG_ERR_QUEUE_FULL' });
      expect(s.events).toHaveLength(0);
      expect(s.registry.calls).toHaveLength(0);
      expect(await s.counter('keng_readings_accepted_total')).toBe(0);
    });

    it('concurrent messages share one store write (group commit)', async () => {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => s.ingest.handle(msg('telemetry', { a: i }))));
      expect(results.every((r) => r.ok)).toBe(true);
      expect(s.store.batches).toHaveLength(1);
      expect(s.store.batches[0]).toHaveLength(20);
    });

    it('a throwing event listener after the commit does not fail the message', async () => {
      s.bus.on('telemetry', () => { throw new Error('listener bug'); });
      await expect(s.ingest.handle(msg('telemetry', { a: 1 }))).resolves.toEqual({ ok: true });
      expect(s.store.batches).toHaveLength(1);
    });

    it('stop() flushes the last batch; afterwards telemetry is not acknowledged', async () => {
      const c = setup();
      c.config.telemetry.commitIntervalMs = 1000;
      const ingest = new IngestService({
        config: c.config, registry: c.registry, store: c.store, broker: c.broker, bus: c.bus, metrics: c.metrics,
        logger: createLogger('silent'), clock: { now: () => NOW },
      });
      await ingest.start();
      const p = ingest.handle(msg('telemetry', { a: 1 }));
      await ingest.stop();
      await expect(p).resolves.toEqual({ ok: true });
      expect(c.store.batches).toHaveLength(1);
      await expect(ingest.handle(msg('telemetry', { a: 2 }))).rejects.toMatchObject({ code: 'KENG_ERR_NOT_READY' });
      await expect(ingest.handle(msg('attributes', { fw: '1' }))).resolves.toEqual({ ok: true });
    });
  });

  describe('attributes', () => {
    it('merges a JSON object into the registry', async () => {
      const attrs = { firmware: '2.1.0', model: 'LS-30', capabilities: { codecs: ['mp3', 'opus'], maxVolume: 100 } };
      await expect(s.ingest.handle(msg('attributes', attrs))).resolves.toEqual({ ok: true });
      expect(s.registry.calls).toEqual([{ fn: 'mergeAttributes', args: ['sensor-01', attrs] }]);
    });

    it.each([
      ['x', 'not_json'],
      ['[1]', 'not_object'],
      ['{}', 'empty'],
      [JSON.stringify({ ['k'.repeat(65)]: 1 }), 'bad_field_name'],
      ['{"__proto__":{"admin":true}}', 'bad_field_name'],
      ['{"a":1e999}', 'bad_value'],
      [JSON.stringify({ a: { b: { c: { d: { e: { f: { g: { h: { i: 1 } } } } } } } } }), 'too_deep'],
    ])('refuses %s (%s)', async (payload, reason) => {
      await expect(s.ingest.handle(msg('attributes', payload))).resolves.toMatchObject({ ok: false, reason });
      expect(s.registry.calls).toHaveLength(0);
    });

    it('a registry failure is an internal_error, not a throw', async () => {
      s.registry.mergeAttributes = () => { throw new Error('db gone'); };
      await expect(s.ingest.handle(msg('attributes', { a: 1 }))).resolves.toMatchObject({ ok: false, reason: 'internal_error' });
    });
  });

  describe('status', () => {
    it('{"online": true} alone changes nothing (presence comes from the broker)', async () => {
      await expect(s.ingest.handle(msg('status', { online: true }))).resolves.toEqual({ ok: true });
      await expect(s.ingest.handle(msg('status', { online: false }, { retain: true }))).resolves.toEqual({ ok: true });
      expect(s.registry.calls).toHaveLength(0);
    });

    it('extra fields are kept as the attribute "status"', async () => {
      await s.ingest.handle(msg('status', { online: true, ip: '10.0.0.7', reason: 'boot' }));
      expect(s.registry.calls).toEqual([{ fn: 'mergeAttributes', args: ['sensor-01', { status: { ip: '10.0.0.7', reason: 'boot' } }] }]);
    });

    it.each([['{"online":"yes"}', 'bad_value'], ['{"ip":"1"}', 'bad_value'], ['true', 'not_object'], ['{', 'not_json']])(
      'refuses %s', async (payload, reason) => {
        await expect(s.ingest.handle(msg('status', payload))).resolves.toMatchObject({ ok: false, reason });
      });
  });

  describe('events', () => {
    const playback = { type: 'playback', broadcastId: 'b-42', state: 'started', at: NOW - 10 };

    it('emits device.event for a playback event and for other event types', async () => {
      await expect(s.ingest.handle(msg('events', playback))).resolves.toEqual({ ok: true });
      await expect(s.ingest.handle(msg('events', { ...playback, state: 'failed', detail: 'HTTP 404' }))).resolves.toEqual({ ok: true });
      await expect(s.ingest.handle(msg('events', { type: 'door_open', zone: 2 }))).resolves.toEqual({ ok: true });
      expect(s.events.map((e) => e.payload)).toEqual([
        { deviceId: 'sensor-01', payload: playback, at: NOW },
        { deviceId: 'sensor-01', payload: { ...playback, state: 'failed', detail: 'HTTP 404' }, at: NOW },
        { deviceId: 'sensor-01', payload: { type: 'door_open', zone: 2 }, at: NOW },
      ]);
    });

    it.each([
      [{ broadcastId: 'b' }, 'bad_event'],
      [{ type: 5 }, 'bad_event'],
      [{ type: '' }, 'bad_event'],
      [{ type: 'playback', state: 'started', at: NOW }, 'bad_playback_event'],
      [{ type: 'playback', broadcastId: 'b', state: 'paused', at: NOW }, 'bad_playback_event'],
      [{ type: 'playback', broadcastId: 'b', state: 'started' }, 'bad_playback_event'],
      [{ type: 'playback', broadcastId: 'b', state: 'started', at: '2025-12-01T00:00:00Z' }, 'bad_playback_event'],
      [{ type: 'playback', broadcastId: 'b', state: 'started', at: NOW, detail: 7 }, 'bad_playback_event'],
      ['[]', 'not_object'],
    ])('refuses %j (%s)', async (payload, reason) => {
      await expect(s.ingest.handle(msg('events', payload))).resolves.toMatchObject({ ok: false, reason });
      expect(s.events).toHaveLength(0);
    });
  });

  describe('rpc.response', () => {
    it('emits rpc.response with the request id', async () => {
      const payload = { status: 'accepted', detail: 'queued', position: 2 };
      await expect(s.ingest.handle(msg('rpc.response', payload, { requestId: '17' }))).resolves.toEqual({ ok: true });
      expect(s.events).toEqual([{ name: 'rpc.response', payload: { deviceId: 'sensor-01', requestId: '17', payload, at: NOW } }]);
    });

    it.each([
      [{ status: 'done' }, 'bad_rpc_response'],
      [{ detail: 'x' }, 'bad_rpc_response'],
      [{ status: 'ok', detail: 5 }, 'bad_rpc_response'],
      ['"ok"', 'bad_rpc_response'],
      ['{', 'not_json'],
    ])('refuses %j from a device-id device (%s)', async (payload, reason) => {
      await expect(s.ingest.handle(msg('rpc.response', payload, { requestId: '1' }))).resolves.toMatchObject({ ok: false, reason });
    });

    it('needs a request id', async () => {
      await expect(s.ingest.handle(msg('rpc.response', { status: 'ok' }))).resolves.toMatchObject({ ok: false, reason: 'missing_request_id' });
    });

    it('waits while urgent commands go out (core/urgent.ts); telemetry does not', async () => {
      const urgent = new UrgentOutbound(10_000);
      const u = setup({ urgent });
      await u.ingest.start();
      let publishDone!: () => void;
      urgent.hold(new Promise<void>((r) => { publishDone = r; }));
      let answered = false;
      const answer = u.ingest.handle(msg('rpc.response', { status: 'accepted' }, { requestId: '9' })).then((r) => { answered = true; return r; });
      await expect(u.ingest.handle(msg('telemetry', { a: 1 }))).resolves.toEqual({ ok: true });
      await new Promise((r) => setTimeout(r, 20));
      expect(answered).toBe(false);
      expect(u.events.map((e) => e.name)).toEqual(['telemetry']);
      publishDone();
      await expect(answer).resolves.toEqual({ ok: true });
      expect(u.events.map((e) => e.name)).toEqual(['telemetry', 'rpc.response']);
      await u.ingest.stop();
    });

    it('is acknowledged only once the state writes it caused are durable; a failed commit fails it (no PUBACK)', async () => {
      let commit!: () => void;
      let fail!: (err: Error) => void;
      let window = new Promise<void>((res, rej) => { commit = res; fail = rej; });
      const u = setup({ stateDurable: () => window });
      await u.ingest.start();
      let answered = false;
      const answer = u.ingest.handle(msg('rpc.response', { status: 'accepted' }, { requestId: '9' })).then((r) => { answered = true; return r; });
      await expect(u.ingest.handle(msg('telemetry', { a: 1 }))).resolves.toEqual({ ok: true }); // readings have their own commit
      await new Promise((r) => setTimeout(r, 20));
      expect(u.events.map((e) => e.name).sort()).toEqual(['rpc.response', 'telemetry']); // handled at once...
      expect(answered).toBe(false); // ...acknowledged after the commit
      commit();
      await expect(answer).resolves.toEqual({ ok: true });
      window = new Promise<void>((res, rej) => { commit = res; fail = rej; });
      const lost = u.ingest.handle(msg('events', { event: 'started', requestId: 'r1', broadcastId: 'b1' }));
      fail(new Error('disk full'));
      await expect(lost).rejects.toThrow('disk full');
      await u.ingest.stop();
    });

    it('a ThingsBoard device answer without status is wrapped as {status: ok, result}', async () => {
      await s.ingest.handle(msg('rpc.response', { temperature: 22 }, { requestId: '3', identity: tokenIdentity }));
      await s.ingest.handle(msg('rpc.response', '"done"', { requestId: '4', identity: tokenIdentity }));
      expect(s.events.map((e) => (e.payload as KengEvents['rpc.response']).payload)).toEqual([
        { status: 'ok', result: { temperature: 22 } },
        { status: 'ok', result: 'done' },
      ]);
    });
  });

  describe('ThingsBoard claiming (not supported)', () => {
    it('is refused without an answer: counted, recorded on the device as claimRequest (without the secret), acknowledged', async () => {
      const res = await s.ingest.handle(msg('claim', { secretKey: 's3cret', durationMs: 30000 }, { identity: tokenIdentity }));
      expect(res).toEqual({ ok: true });
      await s.ingest.handle(msg('claim', Buffer.alloc(0), { identity: tokenIdentity })); // ThingsBoard allows an empty claim
      expect(await s.counter('keng_mqtt_claims_refused_total')).toBe(2);
      expect(s.registry.attrs['tb-dev']!.claimRequest).toEqual({
        state: 'refused', at: '2025-12-01T00:00:00.000+00:00', reason: 'claiming is not supported: devices are registered by operators or by provisioning',
      });
      expect(JSON.stringify(s.registry.attrs)).not.toContain('s3cret');
      expect(s.broker.published).toEqual([]);
      await expect(s.ingest.handle(msg('claim', 'not json', { identity: tokenIdentity }))).resolves.toMatchObject({ ok: false, reason: 'not_json' });
    });
  });

  describe('ThingsBoard client-side RPC', () => {
    it('getSessionLimits answers with Keng limits in ThingsBoard shape', async () => {
      const res = await s.ingest.handle(msg('rpc.request', { method: 'getSessionLimits', params: {} }, { requestId: '5', identity: tokenIdentity }));
      expect(res).toEqual({ ok: true });
      expect(s.broker.published).toEqual([{
        topic: 'v1/devices/tb-dev/rpc/response/5',
        opts: { qos: 1 },
        payload: {
          maxPayloadSize: 262_144,
          maxInflightMessages: 100,
          rateLimit: { messages: '50:1,500:10', telemetryMessages: '50:1,500:10', telemetryDataPoints: '12800:1,128000:10' },
        },
      }]);
    });

    it('any other method gets {"error": "unsupported method"}', async () => {
      await s.ingest.handle(msg('rpc.request', { method: 'getCurrentTime', params: {} }, { requestId: '6', identity: tokenIdentity }));
      expect(s.broker.published).toEqual([{ topic: 'v1/devices/tb-dev/rpc/response/6', opts: { qos: 1 }, payload: { error: 'unsupported method' } }]);
    });

    it('refuses a request without method or id; a failing publish is not an error for the message', async () => {
      await expect(s.ingest.handle(msg('rpc.request', { params: {} }, { requestId: '7' }))).resolves.toMatchObject({ ok: false, reason: 'bad_rpc_request' });
      await expect(s.ingest.handle(msg('rpc.request', { method: 'x' }))).resolves.toMatchObject({ ok: false, reason: 'missing_request_id' });
      s.broker.fail = true;
      await expect(s.ingest.handle(msg('rpc.request', { method: 'x' }, { requestId: '8' }))).resolves.toEqual({ ok: true });
    });

    it('the answer goes back in the form the request came in (viaMe → delivered on v1/devices/me/...)', async () => {
      await s.ingest.handle(msg('rpc.request', { method: 'x' }, { requestId: '9', identity: tokenIdentity, viaMe: true }));
      await s.ingest.handle(msg('attributes.request', {}, { requestId: '10', identity: tokenIdentity, viaMe: true }));
      expect(s.broker.published.map((p) => [p.topic, p.opts])).toEqual([
        ['v1/devices/tb-dev/rpc/response/9', { qos: 1, viaMe: true }],
        ['v1/devices/tb-dev/attributes/response/10', { qos: 1, viaMe: true }],
      ]);
    });

    it('getSessionLimits with the default settings is exactly the answer documented in firmware-protocols (§13.3)', () => {
      const doc = readFileSync(new URL('../../firmware-protocols/device-protocol.md', import.meta.url), 'utf8');
      const block = /Answer \(defaults shown\):\s*```json\n([\s\S]*?)```/.exec(doc.slice(doc.indexOf('`getSessionLimits` request:')));
      expect(JSON.parse(block![1]!)).toEqual(sessionLimits(makeConfig().mqtt));
    });

    it('tbRate renders a token bucket as "count:seconds" pairs', () => {
      expect(tbRate(50, 500)).toBe('50:1,500:10');
      expect(tbRate(10, 25)).toBe('10:1,25:3');
      expect(tbRate(0.5, 1)).toBe('1:2,1:2');
      expect(tbRate(2.7, 10)).toBe('2:1,10:4');
      expect(sessionLimits({ ...makeConfig().mqtt, maxPayloadBytes: 1024 }).maxPayloadSize).toBe(1024);
    });
  });

  describe('ThingsBoard attribute request', () => {
    beforeEach(() => { s.registry.attrs['tb-dev'] = { fw: '1.0', model: 'X', serial: 'S1' }; });

    // As ThingsBoard: a side the request did not ask for is left out; with no keys at all, both sides.
    it.each([
      [{ clientKeys: 'fw,model' }, { client: { fw: '1.0', model: 'X' } }],
      [{ clientKeys: ' fw , missing ' }, { client: { fw: '1.0' } }],
      [{ clientKeys: ['serial'] }, { client: { serial: 'S1' } }],
      [{}, { client: { fw: '1.0', model: 'X', serial: 'S1' }, shared: {} }],
      [{ sharedKeys: 'targetFw' }, { shared: {} }],
      [{ clientKeys: 'fw', sharedKeys: 'targetFw' }, { client: { fw: '1.0' }, shared: {} }],
    ])('%j → %j', async (req, payload) => {
      await expect(s.ingest.handle(msg('attributes.request', req, { requestId: '9', identity: tokenIdentity }))).resolves.toEqual({ ok: true });
      expect(s.broker.published).toEqual([{ topic: 'v1/devices/tb-dev/attributes/response/9', opts: { qos: 1 }, payload }]);
    });

    it('shared attributes come from the SharedAttributesSource', async () => {
      const shared = vi.fn((_id: string, keys: string[] | undefined) => (keys ? { targetFw: '2.0' } : { targetFw: '2.0', interval: 60 }));
      const c = setup({ sharedAttributes: { sharedAttributes: shared } });
      await c.ingest.handle(msg('attributes.request', { sharedKeys: 'targetFw' }, { requestId: '1', identity: tokenIdentity }));
      expect(shared).toHaveBeenCalledWith('tb-dev', ['targetFw']);
      expect(c.broker.published[0]!.payload).toEqual({ shared: { targetFw: '2.0' } });
    });

    it('refuses wrong key types and missing request ids', async () => {
      await expect(s.ingest.handle(msg('attributes.request', { clientKeys: 5 }, { requestId: '1' }))).resolves.toMatchObject({ ok: false, reason: 'bad_attributes_request' });
      await expect(s.ingest.handle(msg('attributes.request', { clientKeys: [1] }, { requestId: '1' }))).resolves.toMatchObject({ ok: false, reason: 'bad_attributes_request' });
      await expect(s.ingest.handle(msg('attributes.request', {}))).resolves.toMatchObject({ ok: false, reason: 'missing_request_id' });
      expect(s.broker.published).toHaveLength(0);
    });
  });

  describe('ThingsBoard firmware chunk request', () => {
    it('writes the chunk straight to the connection on v2/fw/response/{n}/chunk/{k}; an error word on v2/fw/error', async () => {
      const chunk = vi.fn(async (_d: string, _n: string, payload: Buffer, index: number) => (
        payload.toString() === 'nope' ? { ok: false as const, error: 'NOT_FOUND' } : { ok: true as const, payload: Buffer.from(`part${index}`) }));
      const c = setup({ firmware: { chunk } });
      await expect(c.ingest.handle(msg('fw.request', '4096', { requestId: '3', chunk: 2, identity: tokenIdentity }))).resolves.toEqual({ ok: true });
      expect(chunk).toHaveBeenCalledWith('tb-dev', '3', Buffer.from('4096'), 2, c.config.mqtt.maxPayloadBytes);
      await c.ingest.handle(msg('fw.request', 'nope', { requestId: '3', chunk: 3, identity: tokenIdentity }));
      expect(c.broker.delivered.map((d) => [d.deviceId, d.topic, d.payload.toString()])).toEqual([
        ['tb-dev', 'v2/fw/response/3/chunk/2', 'part2'], ['tb-dev', 'v2/fw/error', 'NOT_FOUND'],
      ]);
      expect(c.broker.published).toHaveLength(0);
    });

    it('without a firmware source every request gets NOT_FOUND; a request without ids is refused', async () => {
      await s.ingest.handle(msg('fw.request', '', { requestId: '1', chunk: 0 }));
      expect(s.broker.delivered.map((d) => [d.topic, d.payload.toString()])).toEqual([['v2/fw/error', 'NOT_FOUND']]);
      await expect(s.ingest.handle(msg('fw.request', ''))).resolves.toMatchObject({ ok: false, reason: 'missing_request_id' });
    });
  });

  it('an unknown message type is refused, not thrown', async () => {
    await expect(s.ingest.handle(msg('bogus' as InboundType, {}))).resolves.toMatchObject({ ok: false, reason: 'unknown_type' });
  });
});
