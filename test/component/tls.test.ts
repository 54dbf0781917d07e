/**
 * TLS for HTTP and MQTT when a certificate is configured (src/tls.ts;
 * firmware-protocols/device-protocol.md §1.0): a self-signed certificate made with openssl; MQTT over TLS on
 * mqtt.tlsPort (same broker: telemetry arrives, the plain port still works),
 * HTTPS on the HTTP port; bad settings stop the start with one line naming
 * the setting.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, end, publish } from '../helpers/mqtt.js';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { loadTls } from '../../src/tls.js';

let dir: string;
let cert: string;
let key: string;
let otherKey: string;
let t: TestApp | undefined;

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

beforeAll(() => {
  // Fails (does not skip) when openssl is missing: the test must run.
  execFileSync('which', ['openssl']);
  dir = mkdtempSync(path.join(tmpdir(), 'keng-tls-'));
  cert = path.join(dir, 'cert.pem');
  key = path.join(dir, 'key.pem');
  otherKey = path.join(dir, 'other-key.pem');
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert);
  openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', otherKey);
});

afterAll(async () => {
  await t?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    https.get(url, { ca }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

function httpsJson(base: string, ca: string, method: string, route: string, body?: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = https.request(base + route, {
      method, ca, headers: { authorization: `Bearer ${t!.adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b ? JSON.parse(b) : undefined }));
    });
    req.on('error', reject);
    req.end(body !== undefined ? JSON.stringify(body) : undefined);
  });
}

async function startError(tls: Record<string, string>): Promise<string> {
  try {
    const app = await startTestApp({ tls, mqtt: { tlsPort: 0 } });
    await app.stop();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('start unexpectedly succeeded');
}

describe('TLS', () => {
  it('serves MQTT over TLS on mqtt.tlsPort and HTTPS on the HTTP port', async () => {
    t = await startTestApp({ tls: { certFile: cert, keyFile: key }, mqtt: { tlsPort: 0 } });
    const addr = t.app.broker.address();
    expect(addr.mqtts?.port).toBeGreaterThan(0);
    expect(addr.mqtts?.port).not.toBe(addr.mqtt.port);
    const ca = readFileSync(cert, 'utf8');

    // HTTPS with the CA works; plain HTTP on that port does not.
    const base = `https://localhost:${t.app.addresses().http.port}`;
    const h = await httpsGet(`${base}/healthz`, ca);
    expect(h.status).toBe(200);
    await expect(fetch(`http://127.0.0.1:${t.app.addresses().http.port}/healthz`)).rejects.toThrow();
    // Without the CA the certificate is not trusted.
    await expect(new Promise((resolve, reject) => https.get(`${base}/healthz`, resolve).on('error', reject))).rejects.toThrow(/self-signed|self signed/);

    // The admin API over HTTPS: an area and a device.
    const area = await httpsJson(base, ca, 'POST', '/api/v1/areas', { code: 'x1', name: 'Tỉnh 1', level: 'province' });
    expect(area.status, JSON.stringify(area.body)).toBe(201);
    const created = await httpsJson(base, ca, 'POST', '/api/v1/devices', { id: 'soil-tls', kind: 'sensor', name: 'TLS soil', area: 'x1' });
    expect(created.status).toBe(201);

    // mqtts:// with the CA: a QoS 1 publish is acknowledged and stored.
    const dev = await connectDevice(`mqtts://localhost:${addr.mqtts!.port}`, 'soil-tls', created.body.secret, { ca });
    await publish(dev, 'v1/devices/soil-tls/telemetry', JSON.stringify({ soil_moisture: 12.5 }));
    await end(dev);
    const latest = (await httpsJson(base, ca, 'GET', '/api/v1/telemetry/latest')).body;
    expect(latest.devices.find((d: any) => d.id === 'soil-tls').latest.soil_moisture.value).toBe(12.5);

    // An untrusted client (no CA) is refused by its own TLS check, not by Keng.
    const untrusted = mqtt.connect(`mqtts://localhost:${addr.mqtts!.port}`, { username: 'soil-tls', password: created.body.secret, reconnectPeriod: 0 });
    const err = await new Promise<Error>((r) => untrusted.once('error', r));
    untrusted.end(true);
    expect(err.message).toMatch(/self-signed|self signed/);

    // The plain MQTT port still works.
    const plain = await connectDevice(t.mqttUrl, 'soil-tls', created.body.secret);
    await end(plain);
  });

  it('stops the start with a line naming the setting: bad key path, foreign key, missing half, not PEM', async () => {
    const missing = await startError({ certFile: cert, keyFile: path.join(dir, 'nope.pem') });
    expect(missing).toMatch(/^Invalid setting tls\.keyFile \(KENG_TLS_KEY_FILE\)=.*nope\.pem: cannot read file \(ENOENT\)$/);
    expect(await startError({ certFile: cert, keyFile: otherKey })).toMatch(/^Invalid setting tls\.keyFile .*: the key does not belong to the certificate in tls\.certFile/);
    expect(await startError({ certFile: cert })).toMatch(/^Invalid setting tls\.keyFile \(KENG_TLS_KEY_FILE\): missing/);
    const junk = path.join(dir, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    expect(await startError({ certFile: junk, keyFile: key })).toMatch(/^Invalid setting tls\.certFile \(KENG_TLS_CERT_FILE\)=.*junk\.pem: not a PEM certificate/);
    expect(await startError({ certFile: cert, keyFile: key, caFile: path.join(dir, 'ca-missing.pem') })).toMatch(/^Invalid setting tls\.caFile/);
    expect(() => loadTls({ certFile: cert, keyFile: otherKey })).toThrow(ConfigError);
  });

  it('reads the files from KENG_TLS_CERT_FILE / KENG_TLS_KEY_FILE; unset means no TLS', () => {
    const c = loadConfig({ env: { KENG_TLS_CERT_FILE: cert, KENG_TLS_KEY_FILE: key, KENG_MQTT_TLS_PORT: '18883' } });
    expect(c.tls).toEqual({ certFile: cert, keyFile: key });
    expect(c.mqtt.tlsPort).toBe(18883);
    expect(loadTls(c.tls)?.subject).toMatch(/CN=localhost/);
    const d = loadConfig({ env: {} });
    expect(d.mqtt.tlsPort).toBe(8883);
    expect(loadTls(d.tls)).toBeNull();
  });
});
