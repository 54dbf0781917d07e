/**
 * The state window: many small state writes (RPC commands, broadcast targets, their log lines)
 * gathered for a few milliseconds and committed as ONE transaction through the `Db` port, on
 * SQLite and on PostgreSQL alike. It replaced the synchronous group commit of the broadcast path,
 * which kept a SQLite transaction open across event-loop turns.
 *
 * What goes in a window:
 *  - intents (`add`): a small record of one kind (an RPC command to insert, a target to move…). A
 *    kind (`WindowKind`, defined by the repository that owns the table) writes ALL its intents of a
 *    window with one or two statements of fixed SQL (one JSON parameter), so a window costs a few
 *    statements whatever it holds, and the driver's statement cache always hits. Kinds run by
 *    `phase` (inserts, then compare-and-set updates, then log lines), each phase's kinds in the order
 *    their first intent arrived; a kind tells each intent its outcome (e.g. whether its CAS applied).
 *  - units (`unit`): a function given the transaction, for the rare writes that are not intents (API
 *    requests, alerts, claims). They run after the intents, in arrival order. Rules: await only the
 *    transaction inside (the port's rule, sql.ts); decide conflicts in SQL (`ON CONFLICT DO NOTHING
 *    RETURNING`, guarded `UPDATE … RETURNING`) rather than raising errors: a failed statement aborts a
 *    PostgreSQL transaction. A unit that throws fails the WHOLE window, unless it runs with
 *    `savepoint: true` (then only its own writes are undone and only it rejects). What a unit adds to the
 *    window inside `capture(fn)` (intents, after-commit callbacks: e.g. the commands of a broadcast it starts,
 *    decided synchronously from memory) joins ITS window and is written right after the units, so the unit's
 *    own writes and those commit together or not at all. A window whose units added writes is not retried.
 *    (Explicit rather than tracked through the async context: AsyncLocalStorage makes every promise of the
 *    process about twice as slow on Node 20, ingest included.)
 *  - after-commit callbacks (`afterCommit`, or the `after` argument of a unit): PUBACK releases,
 *    publishes, bus events; run after COMMIT, in the order registered; dropped when the window fails.
 *
 * Every `add`/`unit` promise settles after its window's COMMIT (or its failure). A failed window
 * rejects every promise of that window AND of the window gathered on top of it (its callers decided
 * from memory that assumed the failed writes), drops their after-commit callbacks and reports every
 * key they touched to `onEvict` listeners (the owners of in-memory state reload those from the DB).
 * PostgreSQL serialization failures and deadlocks (40001, 40P01) are retried (3×) before that.
 *
 * Timing: one window flushing at a time (FIFO). `windowMs` > 0 (the SQLite default, 8 ms): a window
 * goes `windowMs` after its first write, so one fsync (synchronous=FULL blocks the main thread)
 * covers everything handled meanwhile. `windowMs` 0 (the PostgreSQL default): a window goes at the
 * next turn when none is in flight, else as soon as the one in flight ends (whatever gathers during
 * a commit goes in the next: the ingest committer's rule). `durable(p)` makes the open window due at
 * once (an API reply waits for it). A flush always starts from its own macrotask (setImmediate or a
 * timer): on SQLite every statement answers synchronously, so BEGIN … COMMIT completes within that
 * macrotask's microtasks and no other task (a socket read, a timer, a request) ever runs while the
 * transaction is open; readers on the same connection only ever see committed data.
 */
import { sql, type KyselyPlugin, type Transaction } from 'kysely';
import type { Component } from '../../core/lifecycle.js';
import type { Logger } from '../../core/logger.js';
import { counterOn, type Metrics } from '../../core/metrics.js';
import type { Db } from '../sql/db.js';

/** Shared by the kinds of one flush: a kind may leave what a later phase needs (e.g. the CAS misses for the log lines). */
export type FlushContext = Map<string, unknown>;

/** A kind of intent: how all intents of one kind in a window are written. Defined by the table's repository. */
export interface WindowKind<I, O> {
  readonly name: string;
  /** Flush order, lower first (see WINDOW_PHASES). */
  readonly phase: number;
  /**
   * Writes `items` (in enqueue order) with the window's transaction; returns one outcome per item, in the same
   * order. Awaits only `trx`. May run more than once for one window (a retried PostgreSQL transaction).
   */
  flush(trx: Transaction<unknown>, items: readonly I[], ctx: FlushContext): Promise<readonly O[]>;
  /** The in-memory keys an item touches: evicted when its window fails. */
  keys?(item: I): readonly string[];
}

