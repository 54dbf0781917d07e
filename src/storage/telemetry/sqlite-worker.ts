/**
 * Worker thread for all telemetry SQLite work (because the main thread runs the
 * MQTT broker; commits with synchronous=FULL block for an fsync, so they must
 * not run there). One worker per role:
 *  - 'writer'  embedded readings DB, one transaction per writeBatch;
 *  - 'reader'  read-only connection for history queries (see embedded-store.ts);
 *  - 'outbox'  the on-disk queue in front of InfluxDB.
 * Requests are handled strictly in arrival order; each gets one reply.
 *
 * Group commit: when several requests of a batchable op ('write', 'enqueue')
 * are already waiting, they run in one transaction (`<op>Many`), so one WAL
 * sync serves all of them; each still gets its own reply, after the commit.
 * The writer also runs its compaction steps here, between requests.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { EmbeddedWriter } from './embedded-db.js';
import { EmbeddedReader } from './embedded-reader.js';
import { OutboxDb } from './outbox-db.js';
import { isPacked, unpackRecords } from './record-pack.js';

/** A batch argument as sent: records, or packed (record-pack.ts). */
function batchOf(arg: unknown): unknown[] {
  return isPacked(arg) ? unpackRecords(arg) : (arg as unknown[]);
}

function batchSize(arg: unknown): number {
  return isPacked(arg) ? arg.count : (arg as unknown[]).length;
}

export type WorkerInit =
  | { role: 'writer'; path: string; sync: 'full' | 'normal' }
  | { role: 'reader'; path: string }
  | { role: 'outbox'; path: string; sync: 'full' | 'normal'; measurement: string; batchLines: number; capBytes: number };

/** What worker-client.ts adds to the init: the reply channel and the counter bumped after each reply. */
export interface WorkerWiring { replies?: MessagePort; signal?: Int32Array }

export interface WorkerRequest { id: number; op: string; args: unknown[] }
export type WorkerReply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { message: string; code?: string } }
  | { id: 0; ready: true }
  | { id: 0; fatal: { message: string; code?: string } };

type Target = { close(): void } & Record<string, unknown>;

function errInfo(err: unknown): { message: string; code?: string } {
  const e = err as { message?: unknown; code?: unknown };
  return { message: String(e?.message ?? err), ...(typeof e?.code === 'string' ? { code: e.code } : {}) };
}

function main(): void {
  const port = parentPort;
  if (!port) return;
  const init = workerData as WorkerInit & WorkerWiring;
  const out = init.replies ?? port;
  const signal = init.signal;
  // Post, then bump the counter: a reader that sees the new count finds the reply queued.
  const reply = (m: WorkerReply): void => {
    out.postMessage(m);
    if (signal) Atomics.add(signal, 0, 1);
  };
  let target: Target;
  try {
    switch (init.role) {
      case 'writer': target = new EmbeddedWriter(init.path, init.sync) as unknown as Target; break;
      case 'reader': target = new EmbeddedReader(init.path) as unknown as Target; break;
      case 'outbox': target = new OutboxDb(init.path, init.sync, init.measurement, init.batchLines, init.capBytes) as unknown as Target; break;
    }
  } catch (err) {
    port.postMessage({ id: 0, fatal: errInfo(err) } satisfies WorkerReply);
    return;
  }
  port.postMessage({ id: 0, ready: true } satisfies WorkerReply);
  const writer = init.role === 'writer' ? (target as unknown as EmbeddedWriter) : null;
  let compactTimer: NodeJS.Timeout | null = null;
  let closed = false;
  const compactSoon = (): void => {
    if (!writer || closed || compactTimer || !writer.compactionDue()) return;
    compactTimer = setTimeout(() => {
      compactTimer = null;
      if (closed) return;
      try { writer.compact(); } catch { /* retried at the next step; rows stay in recent */ }
      compactSoon();
    }, 0);
  };
  if (writer) setInterval(compactSoon, 1_000).unref();

  const handle = (req: WorkerRequest): void => {
    if (closed) return;
    if (req.op === 'close') {
      closed = true;
      if (compactTimer) clearTimeout(compactTimer);
      try { target.close(); } catch { /* closing anyway */ }
      reply({ id: req.id, ok: true, result: null });
      if (out !== port) out.close();
      port.close();
      return;
    }
    const many = target[`${req.op}Many`];
    if (typeof many === 'function') {
      const group: WorkerRequest[] = [req];
      let next: WorkerRequest | undefined;
      let items = batchSize(req.args[0]);
      while (items < GROUP_MAX_ITEMS) {
        const m = receiveMessageOnPort(port as MessagePort);
        if (!m) break;
        const r = m.message as WorkerRequest;
        if (r.op !== req.op) { next = r; break; }
        group.push(r); items += batchSize(r.args[0]);
      }
      try {
        // The writer reads packed batches as they are (embedded-db.ts writeMany); the outbox takes records.
        const batches = group.map((g) => (writer ? g.args[0] : batchOf(g.args[0])));
        const results = (many as (a: unknown[], ...rest: unknown[]) => unknown[]).call(target, batches, ...req.args.slice(1));
        group.forEach((g, i) => reply({ id: g.id, ok: true, result: results[i] }));
      } catch (err) {
        for (const g of group) reply({ id: g.id, ok: false, error: errInfo(err) });
      }
      compactSoon();
      if (next) handle(next);
      return;
    }
    try {
      const fn = target[req.op];
      if (typeof fn !== 'function') throw new Error(`unknown op ${req.op}`);
      const result = (fn as (...a: unknown[]) => unknown).apply(target, req.args);
      reply({ id: req.id, ok: true, result });
    } catch (err) {
      reply({ id: req.id, ok: false, error: errInfo(err) });
    }
  };
  port.on('message', handle);
}

/** Upper bound of records grouped into one transaction. */
const GROUP_MAX_ITEMS = 50_000;

main();
