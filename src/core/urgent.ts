/**
 * Urgent outbound work first. While an emergency alert's commands are going
 * out to every speaker of a province, the same thread also receives the
 * answers of the speakers that already have theirs (accepted, started,
 * preempted, telemetry: ~3 messages per speaker, each a state-store write).
 * Handled as they come, those answers take the thread from the commands still
 * to send, so the last village hears the warning later. A hold makes device
 * messages whose handling is bookkeeping wait until the urgent sends are out;
 * the broker then stops reading those connections (flow control: nothing is
 * acknowledged before it is handled, nothing is dropped).
 *
 * Bounded: a hold ends when its work settles or `maxMs` after the first hold,
 * whichever comes first, so a stuck publish can delay answers by at most that.
 */
export class UrgentOutbound {
  private gate: Promise<void> | null = null;
  private open: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private pending = 0;
  /** Holds of an earlier gate that settle late must not release a newer one. */
  private generation = 0;
  private holdsTotal = 0;

  constructor(private readonly maxMs = 1000) {}

  /** Bookkeeping waits until `work` settles (or at most maxMs from the first hold of this gate). */
  hold(work: Promise<unknown>): void {
    if (this.gate === null) {
      this.gate = new Promise<void>((resolve) => { this.open = resolve; });
      this.timer = setTimeout(() => this.release(), this.maxMs);
    }
    this.holdsTotal++;
    this.pending++;
    const gen = this.generation;
    const done = (): void => { if (gen === this.generation && --this.pending === 0) this.release(); };
    work.then(done, done);
  }

  /** The promise to wait for while a hold is on, else null (the common case: nothing to wait for). */
  get waiting(): Promise<void> | null { return this.gate; }

  /** Holds taken since start (diagnostics, tests). */
  get holds(): number { return this.holdsTotal; }

  /** Ends any hold at once (shutdown). */
  release(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const open = this.open;
    this.gate = null;
    this.open = null;
    this.pending = 0;
    this.generation++;
    open?.();
  }
}
