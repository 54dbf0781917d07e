/**
 * Sensor-triggered warnings with the whole app (docs/alerts.md): two real
 * MQTT water-level sensors pass a rule's threshold, a pending alert appears
 * for approval, the live feed tells the operators of the area (and no one
 * else), an operator of another commune can neither see nor change the rule,
 * and the water going down rejects the pending alert. Real clock, forSec 1 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io as ioc, type Socket } from 'socket.io-client';
import type { MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedCommune } from '../helpers/seed.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import type { Authenticator, Principal } from '../../src/auth/types.js';

const PRINCIPALS: Record<string, Principal> = {
  'operator-of-a-token-012345678': { kind: 'token', id: 'operator-a', role: 'operator', areas: ['ca'] },
  'operator-of-b-token-012345678': { kind: 'token', id: 'operator-b', role: 'operator', areas: ['cb'] },
};
const testAuth: Authenticator = { authenticate: (tok) => PRINCIPALS[tok] ?? null };
const [OP_A, OP_B] = Object.keys(PRINCIPALS) as [string, string];

let t: TestApp;
const secrets: Record<string, string> = {};
const gauges: Record<string, MqttClient> = {};
const sockets: Socket[] = [];

const RULE = {
  name: 'Mực nước sông Tân Lập', area: 'ca', kind: 'sensor', field: 'water_level_cm', op: '>', threshold: 250, clearThreshold: 230,
  forSec: 1, minDevices: 2, cooldownSec: 0,
  alert: {
    event: 'Lũ', severity: 'Severe', urgency: 'Immediate', certainty: 'Observed',
    headline: 'Mực nước sông vượt báo động 3', instruction: 'Bà con vùng trũng di chuyển lên chỗ cao.', expiresAfterSec: 3600,
  },
};

const level = (id: string, cm: number) => publish(gauges[id]!, `v1/devices/${id}/telemetry`, JSON.stringify([{ ts: Date.now(), values: { water_level_cm: cm } }]));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A live-feed client subscribed to `area`, collecting `alert.rule` events. */
async function watcher(token: string, area: string): Promise<any[]> {
  const s = ioc(t.httpUrl, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token } });
  sockets.push(s);
  const got: any[] = [];
  s.on('alert.rule', (m) => got.push(m));
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
  expect(await s.timeout(5000).emitWithAck('subscribe', { areas: [area] })).toMatchObject({ ok: true });
  return got;
}

beforeAll(async () => {
  t = await startTestApp();
  t.app.authenticator.add(testAuth);
  Object.assign(secrets, await seedCommune(t, [['g1', 'va1', 'sensor'], ['g2', 'ca', 'sensor'], ['gb', 'cb', 'sensor'], ['spk-a1', 'va1', 'speaker']] as const));
  for (const id of ['g1', 'g2', 'gb']) gauges[id] = await connectDevice(t.mqttUrl, id, secrets[id]);
});

afterAll(async () => {
  for (const s of sockets) s.disconnect();
  await Promise.all(Object.values(gauges).map((c) => end(c)));
  await t?.stop();
});

