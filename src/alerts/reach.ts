/**
 * Where an alert sounds, from what its message says (docs/alerts.md):
 * 1. `<geocode>` entries named `keng:area` (the JSON body's `areas`): those
 *    areas, each with its villages;
 * 2. else its `<polygon>`s and `<circle>`s: the loudspeakers whose registered
 *    location lies inside one of them (a loudspeaker without a location is
 *    never inside a shape: it is reached only through an area code);
 * 3. else the `?areas=` of the request;
 * none of these, or shapes with no loudspeaker inside → 422.
 */
import { Errors } from '../core/errors.js';
import type { TargetRegistry } from '../broadcast/targets.js';
import { pointInCircle, pointInPolygon, type AreaHints } from './cap/index.js';
import type { AlertReach } from './types.js';

export function resolveReach(reg: Pick<TargetRegistry, 'listDevices'>, hints: AreaHints, queryAreas: readonly string[] = []): AlertReach {
  if (hints.areaCodes.length > 0) return { areas: [...hints.areaCodes], devices: [] };
  if (hints.polygons.length > 0 || hints.circles.length > 0) {
    const devices: string[] = [];
    const areas = new Set<string>();
    for (const d of reg.listDevices({ kind: 'speaker' })) {
      const at = d.location;
      if (!at) continue;
      const p = { lat: at.lat, lon: at.lon };
      if (hints.polygons.some((ring) => pointInPolygon(p, ring)) || hints.circles.some((c) => pointInCircle(p, c))) {
        devices.push(d.id);
        areas.add(d.area);
      }
    }
    if (devices.length === 0) throw Errors.UNPROCESSABLE('no loudspeaker with a known location lies inside the alert\'s polygons or circles');
    return { areas: [...areas].sort(), devices: devices.sort() };
  }
  if (queryAreas.length > 0) return { areas: [...new Set(queryAreas)], devices: [] };
  throw Errors.UNPROCESSABLE('the alert names no area: give keng:area geocodes, a polygon or circle, or ?areas=code,...');
}
