/**
 * Seeding a test app through the real API: areas, devices, and the commune
 * tree most scoping tests use (province p1 → communes ca, cb; village va1
 * under ca) with devices in it.
 */
import { expect } from 'vitest';
import type { TestApp } from './app.js';

/** Whatever calls the API as admin: a TestApp (real HTTP) or an inject() harness (api-fakes, auth-fixture). */
export type AdminClient =
  | Pick<TestApp, 'api'>
  | { inject(method: string, url: string, body?: unknown): Promise<{ status: number; body: any }> };

export interface AreaBody { code: string; name: string; level: string; parent?: string }
export interface DeviceBody {
  id: string;
  kind: 'sensor' | 'speaker' | 'gateway';
  name: string;
  area: string;
  location?: { lat: number; lon: number };
  model?: string;
}
/** What POST /api/v1/devices shows once: the MQTT password and the ThingsBoard-style access token. */
export interface DeviceCredentials { secret: string; accessToken: string }

const post = (t: AdminClient, route: string, body: unknown) =>
  'inject' in t ? t.inject('POST', route, body) : t.api('POST', route, body);

export const COMMUNE_TREE = [
  { code: 'p1', name: 'Tỉnh', level: 'province' },
  { code: 'ca', name: 'Xã A', level: 'commune', parent: 'p1' },
  { code: 'va1', name: 'Thôn A1', level: 'village', parent: 'ca' },
  { code: 'cb', name: 'Xã B', level: 'commune', parent: 'p1' },
] as const;

/** Creates the areas in order (parents first); each must answer 201. */
export async function seedAreas(t: AdminClient, areas: ReadonlyArray<AreaBody>): Promise<void> {
  for (const a of areas) expect((await post(t, '/api/v1/areas', a)).status, `area ${a.code}`).toBe(201);
}

/** Creates the devices in order; each must answer 201. Returns each device's credentials by id. */
export async function seedDevices(t: AdminClient, devices: ReadonlyArray<DeviceBody>): Promise<Record<string, DeviceCredentials>> {
  const creds: Record<string, DeviceCredentials> = {};
  for (const d of devices) {
    const r = await post(t, '/api/v1/devices', d);
    expect(r.status, `device ${d.id}`).toBe(201);
    creds[d.id] = { secret: r.body.secret, accessToken: r.body.accessToken };
  }
  return creds;
}

/** Creates COMMUNE_TREE (201 each) and the devices `[id, area, kind]` (named by id); returns each device's secret. */
export async function seedCommune(t: TestApp, devices: ReadonlyArray<readonly [string, string, 'sensor' | 'speaker']>): Promise<Record<string, string>> {
  await seedAreas(t, COMMUNE_TREE);
  const creds = await seedDevices(t, devices.map(([id, area, kind]) => ({ id, kind, name: id, area })));
  return Object.fromEntries(Object.entries(creds).map(([id, c]) => [id, c.secret]));
}
