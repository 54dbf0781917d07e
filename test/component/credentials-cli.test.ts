/**
 * Credentials made by the API work as arguments of command-line MQTT clients
 * (finding: a base64url token starting with "-" is read as an option by
 * `mosquitto_pub -u -Xyz…`). Devices registered and rotated through the real
 * API get base62 credentials only; mosquitto_pub publishes with them.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

const run = promisify(execFile);
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, [{ code: 'p', name: 'Tỉnh', level: 'province' }]);
});
afterAll(async () => { await t?.stop(); });

describe('device credentials from the API', { timeout: 60_000 }, () => {
  it('100 registrations and 100 rotations: every secret and access token is base62, none starts with "-"', async () => {
    const creds = await seedDevices(t, Array.from({ length: 100 }, (_, i) => ({ id: `d-${i}`, kind: 'sensor' as const, name: `d-${i}`, area: 'p' })));
    const all = Object.values(creds).flatMap((c) => [c.secret, c.accessToken]);
    for (let i = 0; i < 50; i++) {
      all.push((await t.api('POST', `/api/v1/devices/d-${i}/secret`)).body.secret);
      all.push((await t.api('POST', `/api/v1/devices/d-${i}/token`)).body.accessToken);
    }
    expect(all).toHaveLength(300);
    expect(all.filter((c) => typeof c !== 'string' || !/^[0-9A-Za-z]{32,43}$/.test(c))).toEqual([]);
  });

  it('mosquitto_pub logs in with them as plain arguments (id + secret, and the access token as user name)', async () => {
    const c = (await seedDevices(t, [{ id: 'cli-1', kind: 'sensor', name: 'cli', area: 'p' }]))['cli-1']!;
    const base = ['-h', '127.0.0.1', '-p', String(t.mqttPort), '-V', 'mqttv311', '-q', '1'];
    await run('mosquitto_pub', [...base, '-i', 'cli-1', '-u', 'cli-1', '-P', c.secret, '-t', 'v1/devices/cli-1/telemetry', '-m', '{"t":1}'], { timeout: 10_000 });
    await run('mosquitto_pub', [...base, '-u', c.accessToken, '-t', 'v1/devices/me/telemetry', '-m', '{"t":2}'], { timeout: 10_000 });
    const latest = await t.api('GET', '/api/v1/telemetry/latest');
    expect(latest.body.devices.find((d: { id: string }) => d.id === 'cli-1').latest.t.value).toBe(2);
  });
});
