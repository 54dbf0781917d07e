/**
 * Sensor rules with fake time (alert-rules-harness.ts): threshold, duration,
 * hysteresis, cooldown, several devices agreeing, silent devices, and
 * restarts with the episode read back from the state store.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CONDITION_ENDED, type AlertRuleView } from '../../src/alerts/rules/index.js';
import { FAKED, MIN, startHarness, waterRule, type Harness } from './alert-rules-harness.js';

let h: Harness;
const level = (device: string, cm: number, opts?: { area?: string; kind?: string }) => h.send(device, { water_level_cm: cm }, opts);
const create = (p: Record<string, unknown> = {}): Promise<AlertRuleView> => h.rules.create(h.caller('ca'), waterRule(p));
const stateOf = async (id: string) => (await h.rules.get(h.caller('ca'), id)).state;
const raised = () => h.alerts.raised();

beforeEach(async () => {
  vi.useFakeTimers({ now: Date.parse('2026-09-10T03:00:00Z'), toFake: FAKED });
  h = await startHarness();
});
afterEach(async () => {
  await h.close();
  vi.useRealTimers();
});

describe('threshold', () => {
  it('raises an Actual alert (pending approval) on the rule\'s area as "rule:<id>" when a reading passes the threshold', async () => {
    const { rule } = await create({ forSec: 0 });
    await level('g1', 250); // not above 250
    expect(raised()).toHaveLength(0);
    await level('g1', 262.5);
    expect(raised()).toHaveLength(1);
    const a = raised()[0]!;
    expect(a).toMatchObject({ state: 'pending_approval', areas: ['ca'], createdBy: `rule:${rule.id}` });
    expect(a.cap).toMatchObject({ status: 'Actual', msgType: 'Alert', event: 'Lũ', severity: 'Severe', headline: 'Mực nước sông vượt báo động 3', sender: 'keng@xa-a' });
    expect(a.cap.expires).toBe(Math.floor(Date.now() / 1000) * 1000 + 3 * 3600_000);
    expect(a.cap.note).toContain('g1 262.5');
    expect(await stateOf(rule.id)).toMatchObject({ firing: true, alertId: a.id, lastFiredAt: Date.now() });
    // Further readings in the same episode raise nothing more.
    await level('g1', 300);
    expect(raised()).toHaveLength(1);
    expect(h.events.map((e) => e.change)).toEqual(['fired']);
    expect(h.events[0]).toMatchObject({ ruleId: rule.id, area: 'ca', alertId: a.id, alertState: 'pending_approval', readings: [{ deviceId: 'g1', value: 262.5 }] });
    expect(h.audit.map((e) => e.action)).toEqual(['alert-rule.create', 'alert-rule.fire']);
    expect(h.audit[1]).toMatchObject({ actor: { kind: 'system', id: `rule:${rule.id}` }, target: `alert-rule:${rule.id}` });
  });

  it('"<" rules fire below the threshold and clear above the clear threshold', async () => {
    await create({ field: 'soil_moisture', op: '<', threshold: 10, clearThreshold: 15, forSec: 0 });
    await h.send('s1', { soil_moisture: 12 });
    expect(raised()).toHaveLength(0);
    await h.send('s1', { soil_moisture: 9 });
    expect(raised()).toHaveLength(1);
    await h.send('s1', { soil_moisture: 14 });
    expect(raised()[0]!.state).toBe('pending_approval');
    await h.send('s1', { soil_moisture: 16 });
    expect(raised()[0]!.state).toBe('rejected');
  });

  it('ignores other fields, text values, devices outside the area and devices of another kind', async () => {
    await create({ forSec: 0 });
    await h.send('g1', { rain_mm: 400, water_level_cm: 'high' });
    await level('gb', 400, { area: 'cb' });
    await level('spk', 400, { kind: 'speaker' });
    expect(raised()).toHaveLength(0);
    await level('g2', 400, { area: 'ca' }); // the commune itself, not only its villages
    expect(raised()).toHaveLength(1);
  });

  it('a disabled rule watches nothing; enabling it starts from the next readings', async () => {
    const { rule } = await create({ forSec: 0, enabled: false });
    await level('g1', 300);
    expect(raised()).toHaveLength(0);
    await h.rules.update(h.caller('ca'), rule.id, { enabled: true });
    expect(raised()).toHaveLength(0);
    await level('g1', 300);
    expect(raised()).toHaveLength(1);
  });
});

describe('duration (forSec)', () => {
  it('fires when the condition has held forSec, on time, without waiting for another reading', async () => {
    await create({ forSec: 600 });
    await level('g1', 260);
    await h.advance(5 * MIN);
    await level('g1', 270);
    await h.advance(5 * MIN - 1);
    expect(raised()).toHaveLength(0);
    await h.advance(1);
    expect(raised()).toHaveLength(1);
  });

  it('a reading back past the clear threshold restarts the duration', async () => {
    await create({ forSec: 600 });
    await level('g1', 260);
    await h.advance(5 * MIN);
    await level('g1', 220);
    await h.advance(1 * MIN);
    await level('g1', 260);
    await h.advance(9 * MIN);
    expect(raised()).toHaveLength(0);
    await h.advance(1 * MIN);
    expect(raised()).toHaveLength(1);
  });
});

describe('hysteresis', () => {
  it('dipping between the clear threshold and the threshold neither restarts the duration nor clears', async () => {
    const { rule } = await create({ forSec: 600 });
    await level('g1', 260);
    await h.advance(5 * MIN);
    await level('g1', 240); // below 250, above 230: still in condition, since the first reading
    await h.advance(5 * MIN);
    expect(raised()).toHaveLength(1);
    await level('g1', 231);
    await level('g1', 245);
    expect((await stateOf(rule.id)).firing).toBe(true);
    expect(raised()[0]!.state).toBe('pending_approval');
  });

  it('clears once the value is back past the clear threshold: the pending alert is rejected ("condition ended")', async () => {
    const { rule } = await create({ forSec: 0 });
    await level('g1', 260);
    await h.advance(MIN);
    await level('g1', 229.9);
    const a = raised()[0]!;
    expect(a).toMatchObject({ state: 'rejected', endReason: CONDITION_ENDED, endedBy: `rule:${rule.id}` });
    expect(await stateOf(rule.id)).toMatchObject({ firing: false, alertId: a.id, lastClearedAt: Date.now() });
    expect(h.events.map((e) => e.change)).toEqual(['fired', 'cleared']);
    expect(h.events[1]).toMatchObject({ alertId: a.id, alertState: 'rejected', readings: [{ deviceId: 'g1', value: 229.9 }] });
    expect(h.audit.map((e) => e.action)).toEqual(['alert-rule.create', 'alert-rule.fire', 'alert-rule.clear']);
  });

  it('an alert already playing (Exercise, or approved) is left as it is; the clearing is announced', async () => {
    await create({ forSec: 0, alert: { ...(waterRule().alert as object), status: 'Exercise' } });
    await level('g1', 260);
    expect(raised()[0]!.state).toBe('active');
    await level('g1', 200);
    expect(raised()[0]!.state).toBe('active');
    expect(h.events.at(-1)).toMatchObject({ change: 'cleared', alertState: 'active' });
  });
});

describe('cooldown', () => {
  it('no new alert within cooldownSec of the clearing; once it is over, a condition still holding fires', async () => {
    const { rule } = await create({ forSec: 0, cooldownSec: 3600 });
    await level('g1', 260);
    await h.advance(10 * MIN);
    await level('g1', 200); // cleared at 10 min
    for (let i = 0; i < 11; i++) { // above again, reporting every 5 minutes until 65 min
      await h.advance(5 * MIN);
      await level('g1', 280);
    }
    expect(raised()).toHaveLength(1);
    expect((await stateOf(rule.id)).firing).toBe(false);
    await h.advance(5 * MIN); // 70 min: the cooldown ended at 70 min exactly
    expect(raised()).toHaveLength(2);
  });
});

describe('several devices agreeing (minDevices)', () => {
  it('fires only when minDevices devices have each held the condition forSec', async () => {
    await create({ forSec: 600, minDevices: 2 });
    await level('g1', 260);
    await h.advance(8 * MIN);
    await level('g1', 262);
    await level('g2', 255);
    await h.advance(2 * MIN); // g1 has held 10 min, g2 only 2
    expect(raised()).toHaveLength(0);
    await level('g1', 263);
    await h.advance(8 * MIN);
    expect(raised()).toHaveLength(1);
    expect(raised()[0]!.cap.note).toContain('g1 263, g2 255');
  });

  it('stays firing while one device is still in condition; clears when every reporting device is back', async () => {
    const { rule } = await create({ forSec: 0, minDevices: 2 });
    await level('g1', 260);
    await level('g2', 260);
    expect(raised()).toHaveLength(1);
    await level('g1', 200);
    expect((await stateOf(rule.id)).firing).toBe(true);
    await level('g2', 240);
    expect((await stateOf(rule.id)).firing).toBe(true);
    await level('g2', 220);
    expect((await stateOf(rule.id)).firing).toBe(false);
    expect(raised()[0]!.state).toBe('rejected');
  });
});

describe('silent devices', () => {
  it('a device without a reading for staleAfter (default max(2 × forSec, 15 min)) stops counting', async () => {
    await create({ forSec: 600, minDevices: 2 });
    await level('g2', 270); // g2 at 0, then silent
    await h.advance(15 * MIN);
    await level('g1', 260); // g1 from 15 min
    await h.advance(10 * MIN); // 25 min: g1 has held 10 min; g2 silent since 25 min > 20 min
    expect(raised()).toHaveLength(0);
    await level('g2', 270); // back: starts afresh (what happened meanwhile is unknown)
    await h.advance(10 * MIN - 1);
    expect(raised()).toHaveLength(0);
    await level('g1', 261);
    await h.advance(1);
    expect(raised()).toHaveLength(1);
  });

  it('while firing, a device in condition that falls silent leaves the decision to those still reporting', async () => {
    const { rule } = await create({ forSec: 0, staleAfterSec: 600 });
    await level('g1', 260);
    await level('g2', 260);
    await h.advance(5 * MIN);
    await level('g2', 200); // g2 is back; g1 stays silent
    expect((await stateOf(rule.id)).firing).toBe(true);
    await h.advance(5 * MIN); // g1 silent for 10 min: only g2 reports, and it says the water went down
    expect((await stateOf(rule.id)).firing).toBe(false);
  });

  it('a rule whose devices all fall silent stays firing (silence is no evidence the water went down)', async () => {
    const { rule } = await create({ forSec: 0 });
    await level('g1', 260);
    await h.advance(5 * 3600_000);
    expect((await stateOf(rule.id)).firing).toBe(true);
    expect(raised()[0]!.state).toBe('pending_approval');
  });
});

describe('devices moved, disabled or deleted', () => {
  it('stop counting at once, not only once silent', async () => {
    const { rule } = await create({ forSec: 0, minDevices: 1 });
    await level('g1', 260);
    await level('g2', 260);
    await h.advance(MIN);
    await level('g1', 200);
    h.devices.set('g1', { area: 'va1', kind: 'sensor', enabled: true });
    h.bus.emit('device.changed', { deviceId: 'g1', change: 'updated' }); // renamed: keeps its track
    expect((await h.rules.get(h.caller('ca'), rule.id)).devices.map((d) => d.deviceId)).toEqual(['g1', 'g2']);
    h.devices.set('g2', { area: 'cb', kind: 'sensor', enabled: true });
    h.bus.emit('device.changed', { deviceId: 'g2', change: 'updated' }); // moved to another commune
    expect((await stateOf(rule.id)).firing).toBe(false);
    expect(raised()[0]!.state).toBe('rejected');
  });
});

describe('rain: rate_per_hour', () => {
  it('sums each gauge\'s readings of the last hour', async () => {
    await create({ field: 'rain_mm', aggregate: 'rate_per_hour', op: '>=', threshold: 50, clearThreshold: 20, forSec: 0 });
    for (let i = 0; i < 4; i++) { await h.send('r1', { rain_mm: 10 }); await h.advance(10 * MIN); }
    expect(raised()).toHaveLength(0); // 40 mm in the last hour
    await h.send('r1', { rain_mm: 10 }); // 50 mm at 40 min
    expect(raised()).toHaveLength(1);
    await h.send('r1', { rain_mm: 10 }); // the same message again (same time): counted once
    for (let i = 0; i < 4; i++) { await h.advance(10 * MIN); await h.send('r1', { rain_mm: 0 }); }
    // At 80 min the last hour holds the readings of 30 and 40 min: 20 mm, not below the clear threshold yet.
    expect(raised()[0]!.state).toBe('pending_approval');
    await h.advance(10 * MIN);
    await h.send('r1', { rain_mm: 0 });
    expect(raised()[0]!.state).toBe('rejected');
  });
});

describe('failures', () => {
  it('an alert that cannot be raised is reported (live feed, rule state, audit) and not retried within the episode', async () => {
    const { rule } = await create({ forSec: 0 });
    h.alerts.failWith = new Error('text-to-speech is not available');
    await level('g1', 260);
    expect(await stateOf(rule.id)).toMatchObject({ firing: true, lastError: 'text-to-speech is not available' });
    expect(h.events.at(-1)).toMatchObject({ change: 'failed', error: 'text-to-speech is not available' });
    h.alerts.failWith = null;
    await level('g1', 280);
    expect(raised()).toHaveLength(0);
    await level('g1', 200);
    expect(await stateOf(rule.id)).toMatchObject({ firing: false });
  });
});

describe('restart', () => {
  it('an episode survives a restart: no second alert while the condition lasts; the clearing still rejects the alert', async () => {
    const { rule } = await create({ forSec: 600 });
    await level('g1', 260);
    await h.advance(10 * MIN);
    expect(raised()).toHaveLength(1);
    await h.restart();
    expect(await stateOf(rule.id)).toMatchObject({ firing: true, alertId: raised()[0]!.id });
    await level('g1', 240); // between the thresholds: in an episode, the device is taken to be still in condition
    await level('g1', 265);
    await h.advance(30 * MIN);
    await level('g1', 262);
    expect(raised()).toHaveLength(1);
    await level('g1', 210);
    expect(raised()[0]!.state).toBe('rejected');
  });

  it('after a restart one gauge back to normal does not end the episode until every gauge has had the time to report', async () => {
    const { rule } = await create({ forSec: 0, minDevices: 2 }); // staleAfter: 15 min
    await level('g1', 260);
    await level('g2', 260);
    expect(raised()).toHaveLength(1);
    await h.restart();
    for (let i = 0; i < 2; i++) { await level('g1', 220); await h.advance(5 * MIN); }
    await h.advance(5 * MIN - 1);
    expect((await stateOf(rule.id)).firing).toBe(true); // g2 not heard since the restart: it may still be high
    await h.advance(1); // 15 min: g2 would have reported by now if it were reporting
    expect((await stateOf(rule.id)).firing).toBe(false);
    expect(raised()[0]!.state).toBe('rejected');
  });

  it('… and a gauge heard high meanwhile keeps it going', async () => {
    const { rule } = await create({ forSec: 0, minDevices: 2 });
    await level('g1', 260);
    await level('g2', 260);
    await h.restart();
    await level('g1', 220);
    await h.advance(12 * MIN);
    await level('g2', 258);
    await h.advance(10 * MIN);
    await level('g1', 220);
    expect((await stateOf(rule.id)).firing).toBe(true);
    await level('g2', 229);
    expect((await stateOf(rule.id)).firing).toBe(false);
  });

  it('the cooldown survives a restart', async () => {
    const { rule } = await create({ forSec: 0, cooldownSec: 3600 });
    await level('g1', 260);
    await level('g1', 200); // fired and cleared at 0
    await h.advance(20 * MIN);
    await h.restart();
    expect(await stateOf(rule.id)).toMatchObject({ firing: false, lastClearedAt: Date.now() - 20 * MIN });
    await level('g1', 300);
    await h.advance(5 * MIN);
    await level('g1', 300);
    expect(raised()).toHaveLength(1);
    for (let i = 0; i < 7; i++) { await h.advance(5 * MIN); await level('g1', 300); } // to 60 min
    expect(raised()).toHaveLength(2);
  });

  it('an alert raised just before a crash (episode written, alert id not yet) is found by its identifier', async () => {
    const { rule } = await create({ forSec: 0 });
    await level('g1', 260);
    const a = raised()[0]!;
    // As if Keng had stopped between raising the alert and writing its id.
    h.state.db.prepare('UPDATE alert_rule_state SET alert_id = NULL WHERE rule_id = ?').run(rule.id);
    await h.restart();
    expect(await stateOf(rule.id)).toMatchObject({ firing: true, alertId: a.id });
    await level('g1', 270);
    expect(raised()).toHaveLength(1);
  });

  it('an episode whose alert was never stored (crash while raising it) starts again from the devices', async () => {
    const { rule } = await create({ forSec: 0 });
    await level('g1', 260);
    h.alerts.all.clear();
    h.state.db.prepare('UPDATE alert_rule_state SET alert_id = NULL WHERE rule_id = ?').run(rule.id);
    await h.restart();
    expect((await stateOf(rule.id)).firing).toBe(false);
    await level('g1', 270);
    expect(raised()).toHaveLength(1);
    expect(await stateOf(rule.id)).toMatchObject({ firing: true, alertId: raised()[0]!.id });
  });
});

describe('managing rules', () => {
  it('scoped to the rule\'s area: others get 404, creating outside one\'s areas is 403, unknown areas 422', async () => {
    const { rule } = await create();
    const b = h.caller('cb');
    expect(await h.rules.list(b)).toEqual([]);
    await expect(h.rules.get(b, rule.id)).rejects.toThrow(expect.objectContaining({ statusCode: 404 }));
    await expect(h.rules.update(b, rule.id, { threshold: 1 })).rejects.toThrow(expect.objectContaining({ statusCode: 404 }));
    await expect(h.rules.delete(b, rule.id)).rejects.toThrow(expect.objectContaining({ statusCode: 404 }));
    await expect(h.rules.create(b, waterRule())).rejects.toThrow(expect.objectContaining({ statusCode: 403 }));
    await expect(h.rules.create(h.caller('p1'), waterRule({ area: 'nowhere' }))).rejects.toThrow(expect.objectContaining({ statusCode: 422 }));
    expect((await h.rules.list(h.caller('p1'))).map((v) => v.rule.id)).toEqual([rule.id]);
    // Moving a rule needs rights over the new area too.
    await expect(h.rules.update(h.caller('ca'), rule.id, { area: 'cb' })).rejects.toThrow(expect.objectContaining({ statusCode: 403 }));
  });

  it('disabling a firing rule ends its episode and keeps its alert and its cooldown', async () => {
    const { rule } = await create({ forSec: 0 });
    await level('g1', 260);
    const v = await h.rules.update(h.caller('ca'), rule.id, { enabled: false });
    expect(v.state).toMatchObject({ firing: false, lastClearedAt: Date.now() });
    expect(raised()[0]!.state).toBe('pending_approval');
    await h.rules.update(h.caller('ca'), rule.id, { enabled: true });
    await level('g1', 300);
    expect(raised()).toHaveLength(1);
    expect(h.audit.map((e) => e.action)).toEqual(['alert-rule.create', 'alert-rule.fire', 'alert-rule.update', 'alert-rule.clear', 'alert-rule.update']);
  });

  it('shows the devices it hears from; deleting it stops the watching', async () => {
    const { rule } = await create({ forSec: 600 });
    await level('g1', 260);
    await level('g2', 100);
    expect((await h.rules.get(h.caller('ca'), rule.id)).devices).toEqual([
      { deviceId: 'g1', value: 260, ts: Date.now(), inCondition: true, since: Date.now() },
      { deviceId: 'g2', value: 100, ts: Date.now(), inCondition: false },
    ]);
    await h.rules.delete(h.caller('ca'), rule.id);
    await h.advance(20 * MIN);
    expect(raised()).toHaveLength(0);
    expect(await h.rules.list(h.caller('ca'))).toEqual([]);
  });
});
