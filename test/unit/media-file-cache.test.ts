/** MediaFileCache: small stored files served from memory, one read for many requests, bounded. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MediaFileCache } from '../../src/media/file-cache.js';

let dir: string | undefined;
afterEach(() => { if (dir) rmSync(dir, { recursive: true, force: true }); dir = undefined; vi.restoreAllMocks(); });

function file(name: string, size: number): string {
  dir ??= mkdtempSync(path.join(tmpdir(), 'keng-fc-'));
  const p = path.join(dir, name);
  writeFileSync(p, Buffer.alloc(size, name.charCodeAt(0)));
  return p;
}

describe('MediaFileCache', () => {
  it('returns the bytes, reads the file once for concurrent requests, then serves from memory', async () => {
    const p = file('a.mp3', 1000);
    const c = new MediaFileCache();
    const got = await Promise.all(Array.from({ length: 50 }, () => c.get(p, 1000)));
    expect(got.every((b) => b?.length === 1000 && b === got[0])).toBe(true);
    rmSync(p); // from memory now
    expect((await c.get(p, 1000))?.length).toBe(1000);
  });

  it('does not keep files above maxFileBytes, a size that does not match the record, or an unreadable file', async () => {
    const c = new MediaFileCache({ maxFileBytes: 500 });
    expect(await c.get(file('b.mp3', 501), 501)).toBeUndefined();
    expect(await c.get(file('c.mp3', 100), 99)).toBeUndefined();
    expect(await c.get(path.join(dir!, 'missing.mp3'), 10)).toBeUndefined();
  });

  it('drops the least recently used files beyond maxTotalBytes', async () => {
    const c = new MediaFileCache({ maxTotalBytes: 250 });
    const [x, y, z] = [file('x.mp3', 100), file('y.mp3', 100), file('z.mp3', 100)];
    await c.get(x, 100);
    await c.get(y, 100);
    await c.get(x, 100); // x used last: y goes first
    await c.get(z, 100);
    rmSync(x); rmSync(y); rmSync(z);
    expect(await c.get(x, 100)).toBeDefined();
    expect(await c.get(z, 100)).toBeDefined();
    expect(await c.get(y, 100)).toBeUndefined();
  });
});
