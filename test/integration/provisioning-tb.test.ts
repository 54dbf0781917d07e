/**
 * ThingsBoard device provisioning (firmware-protocols/provisioning.md), with
 * the firmware imitated from the SDKs' source over real MQTT (test/helpers/
 * tb-provision.ts): a key issued over the API registers the device in its
 * area, the returned token connects and its telemetry is stored; wrong,
 * expired, used-up and revoked keys get ThingsBoard's NOT_FOUND answer and
 * the SDK stops (no reconnect loop); the session can do nothing else; every
 * outcome is audited.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, connectRefused, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas, seedDevices } from '../helpers/seed.js';
import { PYTHON, arduinoProvision, sdkProvision, sdkTelemetry } from '../helpers/tb-provision.js';

const EXAMPLE = fileURLToPath(new URL('../../firmware-protocols/examples/tb_provision.py', import.meta.url));
const havePaho = spawnSync(PYTHON, ['-c', 'import paho.mqtt.client'], { timeout: 10_000 }).status === 0;

const NOT_FOUND = { errorMsg: 'Provision data was not found!', status: 'NOT_FOUND' };
const FAILURE = { errorMsg: 'Failed to provision device!', status: 'FAILURE' };

/** The example as a maker runs it (asynchronously: the server under test runs in this process). */
function runExample(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(PYTHON, [EXAMPLE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
  });
}

