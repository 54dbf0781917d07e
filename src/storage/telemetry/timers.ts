/**
 * Injectable timer (the back-off timer must be replaceable so a test
 * can simulate a long InfluxDB outage without waiting real minutes).
 */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real timers, unref'd: the store never keeps the process alive by itself. */
export const realTimers: Timers = {
  setTimeout(fn, ms) { const t = setTimeout(fn, ms); t.unref(); return t; },
  clearTimeout(h) { clearTimeout(h as NodeJS.Timeout); },
};
