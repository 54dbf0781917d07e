/**
 * Spec device-protocol.md "Connection": id + secret, or access token as
 * username (password ignored or absent); unknown, wrong-secret and disabled
 * devices refused at CONNECT. A second connection replaces the first.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startBroker, until, type BrokerHarness } from '../helpers/fakes-broker.js';

let h: BrokerHarness;
beforeEach(async () => { h = await startBroker(); });
afterEach(async () => { await h.stop(); });

/** CONNACK session-present flag as mqtt.js recorded it. */
function sessionPresent(c: unknown): boolean {
  return Boolean((c as { connackPacket?: { sessionPresent?: boolean } }).connackPacket?.sessionPresent);
}

function refusal(p: Promise<unknown>): Promise<number> {
  return p.then(() => { throw new Error('connect unexpectedly accepted'); }, (err: { code?: number }) => err.code ?? -1);
}

describe('AedesBroker CONNECT', () => {
  it('accepts id + secret', async () => {
    const c = await h.connect({ clientId: 'soil-01', username: 'soil-01', password: 'secret-soil-01' });
    expect(c.connected).toBe(true);
    await until(() => h.broker.isConnected('soil-01'));
    expect(h.broker.connectedCount()).toBe(1);
    expect(await h.counter('keng_mqtt_connects_total')).toBe(1);
    expect(await h.counter('keng_mqtt_connections')).toBe(1);
  });

  it('accepts an access token with no password, and with a placeholder password', async () => {
    const a = await h.connect({ clientId: 'tb-a', username: 'TOKENSOIL01xxxxxxxx' });
    expect(a.connected).toBe(true);
    const b = await h.connect({ clientId: 'tb-b', username: 'TOKENSOIL02xxxxxxxx', password: 'anything' });
    expect(b.connected).toBe(true);
    await until(() => h.broker.connectedCount() === 2);
  });

  it('MQTT 3.1.1 (aedes caps client ids for 3.1 only): ids longer than 23 characters up to 256 are accepted; longer ones get CONNACK 2', async () => {
    // h.connect speaks protocolVersion 4 (3.1.1); the cap is Keng's (aedes-broker.ts maxClientsIdLength).
    const c = await h.connect({ clientId: 'x'.repeat(256), username: 'soil-01', password: 'secret-soil-01' });
    expect(c.connected).toBe(true);
    expect(await refusal(h.connect({ clientId: 'x'.repeat(257), username: 'soil-02', password: 'secret-soil-02' }))).toBe(2);
    expect(await refusal(h.connect({ clientId: 'y'.repeat(65_000), username: 'soil-02', password: 'secret-soil-02' }))).toBe(2);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'client_id_too_long' })).toBe(2);
  });

  it('refuses a wrong secret (CONNACK 4) and counts it', async () => {
    expect(await refusal(h.connect({ clientId: 'c1', username: 'soil-01', password: 'nope' }))).toBe(4);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'bad_secret' })).toBe(1);
    expect(h.broker.isConnected('soil-01')).toBe(false);
  });

  it('refuses an unknown device (CONNACK 4)', async () => {
    expect(await refusal(h.connect({ clientId: 'c2', username: 'ghost-99', password: 'x' }))).toBe(4);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'unknown_device' })).toBe(1);
  });

  it('refuses a disabled device (CONNACK 5 not authorized), by secret and by token', async () => {
    expect(await refusal(h.connect({ clientId: 'c3', username: 'off-01', password: 'secret-off-01' }))).toBe(5);
    expect(await refusal(h.connect({ clientId: 'c4', username: 'TOKENOFF01xxxxxxxxx' }))).toBe(5);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'disabled' })).toBe(2);
  });

  it('refuses a CONNECT without username (CONNACK 4)', async () => {
    expect(await refusal(h.connect({ clientId: 'c5' }))).toBe(4);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'bad_credentials' })).toBe(1);
  });

  it('a device may not use another device\'s id as client id (CONNACK 2), clean or persistent; the owner keeps connecting', async () => {
    const a = await h.connect({ clientId: 'soil-01', username: 'soil-01', password: 'secret-soil-01' });
    for (const clean of [true, false]) {
      expect(await refusal(h.connect({ clientId: 'soil-01', clean, username: 'soil-02', password: 'secret-soil-02' }))).toBe(2);
      expect(await refusal(h.connect({ clientId: 'soil-01', clean, username: 'TOKENSPK01xxxxxxxxx' }))).toBe(2);
    }
    expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'client_id_in_use' })).toBe(4);
    await new Promise((r) => setTimeout(r, 100));
    expect(a.connected).toBe(true);
    a.end(true);
    await until(() => !h.broker.isConnected('soil-01'));
    // The owner reconnects, with a persistent session too.
    const again = await h.connect({ clientId: 'soil-01', clean: false, username: 'soil-01', password: 'secret-soil-01' });
    expect(again.connected).toBe(true);
  });

  it('two devices with the same self-chosen client id each keep their own connection and session', async () => {
    const a = await h.connect({ clientId: 'esp32', username: 'soil-01', password: 'secret-soil-01' });
    const b = await h.connect({ clientId: 'esp32', username: 'soil-02', password: 'secret-soil-02' });
    await until(() => h.broker.connectedCount() === 2);
    await new Promise((r) => setTimeout(r, 100));
    expect(a.connected && b.connected).toBe(true);
    expect(h.broker.isConnected('soil-01') && h.broker.isConnected('soil-02')).toBe(true);
  });

  it('a persistent session belongs to its device: another device cannot resume it; a deleted device\'s session ends', async () => {
    const sub = (c: Awaited<ReturnType<typeof h.connect>>) => new Promise<void>((r) => c.subscribe('v1/devices/soil-01/rpc/request/+', { qos: 1 }, () => r()));
    const a = await h.connect({ clientId: 'fw-1', clean: false, username: 'soil-01', password: 'secret-soil-01' });
    await sub(a);
    a.end(true);
    await until(() => !h.broker.isConnected('soil-01'));
    // soil-02 with the same client id and clean=false: a session of its own, nothing of soil-01's.
    const b = await h.connect({ clientId: 'fw-1', clean: false, username: 'soil-02', password: 'secret-soil-02' });
    expect(sessionPresent(b)).toBe(false);
    // soil-01 comes back (any client id): its session is there, and a command queued while it was away arrives.
    await h.broker.publish('v1/devices/soil-01/rpc/request/r9', '{"method":"x"}');
    const back = await h.connect({ clientId: 'fw-1', clean: false, username: 'soil-01', password: 'secret-soil-01' });
    expect(sessionPresent(back)).toBe(true);
    const got: string[] = [];
    back.on('message', (t) => got.push(t));
    await until(() => got.length === 1);
    expect(got).toEqual(['v1/devices/soil-01/rpc/request/r9']);
    back.end(true);
    await until(() => !h.broker.isConnected('soil-01'));
    // Deleted: the stored subscription and queued messages go with it.
    await h.broker.publish('v1/devices/soil-01/rpc/request/r10', '{"method":"x"}');
    h.broker.forget('soil-01');
    await new Promise((r) => setTimeout(r, 50));
    const reborn = await h.connect({ clientId: 'fw-1', clean: false, username: 'soil-01', password: 'secret-soil-01' });
    expect(sessionPresent(reborn)).toBe(false);
    const late: string[] = [];
    reborn.on('message', (t) => late.push(t));
    await new Promise((r) => setTimeout(r, 200));
    expect(late).toEqual([]);
  });

  it('a second connection of the same device (other client id) replaces the first', async () => {
    const a = await h.connect({ clientId: 'first', username: 'soil-01', password: 'secret-soil-01' });
    const aClosed = new Promise<void>((r) => a.once('close', () => r()));
    const b = await h.connect({ clientId: 'second', username: 'TOKENSOIL01xxxxxxxx' });
    await aClosed;
    expect(b.connected).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(h.broker.isConnected('soil-01')).toBe(true);
    expect(h.broker.connectedCount()).toBe(1);
    expect(await h.counter('keng_mqtt_connections')).toBe(1);
  });

  it('kick() disconnects a device', async () => {
    const a = await h.connect({ clientId: 'k', username: 'soil-01', password: 'secret-soil-01' });
    await until(() => h.broker.isConnected('soil-01'));
    const closed = new Promise<void>((r) => a.once('close', () => r()));
    h.broker.kick('soil-01');
    await closed;
    await until(() => !h.broker.isConnected('soil-01'));
    expect(h.broker.connectedCount()).toBe(0);
  });

  it('ready() and address() reflect the listener; stop() is bounded with clients connected', async () => {
    expect(h.broker.ready()).toBe(true);
    expect(h.broker.address().mqtt.port).toBe(h.port);
    expect(h.port).toBeGreaterThan(0);
    await h.connect({ clientId: 's1', username: 'soil-01', password: 'secret-soil-01' });
    await h.connect({ clientId: 's2', username: 'soil-02', password: 'secret-soil-02' });
    await until(() => h.broker.connectedCount() === 2);
    const t0 = Date.now();
    await h.broker.stop();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(h.broker.ready()).toBe(false);
    // on server stop every connected device is marked offline
    expect(h.presence.online.get('soil-01')).toBe(false);
    expect(h.presence.online.get('soil-02')).toBe(false);
    await h.broker.stop(); // idempotent
  });
});