describe.skipIf(!havePaho)('ThingsBoard device provisioning over MQTT', () => {
  let t: TestApp;

  beforeAll(async () => {
    t = await startTestApp({ mqtt: { provisionRequestsPerMinute: 1000 } });
    await seedAreas(t, COMMUNE_TREE);
    await seedDevices(t, [{ id: 'pump-cb', kind: 'sensor', name: 'pump cb', area: 'cb' }]);
  }, 60_000);
  afterAll(async () => { await t?.stop(); });

  async function issue(body: Record<string, unknown>): Promise<{ id: string; provisionDeviceKey: string; provisionDeviceSecret: string }> {
    const r = await t.api('POST', '/api/v1/provisioning-keys', body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body;
  }

  async function auditActions(target: string): Promise<Array<{ action: string; after: any; ip: string | null }>> {
    const r = await t.api('GET', '/api/v1/audit?limit=500');
    return (r.body.entries as Array<{ action: string; target: string; after: any; ip: string | null }>).filter((e) => e.target === target);
  }

  it('Python SDK 1.7.1: registers the device in the key\'s area; its token connects and the telemetry is stored', async () => {
    const k = await issue({ area: 'va1', kind: 'sensor', model: 'SOIL-3', maxDevices: 5 });
    const res = await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'Cảm biến đất 01');
    expect(res.connects).toBe(1);
    expect(res.response).toMatchObject({ status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN' });
    const token = res.response.credentialsValue as string;
    expect(token).toMatch(/^[A-Za-z0-9]{32}$/);

    const dev = await t.api('GET', '/api/v1/devices/cam-bien-dat-01');
    expect(dev.status).toBe(200);
    expect(dev.body).toMatchObject({ id: 'cam-bien-dat-01', name: 'Cảm biến đất 01', area: 'va1', kind: 'sensor' });

    const sent = await sdkTelemetry(t.mqttPort, token, { soilMoisture: 33.5 });
    expect(sent).toEqual({ rc: 0, published: true });
    const hist = await t.api('GET', '/api/v1/devices/cam-bien-dat-01/telemetry?fields=soilMoisture');
    expect(hist.body.points.map((p: { values: unknown }) => p.values)).toEqual([{ soilMoisture: 33.5 }]);

    const key = await t.api('GET', `/api/v1/provisioning-keys/${k.id}`);
    expect(key.body).toMatchObject({ used: 1, maxDevices: 5, area: 'va1', revoked: false });
    const rows = await auditActions('device:cam-bien-dat-01');
    expect(rows.map((r) => r.action)).toEqual(['device.provision']);
    expect(rows[0]!.after).toMatchObject({ area: 'va1', provisioningKey: k.id, model: 'SOIL-3' });
    expect(rows[0]!.ip).toMatch(/127\.0\.0\.1/);
  }, 60_000);

  it('Arduino SDK, byte for byte: answered although the SDK subscribes and publishes back to back; reconnects with the token', async () => {
    const k = await issue({ area: 'ca', kind: 'speaker' });
    const out = await arduinoProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'A4:CF:12:34:56:78', 'sdk', '{"volume":40}');
    expect(out.connack).toBe(0);
    expect(out.topic).toBe('/provision/response');
    expect(out.response).toMatchObject({ status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN' });
    expect(out.tokenConnack).toBe(0);
    const dev = await t.api('GET', '/api/v1/devices/a4-cf-12-34-56-78');
    expect(dev.body).toMatchObject({ area: 'ca', kind: 'speaker', name: 'A4:CF:12:34:56:78' });
    await waitFor(async () => (await t.api('GET', '/api/v1/devices/a4-cf-12-34-56-78')).body.latest?.volume?.value === 40, 10_000);
  }, 60_000);

  it('a wrong secret gets ThingsBoard\'s NOT_FOUND answer; the SDK stops (one connect) and nothing is registered', async () => {
    const k = await issue({ area: 'ca' });
    const res = await sdkProvision(t.mqttPort, k.provisionDeviceKey, 'not-the-secret', 'wrong-secret-1');
    expect(res.response).toEqual(NOT_FOUND);
    expect(res.connects).toBe(1);
    expect((await t.api('GET', '/api/v1/devices/wrong-secret-1')).status).toBe(404);
    const unknown = await sdkProvision(t.mqttPort, 'no-such-key', 'x', 'wrong-key-1');
    expect(unknown.response).toEqual(NOT_FOUND);
    const rows = await auditActions(`provisioning_key:${k.id}`);
    expect(rows.map((r) => [r.action, r.after?.reason])).toContainEqual(['device.provision_failed', 'bad_secret']);
  }, 60_000);

  it('the server closes a provisioning connection shortly after answering', async () => {
    const out = await arduinoProvision(t.mqttPort, 'no-such-key', 'x', 'stays-1', 'stay');
    expect(out.response).toEqual(NOT_FOUND);
    // answerGraceMs is 2 s; ThingsBoard waits 60 s.
    expect(out.closedByServerAfterMs).toBeGreaterThanOrEqual(1_500);
    expect(out.closedByServerAfterMs).toBeLessThan(15_000);
  }, 60_000);

  it('an expired key, a used-up key and a revoked key answer NOT_FOUND', async () => {
    // Generous: issuing must still see it in the future on a loaded machine.
    const soonAt = Date.now() + 5_000;
    const soon = await issue({ area: 'ca', expiresAt: soonAt });
    const one = await issue({ area: 'ca', maxDevices: 1 });
    const gone = await issue({ area: 'ca' });
    expect((await sdkProvision(t.mqttPort, one.provisionDeviceKey, one.provisionDeviceSecret, 'only-one-1')).response.status).toBe('SUCCESS');
    expect((await sdkProvision(t.mqttPort, one.provisionDeviceKey, one.provisionDeviceSecret, 'only-one-2')).response).toEqual(NOT_FOUND);
    expect((await t.api('DELETE', `/api/v1/provisioning-keys/${gone.id}`)).status).toBe(204);
    expect((await sdkProvision(t.mqttPort, gone.provisionDeviceKey, gone.provisionDeviceSecret, 'revoked-1')).response).toEqual(NOT_FOUND);
    await new Promise((r) => setTimeout(r, Math.max(0, soonAt + 200 - Date.now())));
    expect((await sdkProvision(t.mqttPort, soon.provisionDeviceKey, soon.provisionDeviceSecret, 'expired-1')).response).toEqual(NOT_FOUND);
    for (const id of ['only-one-2', 'revoked-1', 'expired-1']) expect((await t.api('GET', `/api/v1/devices/${id}`)).status).toBe(404);
    const reasons = async (id: string) => (await auditActions(`provisioning_key:${id}`)).map((r) => `${r.action}:${r.after?.reason ?? ''}`);
    expect(await reasons(one.id)).toContain('device.provision_failed:used_up');
    expect(await reasons(gone.id)).toEqual(expect.arrayContaining(['provisioning_key.revoke:', 'device.provision_failed:revoked']));
    expect(await reasons(soon.id)).toContain('device.provision_failed:expired');
    expect(await reasons(soon.id)).toContain('provisioning_key.create:');
  }, 60_000);

  it('the same name again, or a name taken in another area, answers FAILURE without saying where', async () => {
    const k = await issue({ area: 'ca' });
    expect((await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'twice-1')).response.status).toBe('SUCCESS');
    expect((await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'twice-1')).response).toEqual(FAILURE);
    const other = await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'pump cb');
    expect(other.response).toEqual(FAILURE);
    expect((await t.api('GET', '/api/v1/devices/pump-cb')).body.area).toBe('cb');
    expect((await t.api('GET', `/api/v1/provisioning-keys/${k.id}`)).body.used).toBe(1);
  }, 60_000);

  it('a token the device chose becomes its access token; credentials that do not fit get FAILURE with a clear message', async () => {
    const k = await issue({ area: 'ca' });
    const chosen = 'Factory-Token-0001-ABCDEF';
    const own = await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'own-token-1', { access_token: chosen });
    expect(own.response).toEqual({ credentialsValue: chosen, credentialsType: 'ACCESS_TOKEN', status: 'SUCCESS' });
    expect(await sdkTelemetry(t.mqttPort, chosen, { flow: 2.5 })).toEqual({ rc: 0, published: true });
    await waitFor(async () => (await t.api('GET', '/api/v1/devices/own-token-1')).body.latest?.flow?.value === 2.5);
    // The same token for another device: ThingsBoard's plain FAILURE, nothing about whose it is.
    const twice = await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'own-token-2', { access_token: chosen });
    expect(twice.response).toEqual(FAILURE);
    expect((await t.api('GET', '/api/v1/devices/own-token-2')).status).toBe(404);
    const short = await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'own-token-3', { access_token: 'MY_TOKEN_123' });
    expect(short.response).toEqual({ errorMsg: 'Access token refused: the token must be 20 to 256 characters', status: 'FAILURE' });
    const basic = await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'basic-1', { username: 'u', password: 'p', client_id: 'c' });
    expect(basic.response.status).toBe('FAILURE');
    expect(basic.response.errorMsg).toMatch(/MQTT_BASIC is not supported/);
    expect((await t.api('GET', `/api/v1/provisioning-keys/${k.id}`)).body.used).toBe(1);
  }, 60_000);

  it('a request without a name gets a random one', async () => {
    const k = await issue({ area: 'ca' });
    const anon = await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, '');
    expect(anon.response.status).toBe('SUCCESS');
    const list = await t.api('GET', '/api/v1/devices?area=ca');
    expect(list.body.some((d: { id: string }) => /^[a-z0-9]{20}$/.test(d.id))).toBe(true);
  }, 60_000);

  it('firmware-protocols/examples/tb_provision.py works as its page says: provisions once, keeps the token, sends a reading', async () => {
    const k = await issue({ area: 'va1', maxDevices: 2 });
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-prov-'));
    const save = path.join(dir, 'credentials.json');
    const run = (telemetry: string) => runExample(['--host', '127.0.0.1', '--port', String(t.mqttPort),
      '--key', k.provisionDeviceKey, '--secret', k.provisionDeviceSecret, '--name', 'Cảm biến đất 07', '--save', save, '--telemetry', telemetry]);
    try {
      const refused = await runExample(['--port', String(t.mqttPort), '--key', k.provisionDeviceKey, '--secret', 'wrong', '--name', 'x-7']);
      expect(refused.status).toBe(2);
      expect(refused.stderr).toContain('NOT_FOUND Provision data was not found!');
      const first = await run('{"soilMoisture": 31.5}');
      expect(first.status, first.stderr).toBe(0);
      const second = await run('{"soilMoisture": 30.25}');
      expect(second.status, second.stderr).toBe(0);
      expect(JSON.parse(second.stdout).accessToken).toBe(JSON.parse(first.stdout).accessToken);
      expect((await t.api('GET', `/api/v1/provisioning-keys/${k.id}`)).body.used).toBe(1);
      const hist = await t.api('GET', '/api/v1/devices/cam-bien-dat-07/telemetry?fields=soilMoisture');
      expect(hist.body.points.map((p: { values: { soilMoisture: number } }) => p.values.soilMoisture)).toEqual([31.5, 30.25]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  it('a password with the provision login is ignored, as ThingsBoard does (no device named provision yet)', async () => {
    const k = await issue({ area: 'ca' });
    const c = await connectDevice(t.mqttUrl, 'provision', 'provision', { clientId: 'provision' });
    const answer = new Promise<string>((resolve) => c.on('message', (_t, p) => resolve(p.toString())));
    c.subscribe('/provision/response', { qos: 0 });
    c.publish('/provision/request', JSON.stringify({ deviceName: 'pw-ignored-1', provisionDeviceKey: k.provisionDeviceKey, provisionDeviceSecret: k.provisionDeviceSecret }));
    expect(JSON.parse(await answer)).toMatchObject({ status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN' });
    c.end(true);
  }, 30_000);

  it('a device whose id is "provision" still logs in with its secret', async () => {
    const [creds] = Object.values(await seedDevices(t, [{ id: 'provision', kind: 'sensor', name: 'named provision', area: 'ca' }]));
    const c = await connectDevice(t.mqttUrl, 'provision', creds!.secret);
    await new Promise<void>((resolve, reject) => c.publish('v1/devices/provision/telemetry', '{"t":1}', { qos: 1 }, (e) => (e ? reject(e) : resolve())));
    c.end(true);
    await waitFor(async () => (await t.api('GET', '/api/v1/devices/provision')).body.latest?.t?.value === 1);
    // With another password it is that device's wrong secret, not a provisioning session.
    expect(await connectRefused(t.mqttUrl, 'provision', 'not-its-secret')).toBe(4);
  }, 30_000);

  it('a provisioning session may subscribe and publish nothing else; a publish elsewhere closes it', async () => {
    const c = await connectDevice(t.mqttUrl, 'provision', undefined, { clientId: 'soil-1' });
    // mqtt.js fails the whole subscribe when one filter is refused: read the SUBACK itself.
    const granted = new Promise<number[]>((resolve) => c.on('packetreceive', (p) => { if (p.cmd === 'suback') resolve(p.granted as number[]); }));
    c.subscribe(['#', 'v1/devices/+/telemetry', '/provision/response', 'v1/devices/me/rpc/request/+'], { qos: 1 }, () => undefined);
    expect(await granted).toEqual([128, 128, 1, 128]);
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    c.publish('v1/devices/pump-cb/telemetry', '{"flow":1}', { qos: 1 });
    await closed;
    c.end(true);
    await new Promise((r) => setTimeout(r, 300));
    expect((await t.api('GET', '/api/v1/devices/pump-cb')).body.latest).toEqual({});
  }, 30_000);
});

describe.skipIf(!havePaho)('provision requests per address', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ mqtt: { provisionRequestsPerMinute: 2 } });
    await seedAreas(t, COMMUNE_TREE);
  }, 60_000);
  afterAll(async () => { await t?.stop(); });

  it('over the limit the answer is FAILURE "too many" without checking the key, and the SDK still stops', async () => {
    const r = await t.api('POST', '/api/v1/provisioning-keys', { area: 'ca' });
    const k = r.body as { provisionDeviceKey: string; provisionDeviceSecret: string };
    for (let i = 0; i < 2; i++) expect((await sdkProvision(t.mqttPort, 'wrong', 'wrong', `x${i}-dev`)).response).toEqual(NOT_FOUND);
    const over = await sdkProvision(t.mqttPort, k.provisionDeviceKey, k.provisionDeviceSecret, 'right-dev');
    expect(over.response).toEqual({ errorMsg: 'Too many provision requests from this address: try again later', status: 'FAILURE' });
    expect(over.connects).toBe(1);
    expect((await t.api('GET', '/api/v1/devices/right-dev')).status).toBe(404);
    const audit = await t.api('GET', '/api/v1/audit?action=device.provision_failed');
    expect(audit.body.entries).toHaveLength(2); // the refused one is counted, not audited
    const metrics = await (await fetch(`${t.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t.adminToken}` } })).text();
    expect(metrics).toMatch(/keng_mqtt_refused_total\{op="publish",reason="provision_rate_limited"\} 1/);
    expect(metrics).toMatch(/keng_provisioning_requests_total\{result="not_found"\} 2/);
  }, 60_000);
});
