/**
 * The schedule and play-now bodies have one schema each: what /docs/json
 * publishes is exactly the object BroadcastService checks bodies with, so a
 * field added to (or dropped from) a schema shows in the document and in
 * what the API accepts at the same time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TSchema } from 'typebox';
import type { Validator } from 'typebox/compile';
import {
  NewSchedule, NewScheduleShape, PlayNow, PlayNowShape, SchedulePatch, SchedulePatchShape,
} from '../../src/broadcast/schedule/schema.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';

let t: TestApp;
let doc: any;
let scheduleId: string;

beforeAll(async () => {
  t = await startTestApp({ broadcast: { streamHosts: ['radio.example.vn'] } }); // listed: trusted without DNS
  await seedAreas(t, [{ code: 'p1', name: 'Tỉnh', level: 'province' }, { code: 'xa-a', name: 'Xã An Bình', level: 'commune', parent: 'p1' }]);
  await seedDevices(t, [{ id: 'spk-a1', kind: 'speaker', name: 'Loa chợ', area: 'xa-a' }]);
  doc = await (await fetch(`${t.httpUrl}/docs/json`)).json();
  const s = await t.api('POST', '/api/v1/schedules', {
    name: 'Bản tin', target: { areas: ['xa-a'] }, content: { streamUrl: 'http://radio.example.vn/live' }, cron: '0 6 * * *', durationSec: 60,
  });
  expect(s.status, JSON.stringify(s.body)).toBe(201);
  scheduleId = s.body.id;
}, 60_000);
afterAll(async () => { await t?.stop(); });

const BODIES: Array<[string, string, TSchema, Validator, () => string]> = [
  ['post', '/api/v1/schedules', NewSchedule, NewScheduleShape, () => '/api/v1/schedules'],
  ['patch', '/api/v1/schedules/{id}', SchedulePatch, SchedulePatchShape, () => `/api/v1/schedules/${scheduleId}`],
  ['post', '/api/v1/broadcasts', PlayNow, PlayNowShape, () => '/api/v1/broadcasts'],
];

describe.each(BODIES)('%s %s', (method, route, schema, shape, url) => {
  const documented = () => doc.paths[route][method].requestBody.content['application/json'].schema;

  it('documents the schema object the service validates with', () => {
    expect(documented()).toEqual(JSON.parse(JSON.stringify(schema)));
    expect(shape.Type()).toBe(schema);
  });

  it('accepts exactly the documented fields: each is checked, read-only ones are ignored, others are unknown', async () => {
    const props = documented().properties as Record<string, { readOnly?: boolean }>;
    // A value that fits no documented field, so every writable field answers with an error of its own.
    const body: Record<string, unknown> = { notDocumented: true };
    for (const k of Object.keys(props)) body[k] = props[k]!.readOnly ? 'echoed back' : {};
    const r = await t.api(method.toUpperCase(), url(), body);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('KENG_ERR_VALIDATION');
    const details = r.body.error.details as Array<{ field: string; message: string }>;
    expect(details.filter((d) => d.message === 'unknown field').map((d) => d.field)).toEqual(['notDocumented']);
    const failed = new Set(details.map((d) => d.field.split(/[.[]/)[0]));
    expect(Object.keys(props).filter((k) => !props[k]!.readOnly && !failed.has(k))).toEqual([]);
    expect(Object.keys(props).filter((k) => props[k]!.readOnly && failed.has(k))).toEqual([]);
  });

  it('answers a field with the message its schema documents', async () => {
    const volume = documented().properties.volume;
    const r = await t.api(method.toUpperCase(), url(), { volume: 101 });
    expect(r.status).toBe(400);
    expect(r.body.error.details).toContainEqual({ field: 'volume', message: volume['x-message'] });
  });
});
