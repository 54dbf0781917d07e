/**
 * The alert rules over a real state store (temporary directory, every
 * migration) with a fake AlertService, a fake area registry and vitest's fake
 * timers (Date.now included), so a test moves time by minutes in
 * milliseconds. `restart()` builds a new AlertRules on the same store and the
 * same alerts, as a restarted Keng would find them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { vi } from 'vitest';
import { Errors } from '../../src/core/errors.js';
import { EventBus, type AlertRuleEvent, type Scalar } from '../../src/core/events.js';
import { createLogger } from '../../src/core/logger.js';
import type { AuditInput } from '../../src/audit/log.js';
import type { Caller } from '../../src/broadcast/targets.js';
import type { Alert, AlertReach, CapAlert } from '../../src/alerts/index.js';
import { AlertRules, type Timers } from '../../src/alerts/rules/index.js';
import { ALL_MIGRATIONS } from '../../src/migrations.js';
import { StateDb, StateWindow, stateSqlitePort } from '../../src/storage/state/index.js';

export const MIN = 60_000;
const logger = createLogger('silent');

const AREAS = [
  { code: 'p1', name: 'Tỉnh', level: 'province', parent: null },
  { code: 'ca', name: 'Xã A', level: 'commune', parent: 'p1' },
  { code: 'va1', name: 'Thôn A1', level: 'village', parent: 'ca' },
  { code: 'cb', name: 'Xã B', level: 'commune', parent: 'p1' },
] as const;

/** AlertService as far as the rules use it: alerts in a map, Actual ones pending, others active. */
export class FakeAlerts {
  readonly all = new Map<string, Alert>();
  /** Set to make create() fail. */
  failWith: Error | null = null;
  private n = 0;

  async create(c: Caller, cap: CapAlert, reach: AlertReach): Promise<Alert> {
    await Promise.resolve();
    if (this.failWith) throw this.failWith;
    for (const a of reach.areas) if (!c.inScope(a)) throw Errors.FORBIDDEN(`area "${a}" is outside your areas`);
    const now = Date.now();
    const alert: Alert = {
      id: `al-${++this.n}`, cap, state: cap.status === 'Actual' ? 'pending_approval' : 'active', areas: reach.areas, devices: [],
      expiresAt: cap.expires!, createdBy: c.principal.id, createdAt: now, playedAtOnce: false, updatedAt: now,
    };
    this.all.set(alert.id, alert);
    return alert;
  }

  async get(c: Caller, id: string): Promise<Alert> {
    const a = this.all.get(id);
    if (!a || !a.areas.some((x) => c.inScope(x))) throw Errors.NOT_FOUND(`Alert "${id}"`);
    return a;
  }

  async reject(c: Caller, id: string, reason?: string): Promise<Alert> {
    const a = await this.get(c, id);
    if (a.state !== 'pending_approval') throw Errors.CONFLICT(`alert "${id}" is ${a.state}`);
    const next: Alert = { ...a, state: 'rejected', endedBy: c.principal.id, endedAt: Date.now(), endReason: reason ?? 'rejected' };
    this.all.set(id, next);
    return next;
  }

  async list(c: Caller, q: { from?: number } = {}): Promise<Alert[]> {
    return [...this.all.values()].filter((a) => a.areas.some((x) => c.inScope(x)) && (q.from === undefined || a.createdAt >= q.from)).reverse();
  }

  /** The alerts raised, oldest first. */
  raised(): Alert[] { return [...this.all.values()]; }
}

/** Timers over the (faked) globals. */
const timers: Timers = { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };

export interface Harness {
  rules: AlertRules;
  alerts: FakeAlerts;
  bus: EventBus;
  audit: AuditInput[];
  events: AlertRuleEvent[];
  state: StateDb;
  /** The registry's devices (for 'device.changed'); readings need no registration. */
  devices: Map<string, { area: string; kind: 'sensor' | 'speaker' | 'gateway'; enabled: boolean }>;
  /** A caller (operator) of the given areas. */
  caller(...areas: string[]): Caller;
  /** A reading of `device` (area va1, kind sensor unless told) at the current (fake) time. */
  send(device: string, values: Record<string, Scalar>, opts?: { area?: string; kind?: string; ts?: number }): Promise<void>;
  /** Moves the fake time (timers fire, promises settle). */
  advance(ms: number): Promise<void>;
  /** Stops the rules and starts new ones on the same store and alerts. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Lets the episode's writes (state window units, committed from a real setImmediate) and what
 * follows them (the fake alert raised, the next write) run: a few rounds of the timers due now.
 */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await vi.advanceTimersByTimeAsync(0);
    await new Promise<void>((resolve) => { setImmediate(resolve); });
  }
}

/**
 * What the tests fake: time and timers, but not setImmediate, from which the state window commits (a test
 * awaiting a rule's creation waits for that commit).
 */
export const FAKED: Array<'setTimeout' | 'clearTimeout' | 'setInterval' | 'clearInterval' | 'Date'> = ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'];

export async function startHarness(): Promise<Harness> {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-rules-'));
  const state = new StateDb({ dataDir: dir, logger, migrations: ALL_MIGRATIONS });
  await state.start();
  const insert = state.db.prepare('INSERT INTO areas (code, name, level, parent, created_at) VALUES (?, ?, ?, ?, 0)');
  for (const a of AREAS) insert.run(a.code, a.name, a.level, a.parent);
  const devices = new Map<string, { area: string; kind: 'sensor' | 'speaker' | 'gateway'; enabled: boolean }>();
  const registry = { getArea: (code: string) => AREAS.find((a) => a.code === code), getDevice: (id: string) => devices.get(id) };
  const alerts = new FakeAlerts();
  const bus = new EventBus();
  const audit: AuditInput[] = [];
  const events: AlertRuleEvent[] = [];
  bus.on('alert.rule', (e) => events.push(e));
  // The state window as the server has it (on the store's own connection): the rules write through its units.
  const windowDb = stateSqlitePort(state);
  const window = new StateWindow({ db: windowDb, logger });
  await window.start();
  const make = () => new AlertRules({
    window, windowDb, registry, alerts, bus, logger, clock: { now: () => Date.now() }, timers, sender: 'keng@xa-a',
    audit: { record: async (e) => { audit.push(e); return {} as never; } },
  });
  const h: Harness = {
    rules: make(), alerts, bus, audit, events, state, devices,
    caller: (...areas) => ({
      principal: { kind: 'user', id: `op-${areas.join('-')}`, role: 'operator', areas },
      inScope: (code) => {
        for (let cur: string | null | undefined = code; cur; cur = registry.getArea(cur)?.parent) if (areas.includes(cur)) return true;
        return false;
      },
    }),
    async send(device, values, opts = {}) {
      bus.emit('telemetry', { deviceId: device, area: opts.area ?? 'va1', kind: opts.kind ?? 'sensor', ts: opts.ts ?? Date.now(), values });
      await settle();
    },
    advance: async (ms) => { await vi.advanceTimersByTimeAsync(ms); await settle(); },
    async restart() {
      await h.rules.stop();
      h.rules = make();
      await h.rules.start();
    },
    async close() {
      await h.rules.stop();
      await window.stop();
      await state.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await h.rules.start();
  return h;
}

/** A rule body: water level above 250 cm, clear below 230 cm, on commune ca. */
export function waterRule(p: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'Mực nước sông', area: 'ca', kind: 'sensor', field: 'water_level_cm', op: '>', threshold: 250, clearThreshold: 230,
    forSec: 600, minDevices: 1, cooldownSec: 3600,
    alert: { event: 'Lũ', severity: 'Severe', urgency: 'Immediate', certainty: 'Observed', headline: 'Mực nước sông vượt báo động 3', expiresAfterSec: 3 * 3600 },
    ...p,
  };
}
