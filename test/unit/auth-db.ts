/** A fresh state store (every migration of the build) in a temporary directory, for the account unit tests. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { StateDb } from '../../src/storage/state/index.js';
import { createLogger } from '../../src/core/index.js';
import { ALL_MIGRATIONS } from '../../src/migrations.js';

export interface TempDb { state: StateDb; dir: string; close(): Promise<void>; reopen(): Promise<StateDb> }

export async function tempStateDb(): Promise<TempDb> {
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-auth-unit-'));
  const logger = createLogger('silent');
  const t: TempDb = {
    state: new StateDb({ dataDir: dir, logger, migrations: ALL_MIGRATIONS }),
    dir,
    async close() { await t.state.stop(); rmSync(dir, { recursive: true, force: true }); },
    async reopen() { await t.state.stop(); t.state = new StateDb({ dataDir: dir, logger, migrations: ALL_MIGRATIONS }); await t.state.start(); return t.state; },
  };
  await t.state.start();
  return t;
}

/** A clock tests move by hand. */
export function fakeClock(start = Date.UTC(2025, 10, 30, 0, 0, 0)): { now(): number; advance(ms: number): void; set(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => { t += ms; }, set: (ms) => { t = ms; } };
}
