/**
 * Media fetching as a speaker does it (guide §12.1): fetch the signed URL at
 * once, treat it as opaque, verify SHA-256 before playing ("sha256 mismatch"
 * otherwise), cache by hash. Streams are probed (response headers only).
 */
import { createHash } from 'node:crypto';

/** Download attempts on network errors. */
const FETCH_ATTEMPTS = 4;

export interface FetchResult { ok: true; bytes: number; fromCache: boolean }
export interface FetchFailure { ok: false; detail: string }

export class MediaCache {
  private readonly known = new Set<string>();
  constructor(private readonly timeoutMs = 30_000) {}

  async fetchMedia(url: string, sha256: string): Promise<FetchResult | FetchFailure> {
    if (this.known.has(sha256)) return { ok: true, bytes: 0, fromCache: true };
    // Like real firmware: a network failure (e.g. a whole village fetching at once) is retried a few
    // times with jittered back-off; an HTTP refusal or a wrong checksum is not.
    let res: Response | undefined;
    for (let attempt = 1; !res; attempt++) {
      try {
        res = await fetch(url, { signal: AbortSignal.timeout(this.timeoutMs) });
      } catch (err) {
        if (attempt >= FETCH_ATTEMPTS) return { ok: false, detail: `download failed: ${(err as Error).message}` };
        await new Promise((r) => setTimeout(r, attempt * (250 + Math.random() * 750)));
      }
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      return { ok: false, detail: `download failed: HTTP ${res.status}` };
    }
    const buf = Buffer.from(await res.arrayBuffer());
    const got = createHash('sha256').update(buf).digest('hex');
    if (got !== sha256) return { ok: false, detail: 'sha256 mismatch' };
    this.known.add(sha256);
    return { ok: true, bytes: buf.length, fromCache: false };
  }

  async probeStream(url: string): Promise<FetchResult | FetchFailure> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.timeoutMs);
    try {
      const res = await fetch(url, { signal: ctl.signal });
      if (res.status !== 200) return { ok: false, detail: `stream unreachable: HTTP ${res.status}` };
      return { ok: true, bytes: 0, fromCache: false };
    } catch (err) {
      return { ok: false, detail: `stream unreachable: ${(err as Error).message}` };
    } finally {
      clearTimeout(timer);
      ctl.abort();
    }
  }
}
