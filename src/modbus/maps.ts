/**
 * The register maps Keng ships: firmware-protocols/modbus/<name>.json, each
 * checked against ShippedMapFile and checkMap when loaded. A broken shipped
 * map is a bug of the release, so loading throws (the server does not start)
 * instead of running without it.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Errors } from '../core/errors.js';
import { shippedMapErrors } from './map-schema.js';
import type { RegisterMap, ShippedMap } from './types.js';

const MAPS_SUBDIR = path.join('firmware-protocols', 'modbus');

/** firmware-protocols/modbus of this checkout or installation (src/modbus in tests, dist/src/modbus when built). */
export function shippedMapsDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, MAPS_SUBDIR);
    if (existsSync(candidate)) return candidate;
    dir = path.dirname(dir);
  }
  throw new Error(`${MAPS_SUBDIR} not found above ${path.dirname(fileURLToPath(import.meta.url))}`);
}

/** Every *.json map of `dir`, checked; throws on the first invalid file. */
export function loadMaps(dir: string): ShippedMap[] {
  const maps: ShippedMap[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    const where = path.join(dir, file);
    let value: unknown;
    try {
      value = JSON.parse(readFileSync(where, 'utf8'));
    } catch (err) {
      throw new Error(`register map ${where}: not JSON (${(err as Error).message})`, { cause: err });
    }
    const errors = shippedMapErrors(value);
    if (errors.length) throw new Error(`register map ${where}: ${errors.map((e) => `${e.field || '(map)'}: ${e.message}`).join('; ')}`);
    const map = value as ShippedMap;
    if (`${map.name}.json` !== file) throw new Error(`register map ${where}: name "${map.name}" differs from the file name`);
    maps.push(deepFreeze(map));
  }
  return maps;
}

/**
 * The shipped maps by name. Given a loader, the files are read on first use
 * (the app builds its parts without I/O; the poller's start() loads them, so
 * a broken map stops the server at start).
 */
export class MapCatalog {
  private loaded: ReadonlyMap<string, ShippedMap> | undefined;

  constructor(private readonly source: readonly ShippedMap[] | (() => readonly ShippedMap[])) {}

  /** The catalog of the maps shipped with this installation (read on first use). */
  static shipped(): MapCatalog { return new MapCatalog(() => loadMaps(shippedMapsDir())); }

  private get byName(): ReadonlyMap<string, ShippedMap> {
    if (!this.loaded) {
      const maps = typeof this.source === 'function' ? this.source() : this.source;
      this.loaded = new Map(maps.map((m) => [m.name, m]));
    }
    return this.loaded;
  }

  list(): ShippedMap[] { return [...this.byName.values()]; }
  get(name: string): ShippedMap | undefined { return this.byName.get(name); }

  /** The registers a device's registerMap stands for; an unknown map name is 422. */
  resolve(ref: string | RegisterMap): RegisterMap {
    if (typeof ref !== 'string') return ref;
    const m = this.byName.get(ref);
    if (!m) throw Errors.UNPROCESSABLE(`register map "${ref}" is not one Keng ships (GET /api/v1/modbus/maps lists them)`);
    return m;
  }
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
