/**
 * Main-thread side of sqlite-worker.ts: request/reply over postMessage.
 *
 * Worker path: tsc compiles this directory to dist/src/storage/telemetry/, where
 * `new URL('./sqlite-worker.js', import.meta.url)` is right. Under vitest the
 * sources run as .ts and a plain Worker cannot load TypeScript, so when this
 * module's URL ends in `.ts` we use the compiled dist twin instead (`npm test`
 * builds first). If the twin is missing, start() fails with a clear message.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { Logger } from '../../core/logger.js';
import type { WorkerInit, WorkerReply } from './sqlite-worker.js';

export function resolveWorkerUrl(base: string = import.meta.url): URL {
  if (!base.endsWith('.ts')) return new URL('./sqlite-worker.js', base);
  const here = path.dirname(fileURLToPath(base)); // <root>/src/storage/telemetry
  const root = path.resolve(here, '..', '..', '..');
  const rel = path.relative(root, here); // src/storage/telemetry
  const js = path.join(root, 'dist', rel, 'sqlite-worker.js');
  if (!existsSync(js)) throw new Error(`telemetry worker not built: ${js} is missing (run \`npm run build\` before tests)`);
  return pathToFileURL(js);
}

/** True when the compiled worker is older than its TypeScript sources (dev hint only). */
export function workerLooksStale(url: URL): boolean {
  try {
    const js = statSync(fileURLToPath(url)).mtimeMs;
    const dir = path.dirname(fileURLToPath(import.meta.url));
    if (!import.meta.url.endsWith('.ts')) return false;
    for (const f of ['sqlite-worker.ts', 'embedded-db.ts', 'embedded-reader.ts', 'field-types.ts', 'line-split.ts', 'outbox-db.ts', 'outbox-purge.ts', 'line-protocol.ts', 'windows.ts', 'record-pack.ts']) {
      if (statSync(path.join(dir, f)).mtimeMs > js) return true;
    }
  } catch { /* not determinable */ }
  return false;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class WorkerError extends Error {
  constructor(message: string, readonly code?: string) { super(message); this.name = 'WorkerError'; }
}

/**
 * Replies come back on a channel of their own, and the worker bumps a shared
 * counter after each one, so the broker's thread can take them between two
 * socket reads (poll()) instead of only at the next turn of its event loop.
 * Why: a commit finishes while the broker thread is still parsing the other
 * devices' messages of the same turn (a few ms at full load); taken there, the
 * PUBACKs of the committed messages leave at once and those devices send their
 * next messages while the broker works, instead of every device waiting for
 * the end of the turn and then all at once (the broker thread idle meanwhile).
 */
interface ReplyPath { port: MessagePort; signal: Int32Array; seen: number }

export class WorkerClient {
  private worker: Worker | null = null;
  private replies: ReplyPath | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exited: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(readonly name: string, private readonly init: WorkerInit, private readonly logger: Logger) {}

  get running(): boolean { return this.worker !== null; }

  async start(): Promise<void> {
    this.closed = false;
    const url = resolveWorkerUrl();
    if (workerLooksStale(url)) this.logger.warn({ worker: url.href }, 'compiled telemetry worker is older than its sources; run `npm run build`');
    const { port1, port2 } = new MessageChannel();
    const signal = new Int32Array(new SharedArrayBuffer(4));
    const w = new Worker(url, { workerData: { ...this.init, replies: port2, signal }, transferList: [port2], name: this.name });
    this.worker = w;
    const replies: ReplyPath = { port: port1, signal, seen: 0 };
    port1.on('message', (m: WorkerReply) => this.onReply(m));
    w.once('exit', () => port1.close());
    this.exited = new Promise((resolve) => w.once('exit', () => resolve()));
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: WorkerReply): void => {
        if (m.id !== 0) return;
        w.off('message', onMsg); w.off('error', onErr);
        if ('ready' in m) resolve();
        else if ('fatal' in m) { this.worker = null; void w.terminate(); reject(new WorkerError(m.fatal.message, m.fatal.code)); }
      };
      const onErr = (e: Error): void => { w.off('message', onMsg); this.worker = null; reject(e); };
      w.on('message', onMsg);
      w.once('error', onErr);
    });
    this.replies = replies;
    w.on('error', (err) => { this.logger.error({ err, worker: this.name }, 'telemetry worker failed'); this.failAll(err); });
    w.on('exit', (code) => {
      if (this.worker === w) { this.worker = null; this.replies = null; }
      this.failAll(new WorkerError(`worker ${this.name} exited (${code})`));
      if (this.closed) return;
      // Unexpected (native crash, out of memory): calls fail meanwhile (writeBatch rejects, nothing is
      // acknowledged); start a new thread on the same database after a pause.
      this.logger.error({ code, worker: this.name }, 'telemetry worker exited; restarting it');
      setTimeout(() => {
        if (this.closed || this.worker) return;
        this.start().catch((err: unknown) => this.logger.error({ err, worker: this.name }, 'telemetry worker restart failed'));
      }, 1_000).unref();
    });
  }

  /**
   * Take the replies the worker has posted so far, now (one atomic read when
   * there are none). Their promises settle in the microtasks after the
   * caller's current task, not at the next turn of the event loop.
   */
  poll(): void {
    const r = this.replies;
    if (r === null) return;
    const n = Atomics.load(r.signal, 0);
    if (n === r.seen) return;
    r.seen = n;
    for (let m = receiveMessageOnPort(r.port); m !== undefined; m = receiveMessageOnPort(r.port)) {
      this.onReply(m.message as WorkerReply);
    }
  }

  private onReply(m: WorkerReply): void {
    if (m.id === 0) return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if ('ok' in m && m.ok) p.resolve(m.result);
    else if ('error' in m) p.reject(new WorkerError(m.error.message, m.error.code));
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Call a method of the worker's target; rejects if the worker is gone. */
  call<T>(op: string, ...args: unknown[]): Promise<T> {
    return this.callTransfer<T>(op, args, []);
  }

  /** call() that moves `transfer` (e.g. a packed batch's buffer, record-pack.ts) instead of copying it. */
  callTransfer<T>(op: string, args: unknown[], transfer: ArrayBuffer[]): Promise<T> {
    const w = this.worker;
    if (!w || this.closed) return Promise.reject(new WorkerError(`worker ${this.name} is not running`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      w.postMessage({ id, op, args }, transfer);
    });
  }

  /** Finish queued requests, close the database, end the thread (bounded). */
  async close(timeoutMs = 10_000): Promise<void> {
    const w = this.worker;
    if (!w) return;
    const closing = this.call('close').catch(() => undefined);
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs); });
    await Promise.race([closing.then(() => this.exited), timeout]);
    clearTimeout(timer);
    if (this.worker) { await w.terminate(); this.worker = null; }
  }
}
