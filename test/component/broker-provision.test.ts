/**
 * The broker's provisioning sessions alone (src/broker/provision-session.ts),
 * over real MQTT with a recording provisioner: the answer reaches a session
 * that never subscribed, at the QoS of its subscription when it has one;
 * one request per session; a session without a request is closed after
 * sessionMs; over the per-address limit the provisioner is not even asked;
 * nothing routed to or from other clients.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import type { DeviceProvisioner, ProvisionAnswer } from '../../src/devices/provisioning.js';
import { startBroker, until, type BrokerHarness } from '../helpers/fakes-broker.js';

const OK: ProvisionAnswer = { credentialsValue: 'TOKEN-NEW', credentialsType: 'ACCESS_TOKEN', status: 'SUCCESS' };

class RecordingProvisioner implements DeviceProvisioner {
  readonly calls: Array<{ payload: string; ip: string | null }> = [];
  async provision(payload: Buffer, from: { ip: string | null }): Promise<ProvisionAnswer> {
    this.calls.push({ payload: payload.toString(), ip: from.ip });
    return OK;
  }
}

let h: BrokerHarness | undefined;
afterEach(async () => { await h?.stop(); h = undefined; });

function messages(c: MqttClient): Array<{ topic: string; payload: string; qos: number }> {
  const out: Array<{ topic: string; payload: string; qos: number }> = [];
  c.on('message', (topic, payload, packet) => out.push({ topic, payload: payload.toString(), qos: packet.qos }));
  return out;
}
const closed = (c: MqttClient): Promise<number> => {
  const t0 = Date.now();
  return new Promise((resolve) => c.once('close', () => resolve(Date.now() - t0)));
};

describe('AedesBroker provisioning sessions', () => {
  it('answers a session that never subscribed, then closes it after answerGraceMs', async () => {
    const p = new RecordingProvisioner();
    h = await startBroker({}, {}, { provisioner: p, provisionTuning: { answerGraceMs: 300 } });
    const c = await h.connect({ username: 'provision', clientId: 'soil-01' });
    const got = messages(c);
    const gone = closed(c);
    c.publish('/provision/request', '{"deviceName":"a","provisionDeviceKey":"k","provisionDeviceSecret":"s"}', { qos: 1 });
    await until(() => got.length === 1);
    expect(got[0]).toEqual({ topic: '/provision/response', payload: JSON.stringify(OK), qos: 0 });
    expect(p.calls).toEqual([{ payload: '{"deviceName":"a","provisionDeviceKey":"k","provisionDeviceSecret":"s"}', ip: expect.stringMatching(/127\.0\.0\.1/) }]);
    expect(await gone).toBeLessThan(5_000);
    // Its client id was a device's: the device's session was not touched.
    expect(h.presence.events).toEqual([]);
  });

  it('answers at QoS 1 when subscribed with QoS 1; a second request in the session is ignored', async () => {
    const p = new RecordingProvisioner();
    h = await startBroker({}, {}, { provisioner: p });
    const c = await h.connect({ username: 'provision' });
    const got = messages(c);
    await new Promise<void>((resolve, reject) => c.subscribe('/provision/response', { qos: 1 }, (e) => (e ? reject(e) : resolve())));
    c.publish('/provision/request', '{}', { qos: 1 });
    await until(() => got.length === 1);
    expect(got[0]!.qos).toBe(1);
    c.publish('/provision/request', '{}', { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect(p.calls).toHaveLength(1);
    expect(got).toHaveLength(1);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'provision_repeat' })).toBe(1);
  });

  it('a session that sends no request is closed after sessionMs', async () => {
    h = await startBroker({}, {}, { provisioner: new RecordingProvisioner(), provisionTuning: { sessionMs: 400 } });
    const c = await h.connect({ username: 'provision', keepalive: 0 });
    const ms = await closed(c);
    expect(ms).toBeGreaterThanOrEqual(300);
    expect(ms).toBeLessThan(5_000);
  });

  it('over the per-address limit the provisioner is not asked and the answer is FAILURE', async () => {
    const p = new RecordingProvisioner();
    h = await startBroker({}, {}, { provisioner: p, provisionTuning: { perIpPerMinute: 2 } });
    const answers: string[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await h.connect({ username: 'provision' });
      const got = messages(c);
      c.publish('/provision/request', '{}', { qos: 0 });
      await until(() => got.length === 1);
      answers.push(got[0]!.payload);
      c.end(true);
    }
    expect(p.calls).toHaveLength(2);
    expect(JSON.parse(answers[2]!)).toEqual({ errorMsg: 'Too many provision requests from this address: try again later', status: 'FAILURE' });
  });

  it('its answer reaches nobody else, and a device cannot answer in its place', async () => {
    const p = new RecordingProvisioner();
    h = await startBroker({}, {}, { provisioner: p });
    const other = await h.connect({ username: 'provision' });
    const seenByOther = messages(other);
    await new Promise<void>((resolve) => other.subscribe('/provision/response', { qos: 0 }, () => resolve()));
    const dev = await h.connect({ username: 'soil-01', password: 'secret-soil-01', clientId: 'soil-01' });
    dev.publish('/provision/response', '{"status":"SUCCESS","credentialsValue":"FORGED"}', { qos: 1 });
    const c = await h.connect({ username: 'provision' });
    const got = messages(c);
    c.publish('/provision/request', '{}', { qos: 0 });
    await until(() => got.length === 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(seenByOther).toEqual([]);
    expect(got.map((m) => m.payload)).toEqual([JSON.stringify(OK)]);
  });

  it('without a provisioner the provision login is an unknown device (CONNACK 4), as before', async () => {
    h = await startBroker();
    await expect(h.connect({ username: 'provision' })).rejects.toMatchObject({ code: 4 });
  });
});
