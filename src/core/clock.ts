/** Injectable time source so schedulers and TTL logic can be tested with fake clocks. */
export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };
