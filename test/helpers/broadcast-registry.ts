/**
 * The device registry a broadcast executor sees, in memory, for tests: one commune `c` (province `p`) with
 * villages `v1` and `v2`, and the devices given. Presence is the broker's only (isOnlineAnywhere false).
 */
import type { Area, Device } from '../../src/devices/types.js';

const AREAS: Area[] = [
  { code: 'p', name: 'Tỉnh', level: 'province', parent: null, createdAt: 0 },
  { code: 'c', name: 'Xã An Bình', level: 'commune', parent: 'p', createdAt: 0 },
  { code: 'v1', name: 'Thôn Đông', level: 'village', parent: 'c', createdAt: 0 },
  { code: 'v2', name: 'Thôn Tây', level: 'village', parent: 'c', createdAt: 0 },
];

/** A registered device (a speaker unless `kind` says otherwise). */
export function testDevice(id: string, area: string, kind: Device['kind'] = 'speaker'): Device {
  return { id, kind, name: `Loa ${id}`, area, location: null, model: null, enabled: true, createdAt: 0, historyFrom: null };
}

export function broadcastRegistry(devices: readonly Device[], attributes: (id: string) => Record<string, unknown> = () => ({})) {
  const subtree = (code: string): string[] => [code, ...AREAS.filter((a) => a.parent === code).flatMap((a) => subtree(a.code))];
  return {
    getArea: (c: string) => AREAS.find((a) => a.code === c),
    getDevice: (id: string) => devices.find((d) => d.id === id),
    // Presence as the registry knows it (other nodes' devices in cluster mode): here only the broker's connections count.
    isOnlineAnywhere: (): boolean => false,
    subtree,
    listDevices: (f: { area?: string; kind?: string } = {}) => devices.filter((d) => (!f.area || subtree(f.area).includes(d.area)) && (!f.kind || d.kind === f.kind)),
    attributes,
  };
}
