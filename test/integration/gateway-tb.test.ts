/**
 * ThingsBoard gateway API (firmware-protocols/gateway.md) against a real Keng
 * over real MQTT/TCP, driven by a ThingsBoard IoT Gateway imitation in Python
 * (paho-mqtt 1.6; test/helpers/tb-gateway.ts) that sends the gateway's exact
 * bytes: sub-devices created under the gateway's area, readings stored before
 * the PUBACK, attributes, presence, refusal (counted, listed) when the gateway
 * may not create, another gateway's sub-device refused, and an RPC round trip
 * from Keng's RPC service through the gateway.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, parseMetrics, publish, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';
import { TbGatewayImitation } from '../helpers/tb-gateway.js';
import { subDeviceId } from '../../src/gateway/index.js';

const PUMP = 'Trạm bơm 1';
const SOIL = 'Soil Sensor #2';

describe('ThingsBoard gateway API with a ThingsBoard IoT Gateway imitation (paho-mqtt, MQTT 3.1.1)', () => {
  let t: TestApp;
  const tokens: Record<string, string> = {};
  const gws: TbGatewayImitation[] = [];
  const gateway = (id: string): TbGatewayImitation => { const g = new TbGatewayImitation(t.mqttPort, tokens[id]!); gws.push(g); return g; };
  const metric = async (key: string): Promise<number> => parseMetrics((await t.api('GET', '/metrics')).body as string).get(key) ?? 0;
  const history = async (id: string, field: string, from: number) =>
    (await t.api('GET', `/api/v1/devices/${id}/telemetry?fields=${field}&from=${encodeURIComponent(new Date(from).toISOString())}`)).body;

  beforeAll(async () => {
    t = await startTestApp();
    await seedAreas(t, COMMUNE_TREE);
    for (const [id, area, create] of [['gw-a', 'ca', true], ['gw-b', 'cb', undefined]] as const) {
      const r = await t.api('POST', '/api/v1/devices', { id, kind: 'gateway', name: id, area, ...(create ? { createSubDevices: true } : {}) });
      expect(r.status).toBe(201);
      tokens[id] = r.body.accessToken as string;
    }
  }, 60_000);

  afterAll(async () => {
    for (const g of gws) await g.quit();
    await t?.stop();
  });

  it('a gateway setting is shown and defaults to no creation', async () => {
    expect((await t.api('GET', '/api/v1/devices/gw-a')).body).toMatchObject({ kind: 'gateway', createSubDevices: true, refusedSubDevices: [] });
    expect((await t.api('GET', '/api/v1/devices/gw-b')).body).toMatchObject({ kind: 'gateway', createSubDevices: false });
    // Not a setting of other kinds.
    await t.api('POST', '/api/v1/devices', { id: 'plain-1', kind: 'sensor', name: 'plain', area: 'ca' });
    expect((await t.api('PATCH', '/api/v1/devices/plain-1', { createSubDevices: true })).status).toBe(400);
  });

  let a: TbGatewayImitation;

  it('connect creates the sub-device under the gateway\'s area; telemetry is stored before the PUBACK', async () => {
    a = gateway('gw-a');
    expect(await a.ready()).toEqual([1, 1, 1, 1, 1, 1, 1]);
    const bytes = await a.publish('v1/gateway/connect', { device: PUMP, type: 'default' });
    expect(bytes).toBe('{"device":"Trạm bơm 1","type":"default"}');
    const pumpId = subDeviceId(PUMP);
    expect(pumpId).toMatch(/^tram-bom-1-[0-9a-f]{10}$/);
    const pump = (await t.api('GET', `/api/v1/devices/${pumpId}`)).body;
    expect(pump).toMatchObject({ id: pumpId, kind: 'sensor', name: PUMP, area: 'ca', online: true, gateway: { id: 'gw-a', name: PUMP } });

    const ts = Date.now() - 1000;
    const sent = await a.publish('v1/gateway/telemetry', {
      [PUMP]: [{ ts, values: { temperature: 24.5, running: true } }],
      [SOIL]: [{ ts, values: { soil_moisture: 31.5 } }, { ts: ts + 1, values: { soil_moisture: 31.7 } }],
    });
    expect(sent).toBe(`{"Trạm bơm 1":[{"ts":${ts},"values":{"temperature":24.5,"running":true}}],"Soil Sensor #2":[{"ts":${ts},"values":{"soil_moisture":31.5}},{"ts":${ts + 1},"values":{"soil_moisture":31.7}}]}`);
    // Acknowledged means stored: asked right after the PUBACK, without waiting.
    const soilId = subDeviceId(SOIL);
    expect((await history(pumpId, 'temperature', ts - 1)).points).toEqual([{ ts: expect.any(String), values: { temperature: 24.5 } }]);
    expect((await history(soilId, 'soil_moisture', ts - 1)).points.map((p: any) => p.values.soil_moisture)).toEqual([31.5, 31.7]);
    const soil = (await t.api('GET', `/api/v1/devices/${soilId}`)).body;
    expect(soil).toMatchObject({ area: 'ca', online: true, gateway: { id: 'gw-a', name: SOIL }, latest: { soil_moisture: { value: 31.7 } } });
    expect(await metric('keng_gateway_sub_devices_created_total')).toBe(2);
  });

  it('attributes are merged like a device\'s own; an invalid part refuses the message (acknowledged, counted)', async () => {
    await a.publish('v1/gateway/attributes', { [PUMP]: { connectorType: 'modbus', connectorName: 'Modbus Connector' } });
    expect((await t.api('GET', `/api/v1/devices/${subDeviceId(PUMP)}`)).body.attributes).toMatchObject({ connectorType: 'modbus', connectorName: 'Modbus Connector' });

    const before = await metric('keng_rejected_total{reason="bad_field_name"}');
    const ts = Date.now();
    await a.publish('v1/gateway/telemetry', { [PUMP]: [{ ts, values: { temperature: 99 } }], [SOIL]: [{ ts, values: { 'bad name': 1 } }] });
    expect(await metric('keng_rejected_total{reason="bad_field_name"}')).toBe(before + 1);
    // Whole message refused: the valid part was not stored either.
    expect((await history(subDeviceId(PUMP), 'temperature', ts - 1)).points).toEqual([]);
  });

  it('client attribute request is answered as ThingsBoard does', async () => {
    await a.publish('v1/gateway/attributes/request', { keys: ['connectorType'], device: PUMP, client: true, id: 7 });
    const m = await a.next((l) => l.kind === 'msg' && l.topic === 'v1/gateway/attributes/response');
    expect(m.body).toEqual({ id: 7, device: PUMP, value: 'modbus' });
  });

  it('RPC from Keng\'s RPC service reaches the sub-device through its gateway and the answer comes back', async () => {
    const pumpId = subDeviceId(PUMP);
    const { requestId } = await t.app.broadcast.rpc.send(pumpId, 'setPump', { on: true }, { expiresAt: Date.now() + 60_000 });
    const req = await a.next((l) => l.kind === 'msg' && l.topic === 'v1/gateway/rpc', 15_000);
    expect(req.body).toEqual({ device: PUMP, data: { id: expect.any(Number), method: 'setPump', params: { on: true } } });
    // What ThingsBoard IoT Gateway's __send_rpc_reply publishes for a connector's success: data as a JSON string.
    await a.publish('v1/gateway/rpc', { device: PUMP, id: req.body.data.id, data: '{"success":true}' });
    const answered = await waitFor(async () => { const r = await t.app.broadcast.rpc.get(requestId); return r?.state === 'answered' ? r : undefined; });
    expect(answered.response).toEqual({ status: 'ok', result: { success: true } });
    // An id never sent to this gateway is refused (acknowledged, counted).
    const before = await metric('keng_rejected_total{reason="unknown_rpc_id"}');
    await a.publish('v1/gateway/rpc', { device: PUMP, id: 999_999, data: { success: true } });
    expect(await metric('keng_rejected_total{reason="unknown_rpc_id"}')).toBe(before + 1);
  });

  it('a gateway that may not create sub-devices is refused, counted and shown the names', async () => {
    const b = gateway('gw-b');
    await b.ready();
    const before = await metric('keng_gateway_sub_devices_refused_total{reason="not_allowed"}');
    await b.publish('v1/gateway/connect', { device: 'Cảm biến lạ', type: 'default' });
    await b.publish('v1/gateway/telemetry', { 'Cảm biến lạ': [{ ts: Date.now(), values: { temperature: 1 } }] });
    expect(await metric('keng_gateway_sub_devices_refused_total{reason="not_allowed"}')).toBe(before + 2);
    expect((await t.api('GET', `/api/v1/devices/${subDeviceId('Cảm biến lạ')}`)).status).toBe(404);
    const gwB = (await t.api('GET', '/api/v1/devices/gw-b')).body;
    expect(gwB.refusedSubDevices).toEqual([{ name: 'Cảm biến lạ', reason: 'not_allowed', count: 2, firstAt: expect.any(String), lastAt: expect.any(String) }]);
  });

  it('an operator can register a device behind a gateway by hand; that gateway then reaches it without creating', async () => {
    const body = { id: 'be-nuoc', kind: 'sensor', name: 'Bể nước', area: 'cb', gateway: { id: 'gw-b', name: 'Bể nước' } };
    expect((await t.api('POST', '/api/v1/devices', { ...body, area: 'ca' })).status).toBe(422); // not the gateway's area
    expect((await t.api('POST', '/api/v1/devices', { ...body, gateway: { id: 'plain-1', name: 'Bể nước' } })).status).toBe(422);
    expect((await t.api('POST', '/api/v1/devices', { ...body, gateway: { id: 'gw-b', name: PUMP } })).status).toBe(409);
    expect((await t.api('GET', '/api/v1/devices/be-nuoc')).status).toBe(404); // nothing half-registered
    const r = await t.api('POST', '/api/v1/devices', body);
    expect(r.status).toBe(201);
    expect(r.body.gateway).toEqual({ id: 'gw-b', name: 'Bể nước' });
    const ts = Date.now();
    await gws[1]!.publish('v1/gateway/telemetry', { 'Bể nước': [{ ts, values: { water_level: 1.25 } }] });
    expect((await history('be-nuoc', 'water_level', ts - 1)).points).toEqual([{ ts: expect.any(String), values: { water_level: 1.25 } }]);
    expect((await t.api('GET', '/api/v1/devices/gw-b')).body.createSubDevices).toBe(false);
  });

  it('a gateway never reaches another gateway\'s sub-device, even when it may create', async () => {
    expect((await t.api('PATCH', '/api/v1/devices/gw-b', { createSubDevices: true })).body.createSubDevices).toBe(true);
    const b = gws[1]!;
    const ts = Date.now();
    await b.publish('v1/gateway/telemetry', { [PUMP]: [{ ts, values: { temperature: -40 } }] });
    await b.publish('v1/gateway/disconnect', { device: PUMP });
    expect((await history(subDeviceId(PUMP), 'temperature', ts - 1)).points).toEqual([]);
    expect((await t.api('GET', `/api/v1/devices/${subDeviceId(PUMP)}`)).body).toMatchObject({ online: true, gateway: { id: 'gw-a' } });
    const refused = (await t.api('GET', '/api/v1/devices/gw-b')).body.refusedSubDevices;
    expect(refused).toContainEqual(expect.objectContaining({ name: PUMP, reason: 'other_gateway', count: 1 }));
    // Its own new name is created, in its own area.
    await b.publish('v1/gateway/connect', { device: 'Van 3', type: 'valve' });
    expect((await t.api('GET', `/api/v1/devices/${subDeviceId('Van 3')}`)).body).toMatchObject({ area: 'cb', model: 'valve', gateway: { id: 'gw-b' } });
  });

  it('a device that is not a gateway cannot use v1/gateway topics', async () => {
    const r = await t.api('POST', '/api/v1/devices', { id: 'sensor-x', kind: 'sensor', name: 'x', area: 'ca' });
    const c = await connectDevice(t.mqttUrl, 'sensor-x', r.body.secret as string);
    const before = await metric('keng_rejected_total{reason="unknown_topic"}');
    await publish(c, 'v1/gateway/telemetry', JSON.stringify({ [PUMP]: [{ values: { temperature: 5 } }] }));
    expect(await metric('keng_rejected_total{reason="unknown_topic"}')).toBe(before + 1);
    await end(c);
  });

  it('an MQTT 5 client (current ThingsBoard IoT Gateway releases) is refused at CONNECT and counted', async () => {
    const before = await metric('keng_mqtt_refused_total{op="connect",reason="protocol_version"}');
    const script = [
      'import sys, time, paho.mqtt.client as mqtt',
      'c = mqtt.Client(client_id="", protocol=mqtt.MQTTv5)',
      'c.username_pw_set(sys.argv[2])',
      'c.connect("127.0.0.1", int(sys.argv[1]))',
      'c.loop_start(); time.sleep(1.5); c.loop_stop()',
      'print("connected" if c.is_connected() else "refused")',
    ].join('\n');
    // Asynchronously: Keng runs in this process and must answer while the client waits.
    const { execFile } = await import('node:child_process');
    const out = await new Promise<string>((resolve, reject) => {
      execFile('/usr/bin/python3', ['-c', script, String(t.mqttPort), tokens['gw-a']!], { encoding: 'utf8', timeout: 20_000 },
        (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    expect(out.trim()).toBe('refused');
    // paho retries in its loop: at least one refusal.
    expect(await metric('keng_mqtt_refused_total{op="connect",reason="protocol_version"}')).toBeGreaterThan(before);
  });

  it('disconnect, then the gateway going away, take the sub-devices offline', async () => {
    await a.publish('v1/gateway/disconnect', { device: PUMP });
    expect((await t.api('GET', `/api/v1/devices/${subDeviceId(PUMP)}`)).body.online).toBe(false);
    expect((await t.api('GET', `/api/v1/devices/${subDeviceId(SOIL)}`)).body.online).toBe(true);
    await a.quit();
    await waitFor(async () => (await t.api('GET', `/api/v1/devices/${subDeviceId(SOIL)}`)).body.online === false, 10_000);
  });
});
