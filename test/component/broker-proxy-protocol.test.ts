/**
 * mqtt.proxyProtocol "required" on the real listeners (plain and TLS): the
 * device behind the header is who the broker sees (per-address limit), the
 * CONNECT sent in the same segment as the header is not lost, and a
 * connection without a valid header from a trusted proxy is closed and
 * counted in keng_mqtt_proxy_refused_total{reason}.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { MqttClient, type IClientOptions } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { loadTls } from '../../src/tls.js';
import { connectPacket, startBroker, until, type BrokerHarness } from '../helpers/fakes-broker.js';
import { waitFor } from '../helpers/mqtt.js';
import { proxyV1, proxyV2 } from '../helpers/proxy-header.js';

let h: BrokerHarness | undefined;
afterEach(async () => { await h?.stop(); h = undefined; });

const REQUIRED = { proxyProtocol: 'required' as const };
const CONNACK_OK = '20020000';

interface Raw { sock: net.Socket; got: () => Buffer; closed: Promise<void> }

/** Connects from loopback (the "proxy") and writes each part as its own segment. */
async function raw(port: number, parts: Buffer[]): Promise<Raw> {
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  let got = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
  sock.on('error', () => undefined);
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  await new Promise<void>((r) => sock.once('connect', () => r()));
  for (const p of parts) {
    sock.write(p);
    await new Promise((r) => setTimeout(r, 20)); // separate segments
  }
  return { sock, got: () => got, closed };
}

const connect = (id: string): Buffer => connectPacket({ clientId: id, username: id, password: `secret-${id}`, keepalive: 60 });

async function connack(r: Raw): Promise<string> {
  await until(() => r.got().length >= 4 || r.sock.destroyed, 5000, 'CONNACK');
  return r.got().subarray(0, 4).toString('hex');
}

