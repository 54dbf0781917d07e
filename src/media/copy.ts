/**
 * This node's in-memory copy of the media records, for the synchronous readers
 * (library.ts header): loaded at start, updated by this node's own changes
 * and, in cluster mode, reloaded every `everyMs` so that other nodes' uploads,
 * changes and deletions arrive. A reload that began before a change made here
 * is dropped (it may not have seen the change); a failing reload keeps the last
 * copy and is logged once until it works again.
 */
import type { Logger } from '../core/logger.js';
import type { StoredMedia } from './repo.js';

export class MediaCopy {
  private rows = new Map<string, StoredMedia>();
  /** Bumped by every change made here: a reload that began before it is out of date. */
  private changes = 0;
  private timer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private failing = false;

  constructor(private readonly load: () => Promise<StoredMedia[]>, private readonly log: Logger) {}

  async start(everyMs: number): Promise<void> {
    this.rows = new Map((await this.load()).map((r) => [r.id, r]));
    if (everyMs > 0) {
      this.timer = setInterval(() => { this.reloading ??= this.reload().finally(() => { this.reloading = undefined; }); }, everyMs);
      this.timer.unref();
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.reloading;
  }

  /** The records as the database has them now (other nodes' changes). */
  async reload(): Promise<void> {
    const mark = this.changes;
    let rows: StoredMedia[];
    try {
      rows = await this.load();
    } catch (err) {
      if (!this.failing) this.log.warn({ err }, 'media: reloading the library records failed; retrying');
      this.failing = true;
      return;
    }
    if (this.failing) this.log.info('media: reloading the library records works again');
    this.failing = false;
    if (mark !== this.changes) return; // a change made here meanwhile: the next reload sees it too
    this.rows = new Map(rows.map((r) => [r.id, r]));
  }

  get(id: string): StoredMedia | undefined { return this.rows.get(id); }
  has(id: string): boolean { return this.rows.has(id); }
  values(): IterableIterator<StoredMedia> { return this.rows.values(); }

  /** A record as this node just wrote or read it (undefined: gone). */
  put(id: string, r: StoredMedia | undefined): void {
    this.changes++;
    if (r) this.rows.set(id, r);
    else this.rows.delete(id);
  }
}