describe('sensor-triggered warnings', () => {
  let ruleId: string;
  let alertId: string;

  it('two gauges over the threshold raise an alert waiting for approval, announced to the area\'s operators only', async () => {
    const created = await t.api('POST', '/api/v1/alert-rules', RULE, OP_A);
    expect(created.status).toBe(201);
    ruleId = created.body.id;
    expect(created.body).toMatchObject({ area: 'ca', aggregate: 'value', enabled: true, createdBy: 'operator-a', state: { firing: false }, alert: { status: 'Actual' } });
    const seenByA = await watcher(OP_A, 'ca');
    const seenByB = await watcher(OP_B, 'cb');

    await level('g1', 262);
    await level('gb', 400); // another commune: does not count
    await sleep(1500);
    expect((await t.api('GET', '/api/v1/alerts', undefined, OP_A)).body).toEqual([]); // one gauge is not two

    await level('g2', 258);
    const pending = await waitFor(async () => {
      const r = await t.api('GET', '/api/v1/alerts?state=pending_approval', undefined, OP_A);
      return r.body.length ? r.body : undefined;
    }, 20_000);
    expect(pending).toHaveLength(1);
    alertId = pending[0].id;
    expect(pending[0]).toMatchObject({
      state: 'pending_approval', status: 'Actual', areas: ['ca'], createdBy: `rule:${ruleId}`, headline: RULE.alert.headline,
    });
    expect(pending[0].note).toContain('g1 262, g2 258');

    const rule = (await t.api('GET', `/api/v1/alert-rules/${ruleId}`, undefined, OP_A)).body;
    expect(rule.state).toMatchObject({ firing: true, alertId });
    expect(rule.devices.map((d: any) => [d.deviceId, d.value, d.inCondition])).toEqual([['g1', 262, true], ['g2', 258, true]]);

    await waitFor(() => seenByA.length > 0);
    expect(seenByA[0]).toMatchObject({ ruleId, change: 'fired', area: 'ca', alertId, alertState: 'pending_approval' });
    expect(seenByA[0].at).toMatch(/\+07:00$/);
    expect(seenByB).toEqual([]);
  }, 40_000);

  it('an operator of another commune can neither see nor change the rule, nor make one in this commune', async () => {
    expect((await t.api('GET', '/api/v1/alert-rules', undefined, OP_B)).body).toEqual([]);
    for (const [method, body] of [['GET', undefined], ['PATCH', { threshold: 1000 }], ['DELETE', undefined]] as const) {
      const r = await t.api(method, `/api/v1/alert-rules/${ruleId}`, body, OP_B);
      expect([method, r.status, r.body.error.code]).toEqual([method, 404, 'KENG_ERR_NOT_FOUND']);
    }
    expect((await t.api('POST', '/api/v1/alert-rules', RULE, OP_B)).status).toBe(403);
    expect((await t.api('GET', '/api/v1/alerts', undefined, OP_B)).body).toEqual([]);
    expect((await t.api('GET', `/api/v1/alert-rules/${ruleId}`, undefined, OP_A)).body.threshold).toBe(250);
  });

  it('the water going back below the clear threshold rejects the pending alert', async () => {
    await level('g1', 240); // between 230 and 250: still in condition
    await sleep(300);
    expect((await t.api('GET', `/api/v1/alerts/${alertId}`, undefined, OP_A)).body.state).toBe('pending_approval');
    await level('g1', 220);
    await level('g2', 225);
    const rejected = await waitFor(async () => {
      const r = await t.api('GET', `/api/v1/alerts/${alertId}`, undefined, OP_A);
      return r.body.state === 'rejected' ? r.body : undefined;
    }, 10_000);
    expect(rejected).toMatchObject({ endReason: 'condition ended', endedBy: `rule:${ruleId}` });
    const rule = (await t.api('GET', `/api/v1/alert-rules/${ruleId}`, undefined, OP_A)).body;
    expect(rule.state).toMatchObject({ firing: false, alertId });

    const audit = (await t.api('GET', '/api/v1/audit?limit=100')).body;
    const actions = (audit.entries ?? audit).map((e: any) => `${e.actor} ${e.action}`);
    expect(actions).toEqual(expect.arrayContaining([
      'token:operator-a alert-rule.create', `system:rule:${ruleId} alert.create`, `system:rule:${ruleId} alert-rule.fire`,
      `system:rule:${ruleId} alert.reject`, `system:rule:${ruleId} alert-rule.clear`,
    ]));
  }, 30_000);

  it('a person approves the rule\'s alert (the rule raised it); the condition ending then leaves it playing', async () => {
    await level('g1', 270);
    await level('g2', 270);
    const pending = await waitFor(async () => {
      const r = await t.api('GET', '/api/v1/alerts?state=pending_approval', undefined, OP_A);
      return r.body.length ? r.body[0] : undefined;
    }, 20_000);
    const approved = await t.api('POST', `/api/v1/alerts/${pending.id}/approve`, {}, OP_A);
    expect([approved.status, approved.body.state]).toEqual([200, 'active']);
    await level('g1', 200);
    await level('g2', 200);
    await waitFor(async () => !(await t.api('GET', `/api/v1/alert-rules/${ruleId}`, undefined, OP_A)).body.state.firing, 10_000);
    expect((await t.api('GET', `/api/v1/alerts/${pending.id}`, undefined, OP_A)).body.state).toBe('active');
    expect((await t.api('POST', `/api/v1/alerts/${pending.id}/cancel`, {}, OP_A)).status).toBe(200);
  }, 40_000);

  it('is in the OpenAPI document; deleting the rule keeps its alerts', async () => {
    const doc = (await t.api('GET', '/docs/json')).body;
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/api/v1/alert-rules', '/api/v1/alert-rules/{id}']));
    expect((await t.api('DELETE', `/api/v1/alert-rules/${ruleId}`, undefined, OP_A)).status).toBe(204);
    expect((await t.api('GET', `/api/v1/alert-rules/${ruleId}`, undefined, OP_A)).status).toBe(404);
    expect((await t.api('GET', `/api/v1/alerts/${alertId}`, undefined, OP_A)).status).toBe(200);
  });
});
