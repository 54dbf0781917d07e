/**
 * Seeding a test app through the real API: the commune tree most scoping tests
 * use (province p1 → communes ca, cb; village va1 under ca) and devices in it.
 */
import { expect } from 'vitest';
import type { TestApp } from './app.js';

export const COMMUNE_TREE = [
  { code: 'p1', name: 'Tỉnh', level: 'province' },
  { code: 'ca', name: 'Xã A', level: 'commune', parent: 'p1' },
  { code: 'va1', name: 'Thôn A1', level: 'village', parent: 'ca' },
  { code: 'cb', name: 'Xã B', level: 'commune', parent: 'p1' },
] as const;

/** Creates the areas (201 each) and the devices `[id, area, kind]`; returns each device's secret. */
export async function seedCommune(t: TestApp, devices: ReadonlyArray<readonly [string, string, 'sensor' | 'speaker']>): Promise<Record<string, string>> {
  for (const a of COMMUNE_TREE) expect((await t.api('POST', '/api/v1/areas', a)).status).toBe(201);
  const secrets: Record<string, string> = {};
  for (const [id, area, kind] of devices) {
    const r = await t.api('POST', '/api/v1/devices', { id, kind, name: id, area });
    expect(r.status).toBe(201);
    secrets[id] = r.body.secret;
  }
  return secrets;
}
