/**
 * Media fetching as a speaker does it (guide §12.1): fetch the signed URL at
 * once, treat it as opaque, verify SHA-256 before playing ("sha256 mismatch"
 * otherwise), cache by hash (also what `media.prefetch` fetched, §12.7).
 * Streams are probed (response headers only).
 *
 * Plain node:http(s), one connection per download (agent: false), like a
 * device's own HTTP client: the WHATWG fetch() of Node costs ~1 ms of CPU per
 * request, and its shared connection pool scans every open connection to pick
 * one, so 2,000 speakers downloading at once in one process spent seconds of
 * CPU in it (profile of bench:broadcast) and delayed the other speakers'
 * answers.
 */
import { createHash } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';

/** Download attempts on network errors and transient HTTP answers. */
const FETCH_ATTEMPTS = 4;
/** A balancer's answers when the node behind it went away: another node serves the same link. */
const TRANSIENT_STATUS = new Set([502, 503, 504]);

export interface FetchResult { ok: true; bytes: number; fromCache: boolean }
export interface FetchFailure { ok: false; detail: string }

export class MediaCache {
  private readonly known = new Set<string>();
  /** Downloads under way by hash: a broadcast.play arriving while its media.prefetch still downloads (§12.7) waits for that one. */
  private readonly inFlight = new Map<string, Promise<FetchResult | FetchFailure>>();
  constructor(private readonly timeoutMs = 30_000) {}

  /** Downloads made (a cache hit, or joining one under way, is none). */
  downloads = 0;

  has(sha256: string): boolean { return this.known.has(sha256); }

  fetchMedia(url: string, sha256: string): Promise<FetchResult | FetchFailure> {
    if (this.known.has(sha256)) return Promise.resolve({ ok: true, bytes: 0, fromCache: true });
    const running = this.inFlight.get(sha256);
    if (running) return running.then((r) => (r.ok ? { ...r, fromCache: true } : this.download(url, sha256)));
    const p = this.download(url, sha256).finally(() => this.inFlight.delete(sha256));
    this.inFlight.set(sha256, p);
    return p;
  }

  private async download(url: string, sha256: string): Promise<FetchResult | FetchFailure> {
    this.downloads++;
    // Like real firmware (firmware-protocols §12.1 advice): a network failure (e.g. a whole village fetching at
    // once) or a balancer's 502/503/504 (the node behind it went away) is retried a few times with jittered
    // back-off; an HTTP refusal (403, 404) or a wrong checksum is not.
    let res: { status: number; body: Buffer } | undefined;
    for (let attempt = 1; !res; attempt++) {
      let failure: string;
      try {
        res = await get(url, this.timeoutMs, true);
        if (!TRANSIENT_STATUS.has(res.status)) break;
        failure = `HTTP ${res.status}`;
        res = undefined;
      } catch (err) {
        failure = (err as Error).message;
      }
      if (attempt >= FETCH_ATTEMPTS) return { ok: false, detail: `download failed: ${failure}` };
      await new Promise((r) => setTimeout(r, attempt * (250 + Math.random() * 750)));
    }
    if (res.status !== 200) return { ok: false, detail: `download failed: HTTP ${res.status}` };
    const got = createHash('sha256').update(res.body).digest('hex');
    if (got !== sha256) return { ok: false, detail: 'sha256 mismatch' };
    this.known.add(sha256);
    return { ok: true, bytes: res.body.length, fromCache: false };
  }

  async probeStream(url: string): Promise<FetchResult | FetchFailure> {
    try {
      const res = await get(url, this.timeoutMs, false);
      if (res.status !== 200) return { ok: false, detail: `stream unreachable: HTTP ${res.status}` };
      return { ok: true, bytes: 0, fromCache: false };
    } catch (err) {
      return { ok: false, detail: `stream unreachable: ${(err as Error).message}` };
    }
  }
}

/**
 * GET on its own connection. readBody false: resolve on the response headers and drop the connection
 * (a stream never ends). The timeout covers the whole exchange.
 */
function get(url: string, timeoutMs: number, readBody: boolean): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    let u: URL;
    try { u = new URL(url); } catch { reject(new Error('invalid URL')); return; }
    const mod = u.protocol === 'https:' ? https : u.protocol === 'http:' ? http : null;
    if (!mod) { reject(new Error(`unsupported protocol ${u.protocol}`)); return; }
    const req = mod.get(u, { agent: false }, (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      if (!readBody || status !== 200) {
        clearTimeout(timer);
        res.destroy();
        resolve({ status, body: Buffer.alloc(0) });
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { clearTimeout(timer); resolve({ status, body: Buffer.concat(chunks) }); });
      res.on('error', (err) => { clearTimeout(timer); reject(err); });
      res.on('close', () => { if (!res.complete) { clearTimeout(timer); reject(new Error('connection closed before the end of the body')); } });
    });
    const timer = setTimeout(() => req.destroy(new Error(`timeout after ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => { clearTimeout(timer); reject(err); });
  });
}
