/**
 * Spec "Access rules": presence does not depend on a status message: connect
 * and disconnect (including keep-alive loss) update online; a replaced
 * connection must not mark the new one offline. The device's own status
 * (retained, and its Last Will) goes to the handler as type 'status'.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { rawConnect, startBroker, until, type BrokerHarness } from '../helpers/fakes-broker.js';

let h: BrokerHarness | undefined;
afterEach(async () => { await h?.stop(); h = undefined; });

const soil1 = { clientId: 'soil-01', username: 'soil-01', password: 'secret-soil-01' };

async function retainedStatus(harness: BrokerHarness, deviceId: string): Promise<unknown> {
  // Only the server can read device status topics (devices may not subscribe to them):
  // read the retained message through aedes' persistence via a server-side subscription.
  const aedes = (harness.broker as unknown as { aedes: { persistence: { createRetainedStream(p: string): AsyncIterable<{ payload: Buffer }> } } }).aedes;
  for await (const p of aedes.persistence.createRetainedStream(`v1/devices/${deviceId}/status`)) return JSON.parse(p.payload.toString());
  return undefined;
}

describe('AedesBroker presence', () => {
  it('online on connect, offline on clean disconnect; retained server status both times', async () => {
    h = await startBroker();
    const c = await h.connect(soil1);
    await until(() => h!.presence.online.get('soil-01') === true);
    expect(await retainedStatus(h, 'soil-01')).toMatchObject({ online: true, at: expect.any(Number) });
    await new Promise<void>((r) => c.end(false, {}, () => r()));
    await until(() => h!.presence.online.get('soil-01') === false);
    expect(await retainedStatus(h, 'soil-01')).toMatchObject({ online: false });
    expect(h.presence.events.map((e) => e.online)).toEqual([true, false]);
    expect(await h.counter('keng_mqtt_connections')).toBe(0);
  });

  it('offline on keep-alive loss (silent raw socket, keepalive 1 s → closed after 1.5 s)', async () => {
    h = await startBroker();
    const raw = await rawConnect(h.port, { clientId: 'silent', username: 'soil-01', password: 'secret-soil-01', keepalive: 1 });
    expect([...(await raw.connack)]).toEqual([0x20, 2, 0, 0]);
    await until(() => h!.presence.online.get('soil-01') === true);
    const t0 = Date.now();
    await until(() => h!.presence.online.get('soil-01') === false, 5000, 'keep-alive loss');
    const took = Date.now() - t0;
    expect(took).toBeGreaterThan(1000);
    expect(took).toBeLessThan(3000);
    await raw.closed;
    expect(h.broker.isConnected('soil-01')).toBe(false);
  });

  it('offline when the socket just drops (no DISCONNECT)', async () => {
    h = await startBroker();
    const raw = await rawConnect(h.port, { clientId: 'dropper', username: 'soil-01', password: 'secret-soil-01', keepalive: 60 });
    await raw.connack;
    await until(() => h!.presence.online.get('soil-01') === true);
    raw.sock.destroy();
    await until(() => h!.presence.online.get('soil-01') === false);
  });

  it('a replaced connection (different client id) does not mark the device offline', async () => {
    h = await startBroker();
    const a = await h.connect({ ...soil1, clientId: 'a', will: { topic: 'v1/devices/soil-01/status', payload: Buffer.from('{"online":false}'), qos: 1, retain: true } });
    const aClosed = new Promise<void>((r) => a.once('close', () => r()));
    await h.connect({ ...soil1, clientId: 'b' });
    await aClosed;
    await new Promise((r) => setTimeout(r, 200));
    expect(h.presence.online.get('soil-01')).toBe(true);
    expect(h.presence.events.filter((e) => !e.online)).toEqual([]);
    expect(h.broker.isConnected('soil-01')).toBe(true);
    // the replaced connection's will was suppressed: the handler saw no offline status
    expect(h.handler.messages.filter((m) => m.type === 'status')).toEqual([]);
  });

  it('a replaced connection with the same client id (aedes takeover) does not mark the device offline', async () => {
    h = await startBroker();
    const a = await h.connect({ ...soil1, clientId: 'same', will: { topic: 'v1/devices/soil-01/status', payload: Buffer.from('{"online":false}'), qos: 1, retain: true } });
    const aClosed = new Promise<void>((r) => a.once('close', () => r()));
    const b = await h.connect({ ...soil1, clientId: 'same' });
    await aClosed;
    await new Promise((r) => setTimeout(r, 200));
    expect(b.connected).toBe(true);
    expect(h.presence.online.get('soil-01')).toBe(true);
    expect(h.presence.events.filter((e) => !e.online)).toEqual([]);
    expect(h.broker.connectedCount()).toBe(1);
    expect(h.handler.messages.filter((m) => m.type === 'status')).toEqual([]);
    // and the new connection still works end to end
    await new Promise<void>((r, j) => b.publish('v1/devices/soil-01/telemetry', '{"x":1}', { qos: 1 }, (e) => (e ? j(e) : r())));
    expect(h.handler.messages.map((m) => m.type)).toEqual(['telemetry']);
  });

  it("the device's own retained status and its Last Will reach the handler as type 'status'", async () => {
    h = await startBroker();
    const will = { topic: 'v1/devices/soil-01/status', payload: Buffer.from('{"online":false}'), qos: 1 as const, retain: true };
    const c = await h.connect({ ...soil1, will });
    await new Promise<void>((r) => c.publish('v1/devices/soil-01/status', '{"online":true,"fw":"1.2"}', { qos: 1, retain: true }, () => r()));
    expect(h.handler.messages[0]).toMatchObject({ type: 'status', retain: true });
    expect(await retainedStatus(h, 'soil-01')).toMatchObject({ online: true, fw: '1.2' });
    c.stream.destroy(); // crash: the will is published
    await h.handler.waitFor(2);
    expect(h.handler.messages[1]).toMatchObject({ type: 'status' });
    expect(h.handler.messages[1]!.payload.toString()).toBe('{"online":false}');
    await until(() => h!.presence.online.get('soil-01') === false);
  });
});
