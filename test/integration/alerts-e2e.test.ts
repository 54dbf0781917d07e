/**
 * Emergency alerts end to end over real MQTT: the whole app, loudspeakers
 * registered through the API and run by the reference simulator (signature
 * checks on), staff logged in through the API.
 *   - an Actual alert plays nowhere until a second operator approves it; its
 *     creator cannot approve; an operator of another commune cannot see it;
 *   - approved, it preempts a normal broadcast on every loudspeaker of its
 *     areas and on no other; cancel stops it everywhere and plays the notice;
 *   - an Exercise plays at once on the area it names only;
 *   - a CAP 1.2 XML message with a polygon reaches the loudspeakers inside it;
 *     a message with a DOCTYPE is refused;
 *   - the play-at-once policy, an Update replacing an alert, the CAP XML and
 *     Atom exports, the audit log and the live feed;
 *   - a restart keeps a pending alert, which then plays once approved.
 * Waits are generous: the machine may be loaded.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';
import { runSpeakers, type SpeakerCommand, type SpeakerSim } from '../../src/sim/speaker/index.js';

const XSD = fileURLToPath(new URL('../fixtures/cap/CAP-v1.2.xsd', import.meta.url));
const SPEAKERS = [
  { id: 'loa-a1', area: 'thon-a1', location: { lat: 21.30, lon: 105.40 } },
  { id: 'loa-a2', area: 'thon-a2', location: { lat: 21.32, lon: 105.45 } },
  { id: 'loa-a3', area: 'thon-a2' },
  { id: 'loa-b1', area: 'xa-b', location: { lat: 21.50, lon: 105.90 } },
];
const PASSWORD = 'mot-hai-ba-bon-nam-sau';

let t: TestApp;
let sim: SpeakerSim;
let dataDir: string;
const tokens: Record<string, string> = {};
let toneId = '';

async function login(username: string): Promise<string> {
  const r = await fetch(`${t.httpUrl}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: PASSWORD }),
  });
  expect(r.status).toBe(200);
  return ((await r.json()) as { token: string }).token;
}

async function startSpeakers(): Promise<void> {
  const keys = (await t.api('GET', '/api/v1/command-keys')).body;
  sim = await runSpeakers({
    url: t.mqttUrl, credentials: SPEAKERS.map((s) => ({ id: s.id, secret: secrets[s.id]! })), speed: 4, telemetryIntervalMs: 60_000,
    commandKeys: keys, requireSignedCommands: true,
    // loa-a3 imitates firmware without media.prefetch (§12.7): it must get the alert all the same.
    prefetch: (id) => id !== 'loa-a3',
  });
  for (const s of sim.speakers) s.on('command', (c: SpeakerCommand) => { if (c.method === 'media.prefetch') prefetched.push({ ...c, deviceId: s.id }); });
}
const prefetched: Array<SpeakerCommand & { deviceId: string }> = [];
const speaker = (id: string) => sim.speakers.find((s) => s.id === id)!;
const prefetches = (id: string) => prefetched.filter((c) => c.deviceId === id).length;


const secrets: Record<string, string> = {};
const as = (who: string) => (method: string, route: string, body?: unknown) => t.api(method, route, body, tokens[who]);

function alertBody(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    status: 'Actual', msgType: 'Alert', event: 'Lũ quét', severity: 'Extreme', urgency: 'Immediate', certainty: 'Likely',
    headline: 'Cảnh báo lũ quét trên suối Nậm Mu', description: 'Mưa lớn, nước suối dâng nhanh.', instruction: 'Di chuyển lên chỗ cao ngay.',
    areas: ['xa-a'], expires: new Date(Date.now() + 3600_000).toISOString(), repeat: 1, ...over,
  };
}

async function broadcastOf(id: string): Promise<any> {
  return (await t.api('GET', `/api/v1/broadcasts/${id}`)).body;
}

async function waitTargets(id: string, done: (byDevice: Record<string, string>) => boolean, timeoutMs = 30_000): Promise<Record<string, string>> {
  return waitFor(async () => {
    const b = await broadcastOf(id);
    if (!b?.targets) return undefined;
    const by = Object.fromEntries(b.targets.map((x: any) => [x.deviceId, x.state])) as Record<string, string>;
    return done(by) ? by : undefined;
  }, timeoutMs, 200);
}

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'keng-alerts-e2e-'));
  t = await startTestApp({}, { dataDir });
  await seedAreas(t, [
    { code: 'p1', name: 'Tỉnh Lai Châu', level: 'province' },
    { code: 'xa-a', name: 'Xã Nậm Mu', level: 'commune', parent: 'p1' },
    { code: 'thon-a1', name: 'Bản Nà Khum', level: 'village', parent: 'xa-a' },
    { code: 'thon-a2', name: 'Bản Phiêng Lúc', level: 'village', parent: 'xa-a' },
    { code: 'xa-b', name: 'Xã Tà Mít', level: 'commune', parent: 'p1' },
  ]);
  const created = await seedDevices(t, SPEAKERS.map((s) => ({ id: s.id, kind: 'speaker', name: `Cụm loa ${s.id}`, area: s.area, ...(s.location ? { location: s.location } : {}) })));
  for (const s of SPEAKERS) secrets[s.id] = created[s.id]!.secret;
  for (const [username, role, areas] of [['can-bo-a1', 'operator', ['xa-a']], ['can-bo-a2', 'operator', ['xa-a']], ['can-bo-b', 'operator', ['xa-b']], ['quan-tri', 'admin', ['*']]] as const) {
    expect((await t.api('POST', '/api/v1/users', { username, password: PASSWORD, role, areas })).status).toBe(201);
    tokens[username] = await login(username);
  }
  // A 20 s tone as the normal broadcast an alert interrupts.
  const wav = path.join(dataDir, 'tone.wav');
  execFileSync('/usr/bin/ffmpeg', ['-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine=frequency=440:duration=20', '-ac', '1', '-ar', '8000', wav]);
  const form = new FormData();
  form.append('file', new Blob([readFileSync(wav)], { type: 'audio/wav' }), 'nhac-nen.wav');
  const up = await fetch(`${t.httpUrl}/api/v1/media`, { method: 'POST', headers: { authorization: `Bearer ${t.adminToken}` }, body: form });
  expect(up.status).toBe(201);
  toneId = ((await up.json()) as { id: string }).id;
  await startSpeakers();
  await waitFor(() => SPEAKERS.every((s) => t.app.broker.isConnected(s.id)), 10_000);
}, 60_000);

afterAll(async () => {
  await sim?.stop();
  await t?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('emergency alerts over real MQTT', () => {
  let alertId = '';
  let normalId = '';
  const liveEvents: any[] = [];
  let socket: Socket | undefined;

  it('an operator of the alert\'s commune follows it on the live feed', async () => {
    socket = io(t.httpUrl, { transports: ['websocket'], auth: { token: tokens['can-bo-a2'] } });
    await new Promise<void>((resolve, reject) => { socket!.on('connect', () => resolve()); socket!.on('connect_error', reject); });
    await new Promise<void>((resolve) => socket!.emit('subscribe', { areas: ['xa-a'] }, () => resolve()));
    socket.on('alert', (e) => liveEvents.push(e));
  });

  it('an Actual alert waits for approval and plays nowhere meanwhile', async () => {
    const normal = await as('can-bo-a1')('POST', '/api/v1/broadcasts', { target: { areas: ['p1'] }, content: { mediaId: toneId } });
    expect(normal.status).toBe(403); // p1 is outside the operator's commune
    const played = await t.api('POST', '/api/v1/broadcasts', { target: { areas: ['p1'] }, content: { mediaId: toneId } });
    expect(played.status).toBe(201);
    normalId = played.body.id;
    await waitTargets(normalId, (by) => SPEAKERS.every((s) => by[s.id] === 'playing'));

    const r = await as('can-bo-a1')('POST', '/api/v1/alerts', alertBody());
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ state: 'pending_approval', status: 'Actual', severity: 'Extreme', areas: ['xa-a'], createdBy: expect.stringContaining('can-bo-a1') });
    expect(r.body.broadcastId).toBeUndefined();
    alertId = r.body.id;
    // Meanwhile the speakers of its areas that can fetch the announcement ahead have it cached (§12.7);
    // the one without media.prefetch and the one of another commune were not asked.
    const asked = await waitFor(() => prefetched.find((c) => c.deviceId === 'loa-a1'), 10_000);
    const media = (asked.params as { media: { url: string; sha256: string } }).media;
    expect(media.url).toMatch(/\/media\/[^/]+\/file\?exp=\d+&sig=/);
    const sha = media.sha256;
    await waitFor(() => speaker('loa-a1').hasMedia(sha) && speaker('loa-a2').hasMedia(sha), 10_000);
    expect([prefetches('loa-a1'), prefetches('loa-a2'), prefetches('loa-a3'), prefetches('loa-b1')]).toEqual([1, 1, 0, 0]);
    expect(speaker('loa-a3').hasMedia(sha)).toBe(false);
    await new Promise((res) => setTimeout(res, 1500));
    const still = await broadcastOf(normalId);
    expect(still.targets.every((x: any) => x.state === 'playing')).toBe(true);
    expect((await t.api('GET', '/api/v1/broadcasts')).body.filter((b: any) => b.priority === 'emergency')).toEqual([]);
  });

  it('its creator cannot approve it, nor can an operator of another commune (who does not even see it)', async () => {
    const own = await as('can-bo-a1')('POST', `/api/v1/alerts/${alertId}/approve`);
    expect(own.status).toBe(403);
    expect(own.body.error.code).toBe('KENG_ERR_FORBIDDEN');
    expect((await as('can-bo-b')('POST', `/api/v1/alerts/${alertId}/approve`)).status).toBe(404);
    expect((await as('can-bo-b')('GET', '/api/v1/alerts')).body).toEqual([]);
    // Scope before the limit: commune B's newest alert is found even when A's are newer.
    // (Actual alerts wait for approval: nothing plays, and both are withdrawn.)
    const b = await as('can-bo-b')('POST', '/api/v1/alerts', alertBody({ areas: ['xa-b'], headline: 'Cảnh báo xã Tà Mít' }));
    const a = await as('can-bo-a1')('POST', '/api/v1/alerts', alertBody({ areas: ['thon-a1'], headline: 'Cảnh báo bản Nà Khum' }));
    expect((await as('can-bo-b')('GET', '/api/v1/alerts?limit=1')).body.map((x: any) => x.id)).toEqual([b.body.id]);
    expect((await as('can-bo-b')('POST', `/api/v1/alerts/${b.body.id}/reject`)).body.state).toBe('rejected');
    expect((await as('can-bo-a1')('POST', `/api/v1/alerts/${a.body.id}/reject`)).body.state).toBe('rejected');
  });

  it('approved by a second operator, it preempts the normal broadcast on every loudspeaker of its areas and no other', async () => {
    const downloadsBefore = Object.fromEntries(SPEAKERS.map((x) => [x.id, speaker(x.id).downloads]));
    const r = await as('can-bo-a2')('POST', `/api/v1/alerts/${alertId}/approve`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ state: 'active', approvedBy: expect.stringContaining('can-bo-a2') });
    const bid = r.body.broadcastId as string;
    const b = await broadcastOf(bid);
    expect(b.priority).toBe('emergency');
    expect(b.targets.map((x: any) => x.deviceId).sort()).toEqual(['loa-a1', 'loa-a2', 'loa-a3']);
    await waitTargets(bid, (by) => ['loa-a1', 'loa-a2', 'loa-a3'].every((id) => by[id] === 'playing' || by[id] === 'completed'));
    const normal = await waitTargets(normalId, (by) => ['loa-a1', 'loa-a2', 'loa-a3'].every((id) => by[id] === 'preempted'));
    expect(normal['loa-b1']).toBe('playing');
    // The ones that fetched it ahead played it without downloading; the older firmware downloaded it now.
    const downloads = Object.fromEntries(SPEAKERS.map((x) => [x.id, speaker(x.id).downloads - downloadsBefore[x.id]!]));
    expect(downloads).toEqual({ 'loa-a1': 0, 'loa-a2': 0, 'loa-a3': 1, 'loa-b1': 0 });
  });

  it('cancel stops it everywhere in one step and plays the cancellation notice there', async () => {
    const before = (await as('can-bo-a1')('GET', `/api/v1/alerts/${alertId}`)).body;
    const r = await as('can-bo-a1')('POST', `/api/v1/alerts/${alertId}/cancel`, { reason: 'nước đã rút' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ state: 'cancelled', endReason: 'nước đã rút' });
    await waitTargets(before.broadcastId, (by) => Object.values(by).every((s) => s === 'stopped' || s === 'completed'));
    const notice = await waitTargets(`${before.broadcastId}-cancel`, (by) => ['loa-a1', 'loa-a2', 'loa-a3'].every((id) => by[id] === 'completed'), 45_000);
    expect(Object.keys(notice).sort()).toEqual(['loa-a1', 'loa-a2', 'loa-a3']);
    expect((await as('can-bo-a1')('POST', `/api/v1/alerts/${alertId}/cancel`)).status).toBe(409);
  });

  it('the live feed told the second operator of every step, and the audit log has them', async () => {
    await waitFor(() => liveEvents.some((e) => e.alertId === alertId && e.change === 'cancelled'), 5000);
    expect(liveEvents.filter((e) => e.alertId === alertId).map((e) => e.change)).toEqual(['created', 'approved', 'cancelled']);
    const audit = (await t.api('GET', `/api/v1/audit?action=alert.approve`)).body;
    const list = Array.isArray(audit) ? audit : audit.entries;
    expect(list.some((e: any) => e.target === `alert:${alertId}`)).toBe(true);
    socket?.close();
  });

  it('an Exercise plays at once, says so, and only on the village it names', async () => {
    const r = await as('can-bo-a1')('POST', '/api/v1/alerts', alertBody({ status: 'Exercise', areas: ['thon-a1'], headline: 'Diễn tập phòng chống lũ' }));
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.state).toBe('active');
    const b = await broadcastOf(r.body.broadcastId);
    expect(b.targets.map((x: any) => x.deviceId)).toEqual(['loa-a1']);
    const media = (await t.api('GET', `/api/v1/media/${b.media.mediaId}`)).body;
    expect(media.text).toMatch(/^Đây là diễn tập/);
    expect(media.text).toMatch(/Hết bản tin diễn tập\.$/);
    await waitTargets(r.body.broadcastId, (by) => by['loa-a1'] === 'completed', 60_000);
  });

  it('a CAP 1.2 message with a polygon reaches the loudspeakers inside it; a DOCTYPE is refused', async () => {
    const sent = new Date(Date.now() - 60_000).toISOString().replace(/\.\d+Z$/, '-00:00');
    const expires = new Date(Date.now() + 3600_000).toISOString().replace(/\.\d+Z$/, '-00:00');
    const cap = `<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>vn.laichau.2026.0042</identifier><sender>canhbao@laichau.gov.vn</sender><sent>${sent}</sent>
  <status>Test</status><msgType>Alert</msgType><scope>Public</scope>
  <info><language>vi-VN</language><category>Met</category><event>Sạt lở đất</event>
    <urgency>Expected</urgency><severity>Severe</severity><certainty>Likely</certainty><expires>${expires}</expires>
    <headline>Nguy cơ sạt lở đất</headline>
    <area><areaDesc>Sườn đồi Nà Khum</areaDesc><polygon>21.29,105.39 21.29,105.41 21.31,105.41 21.31,105.39 21.29,105.39</polygon></area>
  </info>
</alert>`;
    const post = (body: string) => fetch(`${t.httpUrl}/api/v1/alerts`, { method: 'POST', headers: { authorization: `Bearer ${tokens['can-bo-a1']}`, 'content-type': 'application/cap+xml' }, body });
    const r = await post(cap);
    const body = await r.json() as any;
    expect(r.status, JSON.stringify(body)).toBe(201);
    expect(body).toMatchObject({ identifier: 'vn.laichau.2026.0042', state: 'active', areas: ['thon-a1'], devices: ['loa-a1'] });
    expect((await broadcastOf(body.broadcastId)).targets.map((x: any) => x.deviceId)).toEqual(['loa-a1']);
    const evil = cap.replace('<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]>').replace('Nguy cơ sạt lở đất', '&x;');
    const refused = await post(evil);
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as any).error.code).toBe('KENG_ERR_CAP_FORBIDDEN_XML');
  });

  it('exports CAP 1.2 XML valid against the OASIS schema, and active public alerts as Atom', async () => {
    const list = (await t.api('GET', '/api/v1/alerts')).body as any[];
    const res = await fetch(`${t.httpUrl}/api/v1/alerts/${list[0].id}.cap.xml`, { headers: { authorization: `Bearer ${t.adminToken}` } });
    expect(res.headers.get('content-type')).toMatch(/^application\/cap\+xml/);
    const xml = await res.text();
    const verdict = execFileSync('/usr/bin/python3', ['-c', `
import sys
from lxml import etree
p = etree.XMLParser(resolve_entities=False, no_network=True)
s = etree.XMLSchema(etree.parse(sys.argv[1], p))
print(s.validate(etree.fromstring(sys.stdin.buffer.read(), p)))`, XSD], { input: xml, encoding: 'utf8' }).trim();
    expect(verdict).toBe('True');
    const feed = await fetch(`${t.httpUrl}/api/v1/alerts.atom`);
    expect(feed.status).toBe(200);
    expect(feed.headers.get('content-type')).toMatch(/^application\/atom\+xml/);
    // Only Public Actual active alerts: the exercise and the test are not there, nothing is active and Actual now.
    expect(await feed.text()).not.toContain('<entry>');
  });

  it('the play-at-once policy lets an Extreme + Immediate alert sound at once; an Update replaces it', async () => {
    expect((await as('can-bo-a1')('PUT', '/api/v1/alerts/policy', { playAtOnce: ['Extreme'] })).status).toBe(403);
    expect((await as('quan-tri')('PUT', '/api/v1/alerts/policy', { playAtOnce: ['Extreme'] })).body).toEqual({ playAtOnce: ['Extreme'] });
    const first = await as('can-bo-a1')('POST', '/api/v1/alerts', alertBody({ areas: ['thon-a2'] }));
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    expect(first.body).toMatchObject({ state: 'active', playedAtOnce: true });
    expect(first.body.approvedBy).toBeUndefined();
    const feed = await (await fetch(`${t.httpUrl}/api/v1/alerts.atom`)).text();
    expect(feed).toContain(`/api/v1/alerts/${first.body.id}.cap.xml`);
    // The second person confirms afterwards.
    const confirm = await as('can-bo-a2')('POST', `/api/v1/alerts/${first.body.id}/approve`);
    expect(confirm.body).toMatchObject({ state: 'active', approvedBy: expect.stringContaining('can-bo-a2') });

    const update = await as('can-bo-a2')('POST', '/api/v1/alerts', alertBody({ msgType: 'Update', references: [first.body.reference], areas: ['thon-a2'], severity: 'Severe', headline: 'Nước suối tiếp tục lên' }));
    expect(update.status, JSON.stringify(update.body)).toBe(201);
    expect(update.body.state).toBe('pending_approval'); // Severe is not in the policy
    expect((await as('can-bo-a1')('POST', `/api/v1/alerts/${update.body.id}/approve`)).body.state).toBe('active');
    const old = (await as('can-bo-a1')('GET', `/api/v1/alerts/${first.body.id}`)).body;
    expect(old).toMatchObject({ state: 'ended', replacedBy: update.body.id });
    const audit = (await t.api('GET', '/api/v1/audit?action=alert.play_at_once')).body;
    expect((Array.isArray(audit) ? audit : audit.entries).some((e: any) => e.target === `alert:${first.body.id}`)).toBe(true);
    await as('can-bo-a1')('POST', `/api/v1/alerts/${update.body.id}/cancel`);
  });

  it('a loudspeaker offline when the alert starts gets it when it reconnects, while the alert is valid', async () => {
    const away = sim.speakers.find((s) => s.id === 'loa-a2')!;
    await away.goOffline(4000);
    await waitFor(() => !t.app.broker.isConnected('loa-a2'), 5000);
    const r = await as('can-bo-a1')('POST', '/api/v1/alerts', alertBody({ status: 'Exercise', areas: ['thon-a2'], headline: 'Diễn tập: loa mất kết nối' }));
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const first = await waitTargets(r.body.broadcastId, (by) => by['loa-a3'] === 'playing' || by['loa-a3'] === 'completed');
    expect(first['loa-a2']).toBe('offline');
    await waitTargets(r.body.broadcastId, (by) => by['loa-a2'] === 'playing' || by['loa-a2'] === 'completed', 30_000);
  });

  it('a restart keeps a pending alert, which then plays once approved', async () => {
    await as('quan-tri')('PUT', '/api/v1/alerts/policy', { playAtOnce: [] });
    const r = await as('can-bo-a1')('POST', '/api/v1/alerts', alertBody({ areas: ['thon-a1'], headline: 'Sau khi khởi động lại' }));
    expect(r.body.state).toBe('pending_approval');
    await sim.stop();
    await t.stop({ keepData: true });
    t = await startTestApp({}, { dataDir });
    for (const u of ['can-bo-a1', 'can-bo-a2']) tokens[u] = await login(u);
    await startSpeakers();
    expect((await as('can-bo-a1')('GET', `/api/v1/alerts/${r.body.id}`)).body.state).toBe('pending_approval');
    const approved = await as('can-bo-a2')('POST', `/api/v1/alerts/${r.body.id}/approve`);
    expect(approved.body.state).toBe('active');
    await waitTargets(approved.body.broadcastId, (by) => by['loa-a1'] === 'playing' || by['loa-a1'] === 'completed', 30_000);
  });
});