describe('mqtt.proxyProtocol "required"', () => {
  it('v2: header and CONNECT in one segment: the CONNECT is not lost, the device is connected', async () => {
    h = await startBroker(REQUIRED);
    const r = await raw(h.port, [Buffer.concat([proxyV2('203.0.113.5'), connect('soil-01')])]);
    expect(await connack(r)).toBe(CONNACK_OK);
    await until(() => h!.broker.isConnected('soil-01'));
    r.sock.destroy();
  });

  it('v2 and v1: a header split across segments, the CONNECT beginning in the header\'s last segment', async () => {
    h = await startBroker(REQUIRED);
    const v2 = Buffer.concat([proxyV2('203.0.113.5'), connect('soil-01')]);
    const a = await raw(h.port, [v2.subarray(0, 5), v2.subarray(5, 14), v2.subarray(14, 31), v2.subarray(31)]);
    expect(await connack(a)).toBe(CONNACK_OK);
    const v1 = Buffer.concat([proxyV1('203.0.113.6'), connect('soil-02')]);
    const cut = proxyV1('203.0.113.6').length - 1; // the last byte of the CRLF travels with the CONNECT
    const b = await raw(h.port, [v1.subarray(0, 7), v1.subarray(7, cut), v1.subarray(cut)]);
    expect(await connack(b)).toBe(CONNACK_OK);
    await until(() => h!.broker.connectedCount() === 2);
    a.sock.destroy();
    b.sock.destroy();
  });

  it('the per-address limit applies to the address in the header, not the proxy\'s', async () => {
    h = await startBroker({ ...REQUIRED, maxConnectionsPerIp: 1, exemptLoopback: false });
    const first = await raw(h.port, [Buffer.concat([proxyV2('203.0.113.5'), connect('soil-01')])]);
    expect(await connack(first)).toBe(CONNACK_OK);
    const same = await raw(h.port, [Buffer.concat([proxyV2('203.0.113.5'), connect('soil-02')])]);
    await same.closed;
    expect(same.got().length).toBe(0);
    expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'per_ip_limit' })).toBe(1);
    const other = await raw(h.port, [Buffer.concat([proxyV1('203.0.113.6'), connect('soil-02')])]);
    expect(await connack(other)).toBe(CONNACK_OK);
    first.sock.destroy();
    other.sock.destroy();
  });

  it('the provisioning limit and record get the address in the header (mqtt.js behind a header)', async () => {
    const calls: Array<string | null> = [];
    const provisioner = { provision: async (_p: Buffer, from: { ip: string | null }) => { calls.push(from.ip); return { status: 'SUCCESS' as const, credentialsType: 'ACCESS_TOKEN' as const, credentialsValue: 'T' }; } };
    h = await startBroker(REQUIRED, {}, { provisioner });
    const port = h.port;
    const c = new MqttClient(() => {
      const s = net.connect(port, '127.0.0.1');
      s.write(proxyV1('198.51.100.23')); // first on the wire, before mqtt.js's CONNECT
      return s;
    }, { protocolVersion: 4, username: 'provision', clientId: 'fw-1', reconnectPeriod: 0 } as IClientOptions);
    try {
      await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject); });
      c.publish('/provision/request', '{"deviceName":"a","provisionDeviceKey":"k","provisionDeviceSecret":"s"}', { qos: 1 });
      await until(() => calls.length === 1);
      expect(calls).toEqual(['198.51.100.23']);
    } finally {
      c.end(true);
    }
  });

  it('LOCAL (the proxy\'s own connection) is served as the proxy\'s address', async () => {
    h = await startBroker(REQUIRED);
    const r = await raw(h.port, [Buffer.concat([proxyV2(null), connect('soil-01')])]);
    expect(await connack(r)).toBe(CONNACK_OK);
    r.sock.destroy();
  });

  it('no header: closed at once, unanswered, counted (invalid_header); a bad header too', async () => {
    h = await startBroker(REQUIRED);
    const bare = await raw(h.port, [connect('soil-01')]);
    await bare.closed;
    expect(bare.got().length).toBe(0);
    const bad = await raw(h.port, [Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n'), connect('soil-01')]);
    await bad.closed;
    expect(await h.counter('keng_mqtt_proxy_refused_total', { reason: 'invalid_header' })).toBe(2);
    expect(h.broker.isConnected('soil-01')).toBe(false);
    expect(await h.counter('keng_mqtt_connects_total')).toBe(0);
  });

  it('silence: closed after the header timeout (timeout); a peer that leaves mid-header: closed', async () => {
    h = await startBroker(REQUIRED, { proxyHeaderTimeoutMs: 300 });
    const silent = await raw(h.port, []);
    const t0 = Date.now();
    await silent.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(await h.counter('keng_mqtt_proxy_refused_total', { reason: 'timeout' })).toBe(1);
    const half = await raw(h.port, [proxyV2('203.0.113.5').subarray(0, 10)]);
    half.sock.end();
    await half.closed;
    await waitFor(async () => (await h!.counter('keng_mqtt_proxy_refused_total', { reason: 'closed' })) === 1);
  });

  it('a header from a peer outside mqtt.trustedProxies is refused (untrusted_peer), valid or not', async () => {
    h = await startBroker({ ...REQUIRED, trustedProxies: ['10.0.0.0/8'] });
    const r = await raw(h.port, [Buffer.concat([proxyV2('203.0.113.5'), connect('soil-01')])]);
    await r.closed;
    expect(r.got().length).toBe(0);
    expect(await h.counter('keng_mqtt_proxy_refused_total', { reason: 'untrusted_peer' })).toBe(1);
  });

  it('"off" (the default): a PROXY header is not MQTT, the connection fails; plain devices connect', async () => {
    h = await startBroker();
    const r = await raw(h.port, [Buffer.concat([proxyV2('203.0.113.5'), connect('soil-01')])]);
    await r.closed;
    expect(h.broker.isConnected('soil-01')).toBe(false);
    const c = await h.connect({ clientId: 'soil-02', username: 'soil-02', password: 'secret-soil-02' });
    expect(c.connected).toBe(true);
  });

  it('TLS listener: the header comes before the handshake; then MQTT over TLS', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-pp-tls-'));
    try {
      const certFile = path.join(dir, 'cert.pem');
      const keyFile = path.join(dir, 'key.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1',
        '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyFile, '-out', certFile], { stdio: 'pipe' });
      h = await startBroker({ ...REQUIRED, tlsPort: 0, maxConnectionsPerIp: 1, exemptLoopback: false }, {}, { tls: { load: () => loadTls({ certFile, keyFile }) } });
      const tlsPort = h.broker.address().mqtts!.port;
      const open: tls.TLSSocket[] = [];
      const viaTls = async (src: string): Promise<string> => {
        const base = net.connect(tlsPort, '127.0.0.1');
        base.on('error', () => undefined);
        await new Promise<void>((r) => base.once('connect', () => r()));
        base.write(proxyV2(src));
        const s = tls.connect({ socket: base, rejectUnauthorized: false });
        open.push(s);
        s.on('error', () => undefined);
        let got = Buffer.alloc(0);
        s.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
        await new Promise<void>((r) => { s.once('secureConnect', () => r()); s.once('close', () => r()); });
        if (!s.destroyed) s.write(connect(src === '203.0.113.5' ? 'soil-01' : 'soil-02'));
        await until(() => got.length >= 4 || s.destroyed, 5000, 'TLS CONNACK');
        return got.subarray(0, 4).toString('hex');
      };
      expect(await viaTls('203.0.113.5')).toBe(CONNACK_OK);
      // the same device address again: over the limit of 1 (counted by the header's address, plain and TLS together)
      expect(await viaTls('203.0.113.5')).toBe('');
      expect(await viaTls('203.0.113.6')).toBe(CONNACK_OK);
      expect(await h.counter('keng_mqtt_refused_total', { op: 'connect', reason: 'per_ip_limit' })).toBe(1);
      for (const s of open) s.destroy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
