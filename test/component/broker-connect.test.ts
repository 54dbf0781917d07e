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

  it('accepts client ids longer than 23 characters (up to 128+)', async () => {
    const c = await h.connect({ clientId: 'x'.repeat(150), username: 'soil-01', password: 'secret-soil-01' });
    expect(c.connected).toBe(true);
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

  it('a device may not use a client id held by another device (CONNACK 2), so it cannot kick it', async () => {
    const a = await h.connect({ clientId: 'shared-id', username: 'soil-01', password: 'secret-soil-01' });
    expect(await refusal(h.connect({ clientId: 'shared-id', username: 'soil-02', password: 'secret-soil-02' }))).toBe(2);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'client_id_in_use' })).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(a.connected).toBe(true);
    expect(h.broker.isConnected('soil-01')).toBe(true);
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
