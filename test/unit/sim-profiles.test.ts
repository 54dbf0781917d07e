import { describe, expect, it } from 'vitest';
import { PROFILES, PROFILE_NAMES, ProfileGenerator, dailyCycle, profileForIndex } from '../../src/sim/profiles.js';
import { createRng, hashSeed } from '../../src/sim/random.js';
import { answerRpc, deviceTopics, rpcRequestId } from '../../src/sim/topics.js';

const FIELD_RE = /^[a-z][a-z0-9_]{0,63}$/;

describe('sensor profiles', () => {
  it('have the documented sensor fields, all valid field names', () => {
    expect(PROFILES.soil.map((f) => f.name)).toEqual(['soil_moisture', 'soil_temp_c', 'ec_us_cm', 'battery_v']);
    expect(PROFILES.weather.map((f) => f.name)).toEqual(['temperature', 'humidity', 'rain_mm', 'wind_ms']);
    expect(PROFILES.water.map((f) => f.name)).toEqual(['water_level_cm', 'battery_v']);
    expect(PROFILES.air.map((f) => f.name)).toEqual(['pm25', 'pm10', 'co2_ppm', 'temperature']);
    for (const p of PROFILE_NAMES) for (const f of PROFILES[p]) expect(f.name).toMatch(FIELD_RE);
  });

  it('stay within bounds and move slowly over many steps', () => {
    const problems: string[] = [];
    for (const p of PROFILE_NAMES) {
      const gen = new ProfileGenerator(p, createRng(7));
      let prev = gen.next(0);
      for (let i = 1; i < 5000; i++) {
        const v = gen.next(i * 60_000);
        for (const spec of PROFILES[p]) {
          const x = v[spec.name]!;
          if (!Number.isFinite(x) || x < spec.min || x > spec.max) problems.push(`${p}.${spec.name}=${x} out of bounds`);
          // A random-walk step plus a minute of the daily cycle: small against the range.
          if (!spec.intermittent && Math.abs(x - prev[spec.name]!) >= (spec.max - spec.min) * 0.1) problems.push(`${p}.${spec.name} jumped`);
        }
        prev = v;
      }
    }
    expect(problems.slice(0, 5)).toEqual([]);
  });

  it('rain is zero most of the time but not always', () => {
    const gen = new ProfileGenerator('weather', createRng(3));
    let wet = 0;
    for (let i = 0; i < 10_000; i++) if (gen.next(i * 60_000).rain_mm! > 0) wet++;
    expect(wet).toBeGreaterThan(0);
    expect(wet).toBeLessThan(5000);
  });

  it('is reproducible from the seed and differs between devices', () => {
    const a = new ProfileGenerator('soil', createRng(hashSeed('sim-0001'))).next(0);
    const b = new ProfileGenerator('soil', createRng(hashSeed('sim-0001'))).next(0);
    const c = new ProfileGenerator('soil', createRng(hashSeed('sim-0002'))).next(0);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  });

  it('daily cycle peaks mid-afternoon Vietnam time', () => {
    const at = (h: number) => Date.UTC(2025, 5, 1, h - 7);
    expect(dailyCycle(at(15))).toBeCloseTo(1, 5);
    expect(dailyCycle(at(27))).toBeCloseTo(-1, 5);
  });

  it('mixes profiles round-robin', () => {
    expect([0, 1, 2, 3, 4].map(profileForIndex)).toEqual(['soil', 'weather', 'water', 'air', 'soil']);
  });
});

describe('topics and RPC', () => {
  it('uses the device id or "me"', () => {
    expect(deviceTopics('sim-0001').telemetry).toBe('v1/devices/sim-0001/telemetry');
    expect(deviceTopics('me').rpcResponse('42')).toBe('v1/devices/me/rpc/response/42');
    expect(deviceTopics('d1').rpcRequestFilter).toBe('v1/devices/d1/rpc/request/+');
  });
  it('extracts the request id', () => {
    expect(rpcRequestId('v1/devices/d1/rpc/request/abc')).toBe('abc');
    expect(rpcRequestId('v1/devices/d1/rpc/response/abc')).toBeNull();
  });
  it('rejects unknown methods and bad requests', () => {
    expect(answerRpc('{"method":"broadcast.play","params":{}}')).toEqual({ status: 'rejected', detail: 'unknown method "broadcast.play"' });
    expect(answerRpc('nope').status).toBe('rejected');
    expect(answerRpc('{"params":{}}').status).toBe('rejected');
    expect(answerRpc('{"method":"ping"}', new Set(['ping']))).toEqual({ status: 'ok' });
  });
});
