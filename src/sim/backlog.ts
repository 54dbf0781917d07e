/**
 * Store-and-forward buffer: while a device is offline its readings are kept
 * (with their timestamps) in time order; on reconnect they are uploaded oldest
 * first as arrays of `{ts, values}`. Like a firmware ring buffer, when full it
 * drops the oldest readings and counts them.
 */
export interface TimedReading {
  ts: number;
  values: Record<string, number | boolean | string>;
}

export class Backlog {
  private items: TimedReading[] = [];
  private head = 0;
  dropped = 0;

  constructor(readonly capacity = 10_000) {
    if (!(capacity >= 1)) throw new RangeError('backlog capacity must be >= 1');
  }

  get size(): number {
    return this.items.length - this.head;
  }

  push(r: TimedReading): void {
    const last = this.items[this.items.length - 1];
    if (this.size === 0 || !last || r.ts >= last.ts) {
      this.items.push(r);
    } else {
      // Out of order (clock step): insert after the last reading not newer than it.
      let lo = this.head;
      let hi = this.items.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.items[mid]!.ts <= r.ts) lo = mid + 1; else hi = mid;
      }
      this.items.splice(lo, 0, r);
    }
    while (this.size > this.capacity) {
      this.head++;
      this.dropped++;
    }
    this.compact();
  }

  /** Removes and returns up to `max` readings, oldest first. */
  take(max: number): TimedReading[] {
    const n = Math.min(max, this.size);
    const out = this.items.slice(this.head, this.head + n);
    this.head += n;
    this.compact();
    return out;
  }

  /** Puts a batch whose upload failed back in front, keeping order. */
  putBack(batch: TimedReading[]): void {
    if (batch.length === 0) return;
    const rest = this.items.slice(this.head);
    this.items = [...batch, ...rest];
    this.head = 0;
    while (this.size > this.capacity) {
      this.head++;
      this.dropped++;
    }
  }

  /** Returns the contents, oldest first, without removing them. */
  peekAll(): TimedReading[] {
    return this.items.slice(this.head);
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

/** Splits a backlog upload into MQTT payloads of at most `maxReadings` entries each. */
export function backlogPayloads(batch: TimedReading[], maxReadings: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < batch.length; i += maxReadings) {
    out.push(JSON.stringify(batch.slice(i, i + maxReadings)));
  }
  return out;
}
