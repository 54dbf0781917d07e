/**
 * One promise reaction per group commit instead of one per message.
 *
 * Every telemetry message of one group commit gets the same promise from its
 * handler (ingest/handlers/telemetry.ts). Awaiting it once per message costs
 * two closures and a promise reaction each, run one microtask at a time:
 * measurable on the broker thread, which every message crosses. Messages
 * that arrive in a row with the same promise share one reaction here, which
 * runs their completions in arrival order, as the per-message reactions did
 * (MQTT 3.1.1 §4.6: PUBACKs in the order the PUBLISHes came).
 */
export class AckGroups<W, R> {
  /** The group messages join while their handler returns the same promise. */
  private open: Group<W> | null = null;

  constructor(private readonly onResult: (w: W, r: R) => void, private readonly onError: (w: W, err: unknown) => void) {}

  add(pending: Promise<R>, w: W): void {
    const g = this.open;
    if (g !== null && g.pending === pending) { g.items.push(w); return; }
    const ng: Group<W> = { pending, items: [w] };
    this.open = ng;
    pending.then((r) => this.settle(ng, (x) => this.onResult(x, r)), (err: unknown) => this.settle(ng, (x) => this.onError(x, err)));
  }

  private settle(g: Group<W>, each: (w: W) => void): void {
    // A message joining after this point (same, already settled promise) opens a new group with its own reaction.
    if (this.open === g) this.open = null;
    for (const w of g.items) {
      // One failing completion must not strand the others; the error still surfaces as it did from a reaction.
      try { each(w); } catch (err) { queueMicrotask(() => { throw err; }); }
    }
  }
}

interface Group<W> { pending: Promise<unknown>; items: W[] }
