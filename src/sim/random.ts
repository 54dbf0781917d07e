/** Small seeded PRNG (mulberry32) so simulations and tests are reproducible. */
export type Rng = () => number;

export function createRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A stable 32-bit hash of a string (FNV-1a), e.g. to seed a device's RNG from its id. */
export function hashSeed(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Approximately normal sample (sum of uniforms), mean 0, standard deviation 1. */
export function gaussian(rng: Rng): number {
  let s = 0;
  for (let i = 0; i < 6; i++) s += rng();
  return (s - 3) * Math.SQRT2;
}