/** Conventional phases: inserts (parents before children), CAS updates, log lines. Units run after all. */
export const WINDOW_PHASES = { insertParents: 10, insert: 20, insertChildren: 30, cas: 40, casChildren: 50, log: 60 } as const;

export interface UnitOptions {
  /** Undo only this unit's writes when it throws (a SAVEPOINT), instead of failing the whole window. */
  savepoint?: boolean;
  /** In-memory keys the unit touches: evicted when its window fails. */
  keys?: readonly string[];
}

/** Registers an after-commit callback of a unit: dropped with the unit when it or its window fails. */
export type After = (f: () => void) => void;

export interface StateWindowOptions {
  db: Db<unknown>;
  logger: Logger;
  /** Default 8 on SQLite, 0 (adaptive) on PostgreSQL. */
  windowMs?: number;
  metrics?: Metrics;
}

interface Settler { resolve(v: unknown): void; reject(err: unknown): void }
/** `settlers[i]` null: intent i was posted (`post`), nobody waits for its own outcome. */
interface KindEntry { kind: WindowKind<unknown, unknown>; items: unknown[]; settlers: Array<Settler | null> }
interface UnitEntry {
  fn: (trx: Transaction<unknown>, after: After) => Promise<unknown>;
  savepoint: boolean; settler: Settler; after: Array<() => void>;
}

/** What a unit added while it ran, through `capture` (intents, after-commit callbacks, keys). */
interface Capture { kinds: Map<WindowKind<unknown, unknown>, KindEntry>; after: Array<() => void>; keys: Set<string> }

interface Batch {
  readonly id: number;
  readonly kinds: Map<WindowKind<unknown, unknown>, KindEntry>;
  readonly units: UnitEntry[];
  readonly after: Array<() => void>;
  readonly keys: Set<string>;
  /** `settled()` callers: settle with the window. */
  readonly waiters: Settler[];
  due: boolean;
  /** What the units added in the current attempt (written after the units; rejected with the window). */
  late: Capture | null;
  /** Cancels the pending timer or setImmediate of this batch. */
  timer: (() => void) | null;
}

const RETRYABLE = new Set(['40001', '40P01']);
const MAX_RETRIES = 3;
/** Failed windows in a row after which the node reports not ready. */
const FAILS_NOT_READY = 3;

export class StateWindow implements Component {
  readonly name = 'state-window';
  private open: Batch | null = null;
  private inFlight: Batch | null = null;
  private nextId = 1;
  private running = false;
  private failedInARow = 0;
  private readonly evictors: Array<(keys: readonly string[]) => void> = [];
  private readonly windowMs: number;
  private readonly drained: Array<() => void> = [];
  /** Set inside `capture`: adds, posts and after-commit callbacks go here. */
  private capturing: Capture | null = null;
  /** What the unit being run by the flush in flight added so far (`capture` routes writes there). */
  private unitCap: Capture | null = null;
  /** Statements of the committed windows (BEGIN and COMMIT included), windows committed, windows failed. */
  readonly stats = { statements: 0, windows: 0, failed: 0 };
  private readonly mStatements;
  private readonly mWindows;
  private readonly mFailed;

  constructor(private readonly o: StateWindowOptions) {
    this.windowMs = o.windowMs ?? (o.db.dialect === 'sqlite' ? 8 : 0);
    const reg = o.metrics?.registry;
    this.mStatements = counterOn(reg, 'keng_state_window_statements_total', 'SQL statements of committed state windows (BEGIN and COMMIT included)');
    this.mWindows = counterOn(reg, 'keng_state_window_commits_total', 'State windows committed');
    this.mFailed = counterOn(reg, 'keng_state_window_failures_total', 'State windows that failed (their writes rolled back, their callers rejected)');
  }

  async start(): Promise<void> { this.running = true; }

  /** Commits what is open, then refuses new writes. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.open) this.due(this.open);
    if (this.open || this.inFlight) await new Promise<void>((resolve) => this.drained.push(resolve));
  }

  /** Windows failed in a row (0 after a commit): the readiness check fails from 3. */
  get failuresInARow(): number { return this.failedInARow; }

