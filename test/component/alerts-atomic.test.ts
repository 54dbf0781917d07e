/**
 * An alert that plays at once is stored with its emergency broadcast, the broadcast's targets and log lines,
 * its `broadcast.play` commands and its audit record in ONE transaction (a synchronous unit of the state
 * window): when the alert's own row cannot be written (a trigger refuses it here), none of the others is
 * stored and no command is published; once it can, all of them are. The same for an approval whose audit
 * entry cannot be appended.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, [
    { code: 'p1', name: 'Tỉnh Thử', level: 'province' },
    { code: 'c1', name: 'Xã An Bình', level: 'commune', parent: 'p1' },
  ]);
  await seedDevices(t, [{ id: 'loa-1', kind: 'speaker', name: 'Loa Đình làng', area: 'c1' }]);
}, 60_000);

afterAll(async () => { await t?.stop(); });

const count = (table: string, where = '1 = 1'): number =>
  t.app.stateDb.db.prepare(`SELECT COUNT(*) FROM ${table} WHERE ${where}`).pluck().get() as number;
const counts = () => ({
  alerts: count('alerts'), broadcasts: count('broadcasts'), targets: count('broadcast_targets'), log: count('broadcast_log'),
  commands: count('rpc_requests', `method = 'broadcast.play'`), audit: count('audit_log', `action LIKE 'alert.%'`),
});

describe('an alert played at once', () => {
  it('is stored with its broadcast, targets, commands and audit record, or none of them', async () => {
    const body = {
      status: 'Exercise', msgType: 'Alert', event: 'Lũ', urgency: 'Immediate', severity: 'Minor', certainty: 'Possible',
      headline: 'Diễn tập', areas: ['c1'], expires: new Date(Date.now() + 3600_000).toISOString(),
    };
    const before = counts();
    t.app.stateDb.db.exec(`CREATE TEMP TRIGGER refuse_alert BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'alert refused by the test'); END`);
    try {
      const refused = await t.api('POST', '/api/v1/alerts', body);
      expect(refused.status).toBe(500);
    } finally {
      t.app.stateDb.db.exec('DROP TRIGGER refuse_alert');
    }
    expect(counts()).toEqual(before);
    expect(await t.api('GET', '/api/v1/broadcasts')).toMatchObject({ status: 200, body: [] });

    const made = await t.api('POST', '/api/v1/alerts', body);
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ state: 'active', broadcastId: expect.any(String) });
    expect(counts()).toEqual({
      alerts: before.alerts + 1, broadcasts: before.broadcasts + 1, targets: before.targets + 1, log: before.log + 2,
      commands: before.commands + 1, audit: before.audit + 1, // alert.create (an exercise plays at once without play_at_once)
    });
    const b = await t.api('GET', `/api/v1/broadcasts/${made.body.broadcastId}`);
    expect(b.body.targets.map((x: { deviceId: string; state: string }) => [x.deviceId, x.state])).toEqual([['loa-1', 'offline']]);
  }, 60_000);

  it('an approval whose audit entry cannot be appended keeps nothing: still pending, no broadcast, no command; then it plays', async () => {
    const password = 'mot-hai-ba-bon-nam-sau';
    expect((await t.api('POST', '/api/v1/users', { username: 'duyet', password, role: 'operator', areas: ['c1'] })).status).toBe(201);
    const login = await fetch(`${t.httpUrl}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'duyet', password }),
    });
    const token = ((await login.json()) as { token: string }).token;
    const made = await t.api('POST', '/api/v1/alerts', {
      status: 'Actual', msgType: 'Alert', event: 'Lũ', urgency: 'Immediate', severity: 'Severe', certainty: 'Observed',
      headline: 'Lũ về', areas: ['c1'], expires: new Date(Date.now() + 3600_000).toISOString(),
    });
    expect(made.body).toMatchObject({ state: 'pending_approval' });
    const id = made.body.id as string;
    const before = counts();
    t.app.stateDb.db.exec(`CREATE TEMP TRIGGER refuse_approval BEFORE INSERT ON audit_log WHEN NEW.action = 'alert.approve'
      BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END`);
    try {
      expect((await t.api('POST', `/api/v1/alerts/${id}/approve`, undefined, token)).status).toBe(500);
    } finally {
      t.app.stateDb.db.exec('DROP TRIGGER refuse_approval');
    }
    expect(counts()).toEqual(before);
    expect((await t.api('GET', `/api/v1/alerts/${id}`)).body).toMatchObject({ state: 'pending_approval' });
    expect((await t.api('GET', `/api/v1/alerts/${id}`)).body.approvedBy).toBeUndefined();

    const ok = await t.api('POST', `/api/v1/alerts/${id}/approve`, undefined, token);
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ state: 'active', approvedBy: 'duyet', broadcastId: expect.any(String) });
    expect(counts()).toEqual({
      ...before, broadcasts: before.broadcasts + 1, targets: before.targets + 1, log: before.log + 2,
      commands: before.commands + 1, audit: before.audit + 1, // alert.approve
    });
  }, 60_000);
});
