/**
 * Connection ramp: start N connection attempts at most `ratePerSec` per second
 * and with at most `maxPending` attempts awaiting their CONNACK, so a large
 * fleet does not hit the broker as a thundering herd.
 */
export interface RampOptions {
  ratePerSec: number;
  maxPending: number;
}

export interface RampResult {
  ok: number;
  failed: number;
  elapsedMs: number;
  errors: Error[];
}

/** Earliest start of the i-th attempt, in ms after the ramp begins. */
export function rampOffsetMs(i: number, ratePerSec: number): number {
  if (!(ratePerSec > 0) || !Number.isFinite(ratePerSec)) return 0;
  return (i * 1000) / ratePerSec;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runRamp<T>(
  items: readonly T[],
  opts: RampOptions,
  start: (item: T, index: number) => Promise<void>,
  shouldStop: () => boolean = () => false,
): Promise<RampResult> {
  const t0 = performance.now();
  const result: RampResult = { ok: 0, failed: 0, elapsedMs: 0, errors: [] };
  const maxPending = Math.max(1, opts.maxPending);
  let pending = 0;
  let wake: (() => void) | null = null;
  const all: Promise<void>[] = [];
  for (let i = 0; i < items.length; i++) {
    if (shouldStop()) break;
    const due = t0 + rampOffsetMs(i, opts.ratePerSec);
    const now = performance.now();
    if (due > now + 1) await sleep(due - now);
    while (pending >= maxPending) await new Promise<void>((r) => { wake = r; });
    pending++;
    all.push(start(items[i]!, i).then(
      () => { result.ok++; },
      (err: unknown) => { result.failed++; if (result.errors.length < 20) result.errors.push(err instanceof Error ? err : new Error(String(err))); },
    ).finally(() => {
      pending--;
      const w = wake; wake = null; w?.();
    }));
  }
  await Promise.all(all);
  result.elapsedMs = performance.now() - t0;
  return result;
}

/** Waits until `inFlight()` is 0 (every message of a fleet acknowledged), polling every 20 ms; false on timeout. */
export async function drainInFlight(inFlight: () => number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (inFlight() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  return inFlight() === 0;
}
