/**
 * Presence, lastSeen, client attributes and latest values, in memory.
 *
 * These are called for every MQTT message (20,000 msg/s): O(1), no disk
 * I/O, and no allocation on the common path (existing latest values are
 * updated in place). DeviceStatus (status.ts) flushes dirty entries to
 * device_state.
 */
import type { Scalar } from '../core/events.js';
import type { LatestValue } from './types.js';

export interface PresenceEntry {
  online: boolean;
  lastSeen: number | null;
  /** Client attributes, merged (device protocol §9: latest value only). */
  attributes: Record<string, unknown>;
  latest: Map<string, LatestValue>;
}

export interface StoredState { online: number; last_seen: number | null; attributes_json: string; latest_json: string }

/** Keys that must never be copied onto a plain object. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

function parseJsonObject(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function isScalar(v: unknown): v is Scalar {
  return typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string';
}

export class PresenceStore {
  private readonly entries = new Map<string, PresenceEntry>();
  /** Device ids whose entry changed since the last flush. */
  readonly dirty = new Set<string>();
  private online = 0;

  get onlineCount(): number { return this.online; }

  get(id: string): PresenceEntry | undefined {
    return this.entries.get(id);
  }

  /** Creates the entry of a (new or newly loaded) device; `stored` restores a device_state row. */
  add(id: string, stored?: StoredState, keepOnline = false): PresenceEntry {
    const existing = this.entries.get(id);
    if (existing) return existing;
    const latest = new Map<string, LatestValue>();
    let attributes: Record<string, unknown> = {};
    if (stored) {
      attributes = parseJsonObject(stored.attributes_json);
      for (const [k, v] of Object.entries(parseJsonObject(stored.latest_json))) {
        const lv = v as Partial<LatestValue> | null;
        if (lv && typeof lv.ts === 'number' && isScalar(lv.value)) latest.set(k, { ts: lv.ts, value: lv.value });
      }
    }
    const e: PresenceEntry = {
      online: keepOnline && stored?.online === 1,
      lastSeen: stored?.last_seen ?? null,
      attributes,
      latest,
    };
    if (e.online) this.online++;
    this.entries.set(id, e);
    return e;
  }

  remove(id: string): PresenceEntry | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    if (e.online) this.online--;
    this.entries.delete(id);
    this.dirty.delete(id);
    return e;
  }

  /** Returns true when presence changed. Connect/disconnect also update lastSeen (device protocol §4). */
  setOnline(id: string, online: boolean, at: number): boolean {
    const e = this.entries.get(id);
    if (!e) return false;
    if (e.lastSeen === null || at > e.lastSeen) e.lastSeen = at;
    this.dirty.add(id);
    if (e.online === online) return false;
    e.online = online;
    this.online += online ? 1 : -1;
    return true;
  }

  touch(id: string, at: number): void {
    const e = this.entries.get(id);
    if (!e) return;
    if (e.lastSeen === null || at > e.lastSeen) {
      e.lastSeen = at;
      this.dirty.add(id);
    }
  }

  /** Keeps the newest ts per field: an older backlog reading never overwrites a newer value. */
  updateLatest(id: string, ts: number, values: Record<string, Scalar>): void {
    const e = this.entries.get(id);
    if (!e) return;
    let changed = false;
    for (const field in values) {
      const value = values[field]!;
      const cur = e.latest.get(field);
      if (cur === undefined) {
        e.latest.set(field, { ts, value });
        changed = true;
      } else if (ts >= cur.ts) {
        cur.ts = ts;
        cur.value = value;
        changed = true;
      }
    }
    if (changed) this.dirty.add(id);
  }

  /** Merges and returns a copy of the merged attributes (undefined for an unknown device). */
  mergeAttributes(id: string, attrs: Record<string, unknown>): Record<string, unknown> | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    for (const key of Object.keys(attrs)) {
      if (FORBIDDEN_KEYS.has(key)) continue;
      e.attributes[key] = attrs[key];
    }
    this.dirty.add(id);
    return { ...e.attributes };
  }

  attributes(id: string): Record<string, unknown> {
    const e = this.entries.get(id);
    return e ? { ...e.attributes } : {};
  }

  latest(id: string): Record<string, LatestValue> {
    const out: Record<string, LatestValue> = {};
    const e = this.entries.get(id);
    if (e) for (const [k, v] of e.latest) out[k] = { ts: v.ts, value: v.value };
    return out;
  }

  /** Row values for device_state. */
  serialize(id: string): StoredState | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    return {
      online: e.online ? 1 : 0,
      last_seen: e.lastSeen,
      attributes_json: JSON.stringify(e.attributes),
      latest_json: JSON.stringify(Object.fromEntries(e.latest)),
    };
  }
}
