/**
 * Small media files kept in memory for the signed download route.
 *
 * A broadcast to 2,000 speakers makes 2,000 downloads of the same file within
 * a second or two; each cost a stat, an open, a read and a close (four thread
 * pool round trips) and a file stream on the controller's event loop. Stored
 * media never change (a file is written once under its media id and only
 * deleted), so its bytes can be served from memory. Entries are checked
 * against the record's size; the route still looks the record up first, so a
 * deleted media item is never served. Bounded: files up to maxFileBytes, at
 * most maxTotalBytes in all, least recently used dropped first.
 */
import { readFile } from 'node:fs/promises';

export class MediaFileCache {
  private readonly entries = new Map<string, Buffer>();
  private readonly loading = new Map<string, Promise<Buffer | undefined>>();
  private total = 0;

  constructor(private readonly o: { maxFileBytes?: number; maxTotalBytes?: number } = {}) {}

  /** The file's bytes, or undefined when it is too large to keep (or unreadable: the caller then streams it). */
  async get(file: string, size: number): Promise<Buffer | undefined> {
    if (size > (this.o.maxFileBytes ?? 2 * 1024 * 1024)) return undefined;
    const hit = this.entries.get(file);
    if (hit && hit.length === size) {
      this.entries.delete(file); // re-insert: most recently used last
      this.entries.set(file, hit);
      return hit;
    }
    // Many speakers ask at once: one read for all of them.
    let p = this.loading.get(file);
    if (!p) {
      p = readFile(file).then((buf) => { this.put(file, buf); return buf.length === size ? buf : undefined; }, () => undefined)
        .finally(() => this.loading.delete(file));
      this.loading.set(file, p);
    }
    return p;
  }

  private put(file: string, buf: Buffer): void {
    const old = this.entries.get(file);
    if (old) { this.total -= old.length; this.entries.delete(file); }
    this.entries.set(file, buf);
    this.total += buf.length;
    const max = this.o.maxTotalBytes ?? 32 * 1024 * 1024;
    for (const [k, v] of this.entries) {
      if (this.total <= max || k === file) break;
      this.entries.delete(k);
      this.total -= v.length;
    }
  }
}
