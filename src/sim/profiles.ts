/**
 * Sensor profiles and their value generators: each field follows a slow,
 * mean-reverting random walk kept within physical bounds, plus a daily cycle
 * where the quantity has one (temperatures, humidity). Rain is intermittent.
 */
import { gaussian, type Rng } from './random.js';

export const PROFILE_NAMES = ['soil', 'weather', 'water', 'air'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];

export interface FieldSpec {
  name: string;
  min: number;
  max: number;
  /** Long-run mean the walk reverts to. */
  mean: number;
  /** Standard deviation of one step. */
  sigma: number;
  /** Fraction of the distance to the mean recovered per step (0..1). */
  revert: number;
  decimals: number;
  /** Amplitude of a daily sine cycle peaking mid-afternoon (local time, UTC+7). */
  diurnal?: number;
  /** Negative: the cycle is inverted (humidity is lowest mid-afternoon). */
  diurnalSign?: 1 | -1;
  /** Intermittent quantity (rain): zero most of the time, bursts otherwise. */
  intermittent?: { pStart: number; pStop: number; maxPerStep: number };
}

export const PROFILES: Record<ProfileName, FieldSpec[]> = {
  soil: [
    { name: 'soil_moisture', min: 5, max: 60, mean: 32, sigma: 0.3, revert: 0.01, decimals: 1 },
    { name: 'soil_temp_c', min: 15, max: 40, mean: 27, sigma: 0.1, revert: 0.02, decimals: 1, diurnal: 2.5 },
    { name: 'ec_us_cm', min: 50, max: 3000, mean: 850, sigma: 8, revert: 0.01, decimals: 0 },
    { name: 'battery_v', min: 3.3, max: 4.2, mean: 3.9, sigma: 0.005, revert: 0.005, decimals: 2 },
  ],
  weather: [
    { name: 'temperature', min: 10, max: 42, mean: 28, sigma: 0.15, revert: 0.02, decimals: 1, diurnal: 4 },
    { name: 'humidity', min: 30, max: 100, mean: 78, sigma: 0.5, revert: 0.02, decimals: 1, diurnal: 12, diurnalSign: -1 },
    { name: 'rain_mm', min: 0, max: 50, mean: 0, sigma: 0, revert: 0, decimals: 1, intermittent: { pStart: 0.01, pStop: 0.15, maxPerStep: 3 } },
    { name: 'wind_ms', min: 0, max: 25, mean: 2.5, sigma: 0.4, revert: 0.1, decimals: 1 },
  ],
  water: [
    { name: 'water_level_cm', min: 0, max: 400, mean: 120, sigma: 0.8, revert: 0.005, decimals: 1 },
    { name: 'battery_v', min: 3.3, max: 4.2, mean: 3.9, sigma: 0.005, revert: 0.005, decimals: 2 },
  ],
  air: [
    { name: 'pm25', min: 1, max: 300, mean: 35, sigma: 1.5, revert: 0.03, decimals: 1 },
    { name: 'pm10', min: 2, max: 500, mean: 60, sigma: 2.5, revert: 0.03, decimals: 1 },
    { name: 'co2_ppm', min: 380, max: 2000, mean: 450, sigma: 5, revert: 0.03, decimals: 0 },
    { name: 'temperature', min: 10, max: 42, mean: 28, sigma: 0.15, revert: 0.02, decimals: 1, diurnal: 4 },
  ],
};

export function isProfileName(s: string): s is ProfileName {
  return (PROFILE_NAMES as readonly string[]).includes(s);
}

/** Profile of the i-th simulated device when profiles are mixed: round-robin. */
export function profileForIndex(i: number): ProfileName {
  return PROFILE_NAMES[i % PROFILE_NAMES.length]!;
}

const DAY_MS = 86_400_000;
const LOCAL_OFFSET_MS = 7 * 3_600_000;

/** 1 at 15:00 local, -1 at 03:00. */
export function dailyCycle(ts: number): number {
  const localMs = (((ts + LOCAL_OFFSET_MS) % DAY_MS) + DAY_MS) % DAY_MS;
  return Math.cos(((localMs / DAY_MS) * 24 - 15) / 24 * 2 * Math.PI);
}

function round(v: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(v * f) / f;
}

function clamp(v: number, min: number, max: number): number {
  return v < min ? min : v > max ? max : v;
}

/** One field's walk. */
export class FieldWalker {
  private value: number;
  private raining = false;

  constructor(readonly spec: FieldSpec, private readonly rng: Rng) {
    // Start somewhere plausible, not all devices at the mean.
    const spread = (spec.max - spec.min) * 0.1;
    this.value = clamp(spec.mean + gaussian(rng) * spread, spec.min, spec.max);
  }

  next(ts: number): number {
    const s = this.spec;
    if (s.intermittent) {
      const p = s.intermittent;
      this.raining = this.raining ? this.rng() >= p.pStop : this.rng() < p.pStart;
      return this.raining ? round(this.rng() * p.maxPerStep, s.decimals) : 0;
    }
    this.value += s.revert * (s.mean - this.value) + gaussian(this.rng) * s.sigma;
    this.value = clamp(this.value, s.min, s.max);
    const cycle = s.diurnal ? s.diurnal * (s.diurnalSign ?? 1) * dailyCycle(ts) : 0;
    return round(clamp(this.value + cycle, s.min, s.max), s.decimals);
  }
}

/** Generates one reading set per call for a profile. */
export class ProfileGenerator {
  private readonly walkers: FieldWalker[];

  constructor(readonly profile: ProfileName, rng: Rng) {
    this.walkers = PROFILES[profile].map((spec) => new FieldWalker(spec, rng));
  }

  get fields(): string[] {
    return this.walkers.map((w) => w.spec.name);
  }

  next(ts: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const w of this.walkers) out[w.spec.name] = w.next(ts);
    return out;
  }
}
