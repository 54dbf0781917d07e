/** Rule bodies (defaults, every error at once, the clear threshold's side, PATCH merging) and the device tracks. */
import { describe, expect, it } from 'vitest';
import { validateRuleBody, validateRulePatch, type AlertRuleSpec } from '../../src/alerts/rules/index.js';
import { meets, observe, pastClear, tally, type DeviceTrack } from '../../src/alerts/rules/condition.js';
import { waterRule } from './alert-rules-harness.js';

const NOW = Date.parse('2026-09-10T03:00:00Z');
const ok = (body: unknown): AlertRuleSpec => {
  const v = validateRuleBody(body, NOW);
  if (!v.ok) throw new Error(JSON.stringify(v.errors));
  return v.value;
};
const errors = (v: ReturnType<typeof validateRuleBody>) => (v.ok ? [] : v.errors.map((e) => e.field));

describe('rule bodies', () => {
  it('applies the defaults', () => {
    const body = waterRule();
    delete body.forSec; delete body.minDevices; delete body.cooldownSec; delete body.clearThreshold; delete body.kind;
    const s = ok({ ...body, alert: { event: 'Lũ', severity: 'Severe', urgency: 'Immediate', certainty: 'Observed', headline: ' Lũ lớn ' } });
    expect(s).toEqual({
      name: 'Mực nước sông', area: 'ca', field: 'water_level_cm', aggregate: 'value', op: '>', threshold: 250, clearThreshold: 250,
      forSec: 0, minDevices: 1, cooldownSec: 3600, enabled: true,
      alert: { status: 'Actual', event: 'Lũ', severity: 'Severe', urgency: 'Immediate', certainty: 'Observed', headline: 'Lũ lớn', expiresAfterSec: 21_600 },
    });
  });

  it('reports every error at once, the template\'s under alert.*', () => {
    const v = validateRuleBody({ ...waterRule(), op: '=>', minDevices: 0, extra: 1, alert: { event: 'Lũ', severity: 'Bad', urgency: 'Immediate', certainty: 'Observed' } }, NOW);
    expect(errors(v).sort()).toEqual(['alert.headline', 'alert.severity', 'extra', 'minDevices', 'op'].sort());
  });

  it('the clear threshold lies back past the threshold (hysteresis), on the side of the operator', () => {
    expect(errors(validateRuleBody(waterRule({ clearThreshold: 260 }), NOW))).toEqual(['clearThreshold']);
    expect(errors(validateRuleBody(waterRule({ op: '<', threshold: 10, clearThreshold: 5 }), NOW))).toEqual(['clearThreshold']);
    expect(ok(waterRule({ op: '<=', threshold: 10, clearThreshold: 15 })).clearThreshold).toBe(15);
  });

  it('refuses text CAP cannot carry, found by making the alert', () => {
    const v = validateRuleBody(waterRule({ alert: { ...(waterRule().alert as object), description: 'a\u0001b' } }), NOW);
    expect(errors(v)).toEqual(['alert.description']);
  });

  it('PATCH: changes only what it names, merges the template, null removes, then checks the whole rule', () => {
    const prev = ok(waterRule({ alert: { ...(waterRule().alert as object), description: 'Nước lên nhanh' } }));
    const v = validateRulePatch(prev, { threshold: 270, clearThreshold: 240, alert: { description: null, severity: 'Extreme' } }, NOW);
    expect(v.ok && v.value).toMatchObject({ threshold: 270, clearThreshold: 240, forSec: 600, alert: { severity: 'Extreme', headline: 'Mực nước sông vượt báo động 3' } });
    expect(v.ok && 'description' in v.value.alert).toBe(false);
    expect(errors(validateRulePatch(prev, { threshold: 200 }, NOW))).toEqual(['clearThreshold']);
    expect(errors(validateRulePatch(prev, {}, NOW))).toEqual(['']);
    expect(errors(validateRulePatch(prev, { id: 'x' }, NOW))).toEqual(['id']);
  });
});

describe('device tracks', () => {
  const det = { op: '>' as const, threshold: 250, clearThreshold: 230, aggregate: 'value' as const, forSec: 600, minDevices: 1 };

  it('meets and pastClear', () => {
    expect([meets('>', 251, 250), meets('>', 250, 250), meets('>=', 250, 250), meets('<', 9, 10), meets('<=', 10, 10)]).toEqual([true, false, true, true, true]);
    expect([pastClear('>', 229, 230), pastClear('>', 230, 230), pastClear('<', 16, 15), pastClear('<=', 15, 15)]).toEqual([true, false, true, false]);
  });

  it('a value between the thresholds keeps the state it finds; older readings are ignored', () => {
    const tracks = new Map<string, DeviceTrack>();
    observe(tracks, 'g1', 1000, 240, det, false);
    expect(tracks.get('g1')).toMatchObject({ inCondition: false });
    observe(tracks, 'g1', 2000, 260, det, false);
    observe(tracks, 'g1', 3000, 240, det, false);
    expect(tracks.get('g1')).toMatchObject({ inCondition: true, since: 2000, lastTs: 3000 });
    expect(observe(tracks, 'g1', 2500, 100, det, false)).toBe(false);
    // A device first heard in an episode (e.g. after a restart) with a value in between is taken to be in condition.
    observe(tracks, 'g2', 3000, 240, det, true);
    expect(tracks.get('g2')).toMatchObject({ inCondition: true, since: 3000 });
  });

  it('tally: what counts now and when the next change can come', () => {
    const tracks = new Map<string, DeviceTrack>();
    observe(tracks, 'g1', 0, 260, det, false);
    observe(tracks, 'g2', 300_000, 260, det, false);
    observe(tracks, 'g3', 300_000, 100, det, false);
    expect(tally(tracks, 600_000, det)).toEqual({ fresh: 3, inCondition: ['g1', 'g2'], counting: ['g1'], nextDue: 900_000, nextStale: 1_200_000 });
    expect(tally(tracks, 1_200_000, det)).toMatchObject({ fresh: 2, counting: ['g2'] });
  });
});