  /**
   * The /readyz check: not ready after FAILS_NOT_READY failed windows in a row (the database refuses this
   * node's state writes: answers get no PUBACK, so a balancer should move the devices to a node that can
   * commit); ready again at the next commit.
   */
  report(): { ok: boolean; detail: Record<string, unknown> } {
    return {
      ok: this.failedInARow < FAILS_NOT_READY,
      detail: { failuresInARow: this.failedInARow, windows: this.stats.windows, failed: this.stats.failed, dialect: this.o.db.dialect },
    };
  }

  /** Called with the keys of every intent and unit of a failed window (and of the one gathered on top of it). */
  onEvict(fn: (keys: readonly string[]) => void): void { this.evictors.push(fn); }

  add<I, O>(kind: WindowKind<I, O>, item: I): Promise<O> {
    if (!this.running) return Promise.reject(new Error('the state window is stopped'));
    const e = this.enqueue(kind, item);
    return new Promise<O>((resolve, reject) => { e.settlers.push({ resolve: resolve as (v: unknown) => void, reject }); });
  }

  /**
   * An intent whose own outcome nobody awaits (a log line written with its transition): no promise per
   * item, which is most of the window's cost per speaker on SQLite. It still commits or fails with its
   * window (the failure reaches the window's other callers and `onEvict`). Throws when stopped.
   */
  post<I>(kind: WindowKind<I, unknown>, item: I): void {
    if (!this.running) throw new Error('the state window is stopped');
    this.enqueue(kind, item).settlers.push(null);
  }

  /** Where a write goes: the running unit's capture (inside `capture`), else the open window. */
  private target(): Capture | Batch {
    return this.capturing ?? this.batch();
  }

  private enqueue<I>(kind: WindowKind<I, unknown>, item: I): KindEntry {
    const b = this.target();
    let e = b.kinds.get(kind as WindowKind<unknown, unknown>);
    if (!e) {
      e = { kind: kind as WindowKind<unknown, unknown>, items: [], settlers: [] };
      b.kinds.set(kind as WindowKind<unknown, unknown>, e);
    }
    e.items.push(item);
    if (kind.keys) for (const k of kind.keys(item)) b.keys.add(k);
    return e;
  }

  unit<T>(fn: (trx: Transaction<unknown>, after: After) => Promise<T>, o: UnitOptions = {}): Promise<T> {
    if (!this.running) return Promise.reject(new Error('the state window is stopped'));
    if (this.capturing) return Promise.reject(new Error('state window: a unit cannot be added by a unit (write through its trx)'));
    const b = this.batch();
    for (const k of o.keys ?? []) b.keys.add(k);
    return new Promise<T>((resolve, reject) => {
      b.units.push({ fn, savepoint: o.savepoint === true, settler: { resolve: resolve as (v: unknown) => void, reject }, after: [] });
    });
  }

  /**
   * Inside a running unit: runs `fn` synchronously, and what it adds to the window (intents, posts, after-commit
   * callbacks: e.g. `executor.begin`, which decides from memory at once) joins the unit's window, written right
   * after the units: the unit's own writes and those commit together or not at all. When the unit throws (a
   * savepoint unit), what it added is dropped: rejected, its callbacks not run, its keys evicted. Throws when no
   * unit runs (a caller outside a unit has no transaction to join).
   */
  capture<T>(fn: () => T): T {
    if (!this.unitCap) throw new Error('state window: capture() outside a unit');
    const outer = this.capturing;
    this.capturing = this.unitCap;
    try { return fn(); } finally { this.capturing = outer; }
  }

  /** `f` runs after the open window (the one the caller's writes so far went to) commits; never if it fails. */
  afterCommit(f: () => void): void { this.target().after.push(f); }


  /**
   * Resolves once everything written so far (the open window, else the one in flight) is committed; rejects when it
   * fails. Does not make the window due: a device's PUBACK waits for the window its answer went to, as with `add`.
   */
  settled(): Promise<void> {
    const b = this.open ?? this.inFlight;
    if (!b) return Promise.resolve();
    return new Promise<void>((resolve, reject) => { b.waiters.push({ resolve: resolve as (v: unknown) => void, reject }); });
  }

