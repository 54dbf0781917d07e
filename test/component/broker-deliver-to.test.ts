/**
 * BrokerPort.deliverTo (device protocol §13.3): the answer to a device's own request is written to
 * its connection even before it subscribed, in the topic form the request used, only to that
 * device; credentialOf tells token sessions from secret ones; a token device's claim topic reaches
 * the handler as `claim` (an id + secret device's is refused as before).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startBroker, until, type BrokerHarness } from '../helpers/fakes-broker.js';

let h: BrokerHarness | undefined;
afterEach(async () => { await h?.stop(); h = undefined; });

describe('AedesBroker.deliverTo', () => {
  it('writes to a device that has not subscribed, in the form it asked (me or real id), and to no one else', async () => {
    h = await startBroker();
    const tb = await h.connect({ clientId: 'tb-spk', username: 'TOKENSPK01xxxxxxxxx' });
    const other = await h.connect({ clientId: 'soil-01', username: 'soil-01', password: 'secret-soil-01' });
    const got: string[] = [];
    const otherGot: string[] = [];
    tb.on('message', (t, p) => got.push(`${t} ${p.toString()}`));
    other.on('message', (t) => otherGot.push(t));
    await new Promise<void>((r) => other.subscribe('v1/devices/soil-01/rpc/request/+', () => r()));

    expect(h.broker.credentialOf('spk-01')).toBe('token');
    expect(h.broker.credentialOf('soil-01')).toBe('secret');
    expect(h.broker.credentialOf('soil-02')).toBeNull();

    expect(await h.broker.deliverTo('spk-01', 'v1/devices/spk-01/attributes/response/1', '{"client":{},"shared":{}}', { viaMe: true })).toBe(true);
    expect(await h.broker.deliverTo('spk-01', 'v1/devices/spk-01/rpc/response/2', '{"a":1}')).toBe(true);
    // Never another device's topic, even when asked to deliver it (authorizeForward still applies).
    expect(await h.broker.deliverTo('spk-01', 'v1/devices/soil-01/rpc/request/9', '{}')).toBe(true);
    expect(await h.broker.deliverTo('soil-02', 'v1/devices/soil-02/rpc/response/1', '{}')).toBe(false); // not connected
    await until(() => got.length >= 2);
    await new Promise((r) => setTimeout(r, 150));
    expect(got).toEqual([
      'v1/devices/me/attributes/response/1 {"client":{},"shared":{}}',
      'v1/devices/spk-01/rpc/response/2 {"a":1}',
    ]);
    expect(otherGot).toEqual([]);
  });

  it('a token device publishing on v1/devices/me/claim reaches the handler as claim; an id + secret device is refused', async () => {
    h = await startBroker();
    const tb = await h.connect({ clientId: 'tb-spk', username: 'TOKENSPK01xxxxxxxxx' });
    const sec = await h.connect({ clientId: 'soil-01', username: 'soil-01', password: 'secret-soil-01' });
    const pub = (c: typeof tb, t: string, p: string): Promise<void> => new Promise((r, j) => c.publish(t, p, { qos: 1 }, (e) => (e ? j(e) : r())));
    await pub(tb, 'v1/devices/me/claim', '{"secretKey":"k","durationMs":30000}');
    await pub(tb, 'v1/devices/me/rpc/request/3', '{"method":"getSessionLimits"}');
    await pub(sec, 'v1/devices/soil-01/claim', '{}');
    expect(h.handler.messages.map((m) => [m.identity.deviceId, m.type, m.requestId, m.viaMe])).toEqual([
      ['spk-01', 'claim', undefined, undefined],
      ['spk-01', 'rpc.request', '3', true],
    ]);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'publish', reason: 'forbidden_topic' })).toBe(1);
  });
});
