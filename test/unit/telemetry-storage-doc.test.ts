/**
 * docs/telemetry-storage.md shows `sqlite3` commands for reading the embedded
 * store and the dead-letter tables: they are run here, as written, on stores
 * made by the real writer.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddedWriter } from '../../src/storage/telemetry/embedded-db.js';
import { OutboxDb } from '../../src/storage/telemetry/outbox-db.js';

const DOC = readFileSync(new URL('../../docs/telemetry-storage.md', import.meta.url), 'utf8');

/** The first ```sh block after `heading`. */
function shBlock(heading: string): string {
  const at = DOC.indexOf(heading);
  expect(at, heading).toBeGreaterThanOrEqual(0);
  const m = /```sh\n([\s\S]*?)```/.exec(DOC.slice(at));
  expect(m, `sh block after ${heading}`).not.toBeNull();
  return m![1]!;
}

function run(dir: string, script: string): string {
  const r = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, encoding: 'utf8', timeout: 20_000 });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

describe('docs/telemetry-storage.md: its sqlite3 commands', () => {
  let dir: string;
  const now = Date.now();
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'keng-doc-'));
    mkdirSync(path.join(dir, 'data'));
    const w = new EmbeddedWriter(path.join(dir, 'data/telemetry.db'), 'full');
    w.write([
      { deviceId: 'soil-1', kind: 'sensor', ts: now - 120_000, values: { soil_moisture: 31.5, pump_on: true, note: 'khô' } },
      { deviceId: 'soil-2', kind: 'sensor', ts: now - 120_000, values: { soil_moisture: 12 } },
    ]);
    w.compact(now); // the older point moves to `points`; the next one stays in `recent_points`
    w.write([{ deviceId: 'soil-1', kind: 'sensor', ts: now - 1000, values: { soil_moisture: 30.25, rssi: -71 } }]);
    w.write([{ deviceId: 'soil-1', kind: 'sensor', ts: now, values: { rssi: 'weak' } }]); // a type change: dead letter
    w.close();
    new OutboxDb(path.join(dir, 'data/influx-queue.db'), 'full', 'telemetry', 1000, 64 * 1024 * 1024).close();
  });
  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  it('reads one device\'s readings from both tables of points, newest first', () => {
    const out = run(dir, shBlock('## Inside the embedded store'));
    const rows = out.trim().split('\n').slice(2).map((l) => l.trim().split(/\s{2,}/));
    expect(rows.map((r) => [r[1], r[2]])).toEqual([
      ['soil_moisture', '30.25'], ['rssi', '-71'],
      ['soil_moisture', '31.5'], ['pump_on', '1'], ['note', 'khô'],
    ]);
  });

  it('lists the dead letters', () => {
    const out = run(dir, shBlock('Read it with the `sqlite3` shell'));
    expect(out).toMatch(/soil-1\s+rssi\s+.*weak\s+string\s+field_type_conflict\s+field is number, value is string/);
  });
});
