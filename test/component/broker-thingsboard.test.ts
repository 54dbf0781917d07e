/**
 * Spec "ThingsBoard compatibility": a token device uses v1/devices/me/...;
 * its SDK's four subscriptions are granted; server-side publishes use the
 * real id and reach it on the `me` topic; client-side requests are allowed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { startBroker, until, type BrokerHarness } from '../helpers/fakes-broker.js';

let h: BrokerHarness | undefined;
afterEach(async () => { await h?.stop(); h = undefined; });

const TB_SUBS = ['v1/devices/me/attributes', 'v1/devices/me/attributes/response/+', 'v1/devices/me/rpc/request/+', 'v1/devices/me/rpc/response/+'];

async function tbClient(harness: BrokerHarness, token = 'TOKENSPK01xxxxxxxxx', clientId = 'tb-spk'): Promise<{ c: MqttClient; msgs: string[]; granted: number[] }> {
  const c = await harness.connect({ clientId, username: token });
  const msgs: string[] = [];
  c.on('message', (t, p) => msgs.push(`${t} ${p.toString()}`));
  const granted = await new Promise<number[]>((resolve, reject) => c.subscribe(TB_SUBS, { qos: 1 }, (err, g) => (err ? reject(err) : resolve((g ?? []).map((x) => x.qos)))));
  return { c, msgs, granted };
}

describe('AedesBroker ThingsBoard compatibility', () => {
  it('grants the SDK subscriptions and delivers server RPC / attributes on the me topics', async () => {
    h = await startBroker();
    const { c, msgs, granted } = await tbClient(h);
    expect(granted).toEqual([1, 1, 1, 1]);
    await h.broker.publish('v1/devices/spk-01/rpc/request/15', '{"method":"speaker.setVolume","params":{"volume":40}}');
    await h.broker.publish('v1/devices/spk-01/attributes/response/3', '{"client":{},"shared":{}}');
    await h.broker.publish('v1/devices/spk-01/rpc/response/4', '{"maxPayloadSize":4096}');
    await h.broker.publish('v1/devices/spk-01/attributes', '{"volume":50}');
    await until(() => msgs.length >= 4);
    expect(msgs.sort()).toEqual([
      'v1/devices/me/attributes {"volume":50}',
      'v1/devices/me/attributes/response/3 {"client":{},"shared":{}}',
      'v1/devices/me/rpc/request/15 {"method":"speaker.setVolume","params":{"volume":40}}',
      'v1/devices/me/rpc/response/4 {"maxPayloadSize":4096}',
    ]);
    expect(c.connected).toBe(true);
  });

  it('another token device does not receive it', async () => {
    h = await startBroker();
    const spk = await tbClient(h);
    const other = await tbClient(h, 'TOKENSOIL01xxxxxxxx', 'tb-soil');
    await h.broker.publish('v1/devices/spk-01/rpc/request/1', '{"method":"broadcast.stop"}');
    await until(() => spk.msgs.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(other.msgs).toEqual([]);
  });

  it('publishes on me topics reach the handler as the real device, including client-side requests, and are not echoed back', async () => {
    h = await startBroker();
    const { c, msgs } = await tbClient(h);
    const pub = (t: string, p: string): Promise<void> => new Promise((r, j) => c.publish(t, p, { qos: 1 }, (e) => (e ? j(e) : r())));
    await pub('v1/devices/me/telemetry', '{"volume":40,"playing":true}');
    await pub('v1/devices/me/attributes', '{"fw":"2.0"}');
    await pub('v1/devices/me/rpc/response/15', '{"status":"ok"}');
    await pub('v1/devices/me/rpc/request/1', '{"method":"getSessionLimits","params":{}}');
    await pub('v1/devices/me/attributes/request/2', '{"clientKeys":"fw","sharedKeys":"volume"}');
    expect(h.handler.messages.map((m) => [m.identity.deviceId, m.identity.viaToken, m.type, m.requestId])).toEqual([
      ['spk-01', true, 'telemetry', undefined],
      ['spk-01', true, 'attributes', undefined],
      ['spk-01', true, 'rpc.response', '15'],
      ['spk-01', true, 'rpc.request', '1'],
      ['spk-01', true, 'attributes.request', '2'],
    ]);
    await new Promise((r) => setTimeout(r, 150));
    expect(msgs).toEqual([]); // its own attributes / rpc request / rpc response were not routed back to it
  });

  it('unsubscribing a me filter stops deliveries', async () => {
    h = await startBroker();
    const { c, msgs } = await tbClient(h);
    await new Promise<void>((r) => c.unsubscribe('v1/devices/me/rpc/request/+', () => r()));
    await new Promise((r) => setTimeout(r, 50));
    await h.broker.publish('v1/devices/spk-01/rpc/request/1', '{}');
    await h.broker.publish('v1/devices/spk-01/attributes', '{"a":1}');
    await until(() => msgs.length >= 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(msgs).toEqual(['v1/devices/me/attributes {"a":1}']);
  });

  it('a token client subscribing with the real id gets real-id topics', async () => {
    h = await startBroker();
    const c = await h.connect({ clientId: 'tb-real', username: 'TOKENSPK01xxxxxxxxx' });
    const msgs: string[] = [];
    c.on('message', (t) => msgs.push(t));
    await new Promise<void>((r) => c.subscribe('v1/devices/spk-01/rpc/request/+', { qos: 1 }, () => r()));
    await h.broker.publish('v1/devices/spk-01/rpc/request/8', '{}');
    await until(() => msgs.length === 1);
    expect(msgs).toEqual(['v1/devices/spk-01/rpc/request/8']);
  });
});