  /** Makes the open window due now (an API reply waits for it); returns `p`. */
  durable<T>(p: Promise<T>): Promise<T> {
    if (this.open) this.due(this.open);
    return p;
  }

  private batch(): Batch {
    if (!this.running) throw new Error('the state window is stopped');
    if (this.open) return this.open;
    const b: Batch = { id: this.nextId++, kinds: new Map(), units: [], after: [], keys: new Set(), waiters: [], due: false, late: null, timer: null };
    this.open = b;
    if (this.windowMs > 0) {
      const t = setTimeout(() => { b.timer = null; this.due(b); }, this.windowMs);
      b.timer = () => clearTimeout(t);
    } else {
      this.due(b);
    }
    return b;
  }

  /** Marks `b` due and starts its flush from a fresh macrotask when none is in flight (else when that one ends). */
  private due(b: Batch): void {
    b.due = true;
    if (this.inFlight || b !== this.open) return;
    b.timer?.();
    const t = setImmediate(() => { b.timer = null; void this.flush(b); });
    b.timer = () => clearImmediate(t);
  }

  private async flush(b: Batch): Promise<void> {
    if (this.open !== b || this.inFlight) return;
    this.open = null;
    this.inFlight = b;
    let result: Awaited<ReturnType<StateWindow['write']>> | null = null;
    let error: unknown;
    let statements = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        statements = 0;
        result = await this.write(b, () => { statements++; });
        break;
      } catch (err) {
        error = err;
        if (attempt >= MAX_RETRIES || !RETRYABLE.has(String((err as { code?: unknown }).code))) break;
        // Units that added writes have applied their memory effects already: running them again would repeat those.
        if (b.late && (b.late.kinds.size > 0 || b.late.after.length > 0)) break;
        this.o.logger.warn({ err, attempt: attempt + 1 }, 'state window: transaction conflict, retrying');
      }
    }
    this.inFlight = null;
    if (result) {
      this.committed(b, result.outcomes, result.units, statements + 2, result.late);
      for (const c of result.dropped) this.drop(c, (result.units.find((u) => !u.ok) as { err: unknown } | undefined)?.err);
    } else {
      this.failed(b, error);
    }
    // What gathered meanwhile goes now if due (or at once with windowMs 0); `due` starts it from a fresh macrotask.
    const next = this.open as Batch | null; // (TS narrowed it to null above; adds meanwhile opened one)
    if (next && (next.due || this.windowMs === 0)) this.due(next);
    if (!next && !this.inFlight) for (const d of this.drained.splice(0)) d();
  }

  private async write(b: Batch, count: () => void) {
    return this.o.db.write(async (tx) => {
      const trx = tx.withPlugin(countingPlugin(count));
      const ctx: FlushContext = new Map();
      const outcomes = new Map<KindEntry, readonly unknown[]>();
      const entries = [...b.kinds.values()].sort((x, y) => x.kind.phase - y.kind.phase); // stable: arrival order within a phase
      for (const e of entries) {
        const out = await e.kind.flush(trx, e.items, ctx);
        if (out.length !== e.items.length) throw new Error(`state window: kind ${e.kind.name} gave ${out.length} outcomes for ${e.items.length} intents`);
        outcomes.set(e, out);
      }
      const units: Array<{ ok: true; v: unknown } | { ok: false; err: unknown }> = [];
      const late: Capture = { kinds: new Map(), after: [], keys: new Set() };
      b.late = late;
      const dropped: Capture[] = [];
      let sp = 0;
      for (const u of b.units) {
        u.after.length = 0; // a retried transaction runs the unit again
        const after: After = (f) => { u.after.push(f); };
        // What the unit adds inside `capture` (intents, after-commit callbacks) joins this window.
        const cap: Capture = { kinds: new Map(), after: [], keys: new Set() };
        const run = async (): Promise<unknown> => {
          this.unitCap = cap;
          try { return await u.fn(trx, after); } finally { this.unitCap = null; }
        };
        if (!u.savepoint) {
          try {
            units.push({ ok: true, v: await run() });
          } finally {
            merge(late, cap); // on failure the window fails: `failed` rejects and evicts what it added
          }
          continue;
        }
        const name = sql.raw(`keng_unit_${++sp}`);
        await sql`SAVEPOINT ${name}`.execute(trx);
        try {
          const v = await run();
          await sql`RELEASE SAVEPOINT ${name}`.execute(trx);
          units.push({ ok: true, v });
          merge(late, cap);
        } catch (err) {
          await sql`ROLLBACK TO SAVEPOINT ${name}`.execute(trx);
          await sql`RELEASE SAVEPOINT ${name}`.execute(trx);
          u.after.length = 0;
          units.push({ ok: false, err });
          dropped.push(cap);
        }
      }
      // What the units added: written now, in the same phases, so it commits with them.
      const lateEntries = [...late.kinds.values()].sort((x, y) => x.kind.phase - y.kind.phase);
      const lateCtx: FlushContext = new Map();
      for (const e of lateEntries) {
        const out = await e.kind.flush(trx, e.items, lateCtx);
        if (out.length !== e.items.length) throw new Error(`state window: kind ${e.kind.name} gave ${out.length} outcomes for ${e.items.length} intents`);
        outcomes.set(e, out);
      }
      return { outcomes, units, late, dropped };
    });
  }

  private committed(b: Batch, outcomes: Map<KindEntry, readonly unknown[]>, units: ReadonlyArray<{ ok: true; v: unknown } | { ok: false; err: unknown }>,
    statements: number, late: Capture): void {
    this.failedInARow = 0;
    this.stats.statements += statements;
    this.stats.windows++;
    this.mStatements.inc(statements);
    this.mWindows.inc();
    const run = (f: () => void): void => {
      try { f(); } catch (err) { this.o.logger.error({ err }, 'state window: an after-commit callback failed'); }
    };
    for (const f of b.after) run(f);
    b.units.forEach((u, i) => { if (units[i]!.ok) for (const f of u.after) run(f); });
    for (const f of late.after) run(f);
    for (const [e, out] of outcomes) e.settlers.forEach((s, i) => s?.resolve(out[i]));
    for (const w of b.waiters) w.resolve(undefined);
    b.units.forEach((u, i) => {
      const r = units[i]!;
      if (r.ok) u.settler.resolve(r.v);
      else u.settler.reject(r.err);
    });
  }

  /** What a failed savepoint unit added: rejected, its callbacks dropped, its keys evicted (the window committed). */
  private drop(c: Capture, err: unknown): void {
    if (c.keys.size > 0) this.evict([...c.keys]);
    const why = new Error('state window: the unit that made this write failed', { cause: err });
    for (const e of c.kinds.values()) for (const s of e.settlers) s?.reject(why);
  }

  private evict(list: string[]): void {
    for (const f of this.evictors) {
      try { f(list); } catch (e) { this.o.logger.error({ err: e }, 'state window: an evict listener failed'); }
    }
  }

  private failed(b: Batch, err: unknown): void {
    this.failedInARow++;
    this.stats.failed++;
    this.mFailed.inc();
    this.o.logger.error({ err, window: b.id }, 'state window failed: its writes and those gathered on top of it are rolled back');
    const victims = [b];
    const next = this.open;
    if (next) { // built on the failed window's memory: it goes too
      next.timer?.();
      this.open = null;
      victims.push(next);
    }
    const keys = new Set<string>();
    for (const v of victims) for (const k of [...v.keys, ...(v.late?.keys ?? [])]) keys.add(k);
    if (keys.size > 0) this.evict([...keys]);
    for (const v of victims) {
      const why = v === b ? err : new Error('state window: an earlier window failed', { cause: err });
      for (const e of [...v.kinds.values(), ...(v.late?.kinds.values() ?? [])]) for (const s of e.settlers) s?.reject(why);
      for (const u of v.units) u.settler.reject(why);
      for (const w of v.waiters) w.reject(why);
    }
  }
}

function merge(into: Capture, c: Capture): void {
  for (const [k, e] of c.kinds) {
    const t = into.kinds.get(k);
    if (t) { t.items.push(...e.items); t.settlers.push(...e.settlers); } else into.kinds.set(k, e);
  }
  into.after.push(...c.after);
  for (const k of c.keys) into.keys.add(k);
}

/** Counts the statements a flush runs (Kysely calls transformResult once per executed query). */
function countingPlugin(count: () => void): KyselyPlugin {
  return {
    transformQuery: (args) => args.node,
    transformResult: async (args) => { count(); return args.result; },
  };
}
