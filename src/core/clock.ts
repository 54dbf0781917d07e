/** Injectable time source so schedulers and TTL logic can be tested with fake clocks. */
export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };

/**
 * Injectable timers: tests drive back-offs and rules with fake time (an
 * InfluxDB outage of minutes, a rule's duration) instead of waiting.
 */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real timers, unref'd: a timer of a store or a rule never keeps the process alive by itself. */
export const realTimers: Timers = {
  setTimeout(fn, ms) { const t = setTimeout(fn, ms); t.unref(); return t; },
  clearTimeout(h) { clearTimeout(h as NodeJS.Timeout); },
};
