/**
 * The telemetry connections' page caches (embedded-db.ts, WRITER_CACHE_KIB): small for the
 * connections that write, whose commits can walk the whole cache; large for history queries.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EmbeddedWriter, READER_CACHE_KIB, WRITER_CACHE_KIB } from '../../src/storage/telemetry/embedded-db.js';
import { EmbeddedReader } from '../../src/storage/telemetry/embedded-reader.js';
import { OutboxDb } from '../../src/storage/telemetry/outbox-db.js';

const cacheKiB = (owner: object): number => {
  const db = (owner as { db: Database.Database }).db;
  return -Number(db.pragma('cache_size', { simple: true }));
};

describe('telemetry page caches', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(path.join(tmpdir(), 'keng-cache-')); });
  afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

  it('the writer and the outbox use the small cache, the history reader the large one', () => {
    expect(WRITER_CACHE_KIB).toBeLessThan(READER_CACHE_KIB);
    const w = new EmbeddedWriter(path.join(dir, 'telemetry.db'), 'full');
    const r = new EmbeddedReader(path.join(dir, 'telemetry.db'));
    const o = new OutboxDb(path.join(dir, 'outbox.db'), 'full', 'telemetry', 100, 1 << 20);
    try {
      expect(cacheKiB(w)).toBe(WRITER_CACHE_KIB);
      expect(cacheKiB(o)).toBe(WRITER_CACHE_KIB);
      expect(cacheKiB(r)).toBe(READER_CACHE_KIB);
    } finally {
      r.close(); o.close(); w.close();
    }
  });

  it('a writer opened with another cache size (benchmarks) gets it', () => {
    const w = new EmbeddedWriter(path.join(dir, 'telemetry.db'), 'full', 32_768);
    try { expect(cacheKiB(w)).toBe(32_768); } finally { w.close(); }
  });
});
