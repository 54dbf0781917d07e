/**
 * Registers simulated devices through the REST API. A device that already
 * exists keeps the credentials we hold for it; one we hold none for is deleted
 * and registered again (secrets are shown only at registration).
 */
import type { KengApi } from './api-client.js';
import type { SimCredential } from './credentials.js';
import { mapLimit } from './pool.js';
import type { ProfileName } from './profiles.js';
import { createRng, hashSeed } from './random.js';

export const SIM_AREA = { code: 'sim', name: 'Simulated devices', level: 'province' as const };

/** Mekong delta farmland around Can Tho, for plausible map positions. */
const CENTER = { lat: 10.03, lon: 105.77 };

export interface RegisterOptions {
  area: string;
  profileOf: (id: string, index: number) => ProfileName;
  /** Credentials we already hold (e.g. from the credentials file). */
  known?: ReadonlyMap<string, SimCredential>;
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface RegisterResult {
  devices: SimCredential[];
  created: number;
  reused: number;
  recreated: number;
}

export async function registerSimDevices(api: KengApi, ids: string[], o: RegisterOptions): Promise<RegisterResult> {
  let created = 0, reused = 0, recreated = 0, done = 0;
  const devices = await mapLimit(ids, o.concurrency ?? 16, async (id, i) => {
    const profile = o.profileOf(id, i);
    const rng = createRng(hashSeed(id));
    const body = {
      id,
      kind: 'sensor' as const,
      name: `Simulated ${profile} sensor ${id}`,
      area: o.area,
      model: 'keng-sim',
      location: { lat: round6(CENTER.lat + (rng() - 0.5) * 0.2), lon: round6(CENTER.lon + (rng() - 0.5) * 0.2) },
    };
    let cred = await api.createDevice(body);
    let result: SimCredential;
    if (cred) {
      created++;
      result = { id, profile, ...cred };
    } else {
      const known = o.known?.get(id);
      if (known) {
        reused++;
        result = { ...known, profile: known.profile ?? profile };
      } else {
        await api.deleteDevice(id);
        cred = await api.createDevice(body);
        if (!cred) throw new Error(`device ${id} still exists after deleting it`);
        recreated++;
        result = { id, profile, ...cred };
      }
    }
    done++;
    o.onProgress?.(done, ids.length);
    return result;
  });
  return { devices, created, reused, recreated };
}

function round6(v: number): number {
  return Math.round(v * 1e6) / 1e6;
}
