/**
 * What commune staff do to a registered device, through the real API and the
 * real broker with mqtt.js devices: disable and re-enable (CONNACK 5 while
 * disabled, the connection closed at once), rotate the secret or the access
 * token (the old one refused, its connection closed), set a speaker's volume
 * (speaker.setVolume reaches the speaker, its answer is visible), move a
 * device to another area (one history, scope follows), and the names of
 * schedules and media in the broadcast log.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectDevice, connectRefused, end, publish, waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices, COMMUNE_TREE, type DeviceCredentials } from '../helpers/seed.js';

const PW = 'staff password 12';
let t: TestApp;
let creds: Record<string, DeviceCredentials>;
const tokens: Record<string, string> = {};

function closed(c: MqttClient): Promise<void> {
  return new Promise((resolve) => { if (!c.connected) resolve(); else c.once('close', () => resolve()); });
}

/** A speaker as firmware would do it: subscribes to its rpc/request/+, answers setVolume and reports the volume in telemetry. */
async function speaker(id: string, password: string, seen: string[]): Promise<MqttClient> {
  const c = await connectDevice(t.mqttUrl, id, password);
  c.on('message', (topic, payload) => {
    const m = /rpc\/request\/(.+)$/.exec(topic);
    if (!m) return;
    const req = JSON.parse(payload.toString()) as { method: string; params: { volume: number } };
    seen.push(`${req.method} ${JSON.stringify(req.params)}`);
    const volume = req.params.volume;
    // The answer is acknowledged once its state is committed; the test may close the speaker meanwhile.
    void publish(c, `v1/devices/${id}/rpc/response/${m[1]}`, JSON.stringify({ status: 'ok', volume }))
      .then(() => publish(c, `v1/devices/${id}/telemetry`, JSON.stringify({ volume })))
      .catch(() => undefined);
  });
  await new Promise<void>((resolve, reject) => c.subscribe(`v1/devices/${id}/rpc/request/+`, { qos: 1 }, (e) => (e ? reject(e) : resolve())));
  return c;
}

beforeAll(async () => {
  t = await startTestApp();
  await seedAreas(t, COMMUNE_TREE);
  creds = await seedDevices(t, [
    { id: 'soil-1', kind: 'sensor', name: 'Ruộng 1', area: 'va1' },
    { id: 'soil-2', kind: 'sensor', name: 'Ruộng 2', area: 'va1' },
    { id: 'loa-1', kind: 'speaker', name: 'Loa đình', area: 'va1' },
    { id: 'loa-2', kind: 'speaker', name: 'Loa chợ', area: 'va1' },
    { id: 'move-1', kind: 'sensor', name: 'Cảm biến di chuyển', area: 'va1' },
  ]);
  for (const [username, role, areas] of [['op-ca', 'operator', ['ca']], ['op-cb', 'operator', ['cb']], ['view-ca', 'viewer', ['ca']]] as const) {
    expect((await t.api('POST', '/api/v1/users', { username, password: PW, role, areas })).status).toBe(201);
    const r = await t.api('POST', '/api/v1/auth/login', { username, password: PW });
    tokens[username] = r.body.token;
  }
}, 60_000);
afterAll(async () => { await t?.stop(); });

describe('disable and re-enable', () => {
  it('a disabled device is disconnected at once and refused with CONNACK 5; re-enabled, it connects again', async () => {
    const c = await connectDevice(t.mqttUrl, 'soil-1', creds['soil-1']!.secret);
    const gone = closed(c);
    const r = await t.api('PATCH', '/api/v1/devices/soil-1', { enabled: false }, tokens['op-ca']);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: 'soil-1', enabled: false });
    await gone;
    expect(await connectRefused(t.mqttUrl, 'soil-1', creds['soil-1']!.secret)).toBe(5);
    expect(await connectRefused(t.mqttUrl, creds['soil-1']!.accessToken)).toBe(5);
    expect((await t.api('GET', '/api/v1/devices/soil-1')).body.enabled).toBe(false);

    expect((await t.api('PATCH', '/api/v1/devices/soil-1', { enabled: true }, tokens['op-ca'])).body.enabled).toBe(true);
    await end(await connectDevice(t.mqttUrl, 'soil-1', creds['soil-1']!.secret));
    const audit = (await t.api('GET', '/api/v1/audit?limit=5')).body.entries as Array<{ action: string; target: string; before: unknown; after: unknown }>;
    const last = audit.find((a) => a.action === 'device.update' && a.target === 'device:soil-1');
    expect(last).toMatchObject({ before: { enabled: false }, after: { enabled: true } });
  });

  it('viewers may not (403), other communes do not see it (404), bad bodies are 400', async () => {
    expect((await t.api('PATCH', '/api/v1/devices/soil-1', { enabled: false }, tokens['view-ca'])).status).toBe(403);
    expect((await t.api('PATCH', '/api/v1/devices/soil-1', { enabled: false }, tokens['op-cb'])).status).toBe(404);
    expect((await t.api('PATCH', '/api/v1/devices/soil-1', {})).status).toBe(400);
    expect((await t.api('PATCH', '/api/v1/devices/soil-1', { kind: 'speaker' })).status).toBe(400);
    expect((await t.api('PATCH', '/api/v1/devices/soil-1', { name: '' })).status).toBe(400);
    expect((await t.api('GET', '/api/v1/devices/soil-1')).body.enabled).toBe(true);
  });
});

describe('rotating credentials', () => {
  it('a new secret: the old one is refused and its connection closed; a connection on the token stays', async () => {
    const bySecret = await connectDevice(t.mqttUrl, 'soil-2', creds['soil-2']!.secret);
    const byToken = await connectDevice(t.mqttUrl, creds['soil-2']!.accessToken, undefined, { clientId: 'soil-2' });
    await waitFor(() => !bySecret.connected); // one connection per device: the token login replaced it
    const again = await connectDevice(t.mqttUrl, 'soil-2', creds['soil-2']!.secret);
    await waitFor(() => !byToken.connected);
    const gone = closed(again);
    const r = await t.api('POST', '/api/v1/devices/soil-2/secret', undefined, tokens['op-ca']);
    expect(r.status).toBe(200);
    expect(Object.keys(r.body).sort()).toEqual(['id', 'secret']);
    await gone;
    expect(await connectRefused(t.mqttUrl, 'soil-2', creds['soil-2']!.secret)).toBe(4);
    const fresh = await connectDevice(t.mqttUrl, 'soil-2', r.body.secret);
    await end(fresh);

    // Rotating the secret leaves a token connection alone; rotating the token closes it.
    const tokenConn = await connectDevice(t.mqttUrl, creds['soil-2']!.accessToken);
    expect((await t.api('POST', '/api/v1/devices/soil-2/secret')).status).toBe(200);
    await new Promise((res) => setTimeout(res, 200));
    expect(tokenConn.connected).toBe(true);
    const tokenGone = closed(tokenConn);
    const tr = await t.api('POST', '/api/v1/devices/soil-2/token');
    expect(tr.status).toBe(200);
    await tokenGone;
    expect(await connectRefused(t.mqttUrl, creds['soil-2']!.accessToken)).toBe(4);
    await end(await connectDevice(t.mqttUrl, tr.body.accessToken));

    const audit = JSON.stringify((await t.api('GET', '/api/v1/audit?limit=10')).body);
    expect(audit).toContain('device.rotate_secret');
    expect(audit).toContain('device.rotate_token');
    expect(audit).not.toContain(r.body.secret);
    expect(audit).not.toContain(tr.body.accessToken);
    expect((await t.api('POST', '/api/v1/devices/soil-2/secret', undefined, tokens['view-ca'])).status).toBe(403);
    expect((await t.api('POST', '/api/v1/devices/soil-2/token', undefined, tokens['op-cb'])).status).toBe(404);
  });
});

describe('speaker volume', () => {
  it('a connected speaker gets speaker.setVolume, answers, and the answer and its telemetry are visible', async () => {
    const seen: string[] = [];
    const c = await speaker('loa-1', creds['loa-1']!.secret, seen);
    await publish(c, 'v1/devices/loa-1/status', JSON.stringify({ online: true })); // the connect sequence: the subscription exists
    const r = await t.api('POST', '/api/v1/devices/loa-1/volume', { volume: 65 }, tokens['op-ca']);
    expect(r.status).toBe(202);
    expect(r.body).toMatchObject({ deviceId: 'loa-1', method: 'speaker.setVolume', params: { volume: 65 } });
    const url = `/api/v1/devices/loa-1/commands/${r.body.id}`;
    const answered = await waitFor(async () => {
      const g = await t.api('GET', url, undefined, tokens['op-ca']);
      return g.body.state === 'answered' ? g.body : undefined;
    });
    expect(answered.response).toEqual({ status: 'ok', volume: 65 });
    expect(seen).toEqual(['speaker.setVolume {"volume":65}']);
    await waitFor(async () => (await t.api('GET', '/api/v1/devices/loa-1')).body.latest.volume?.value === 65);
    await end(c);
  });

  it('an offline speaker gets it when it reconnects', async () => {
    const r = await t.api('POST', '/api/v1/devices/loa-2/volume', { volume: 30, validForSec: 600 });
    expect(r.status).toBe(202);
    expect(r.body.state).toBe('queued');
    const seen: string[] = [];
    const c = await speaker('loa-2', creds['loa-2']!.secret, seen);
    await waitFor(async () => (await t.api('GET', `/api/v1/devices/loa-2/commands/${r.body.id}`)).body.state === 'answered');
    expect(seen).toEqual(['speaker.setVolume {"volume":30}']);
    await end(c);
  });

  it('refuses a sensor (422), a volume out of range (400), viewers (403) and other communes (404)', async () => {
    expect((await t.api('POST', '/api/v1/devices/soil-1/volume', { volume: 50 })).status).toBe(422);
    expect((await t.api('POST', '/api/v1/devices/loa-1/volume', { volume: 101 })).status).toBe(400);
    expect((await t.api('POST', '/api/v1/devices/loa-1/volume', { volume: 50 }, tokens['view-ca'])).status).toBe(403);
    expect((await t.api('POST', '/api/v1/devices/loa-1/volume', { volume: 50 }, tokens['op-cb'])).status).toBe(404);
    expect((await t.api('GET', '/api/v1/devices/loa-1/commands/r-unknown')).status).toBe(404);
  });
});

describe('moving a device to another area', () => {
  it('keeps one history, tags new readings with the new area, and scope follows', async () => {
    const areas: string[] = [];
    const off = t.app.bus.on('telemetry', (e) => { if (e.deviceId === 'move-1') areas.push(e.area); });
    const c = await connectDevice(t.mqttUrl, 'move-1', creds['move-1']!.secret);
    await publish(c, 'v1/devices/move-1/telemetry', JSON.stringify({ soil_moisture: 11 }));
    // An operator of commune A cannot move it into commune B (no devices.write there).
    expect((await t.api('PATCH', '/api/v1/devices/move-1', { area: 'cb' }, tokens['op-ca'])).status).toBe(403);
    expect((await t.api('PATCH', '/api/v1/devices/move-1', { area: 'nope' })).status).toBe(422);
    const r = await t.api('PATCH', '/api/v1/devices/move-1', { area: 'cb', name: 'Cảm biến ruộng B', location: { lat: 21.1, lon: 105.2 } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ area: 'cb', name: 'Cảm biến ruộng B', location: { lat: 21.1, lon: 105.2 } });
    await new Promise((res) => setTimeout(res, 5)); // a later server timestamp for the second reading
    await publish(c, 'v1/devices/move-1/telemetry', JSON.stringify({ soil_moisture: 22 }));
    off();
    expect(areas).toEqual(['va1', 'cb']); // the same connection, the new area from the move on

    const hist = await t.api('GET', '/api/v1/devices/move-1/telemetry');
    expect(hist.status).toBe(200);
    expect(hist.body.points.map((p: { values: { soil_moisture: number } }) => p.values.soil_moisture)).toEqual([11, 22]);
    expect((await t.api('GET', '/api/v1/devices/move-1', undefined, tokens['op-ca'])).status).toBe(404);
    expect((await t.api('GET', '/api/v1/devices/move-1', undefined, tokens['op-cb'])).status).toBe(200);
    expect((await t.api('GET', '/api/v1/telemetry/latest?area=cb', undefined, tokens['op-cb'])).body.devices
      .map((d: { id: string }) => d.id)).toContain('move-1');
    // Its new commune may move it back, but only into an area it covers.
    expect((await t.api('PATCH', '/api/v1/devices/move-1', { area: 'va1' }, tokens['op-cb'])).status).toBe(403);
    await end(c);
  });
});

describe('the broadcast log names schedules and media', () => {
  it('JSON and CSV carry the schedule\'s and the media\'s names next to their ids', async () => {
    const media = await t.api('POST', '/api/v1/media/tts', { text: 'Thông báo họp dân', name: 'Họp dân thôn Đông' });
    expect(media.status).toBe(201);
    const at = new Date(Date.now() + 1500).toISOString();
    const sch = await t.api('POST', '/api/v1/schedules', { name: 'Bản tin họp dân', target: { devices: ['loa-1'] }, content: { mediaId: media.body.id }, at });
    expect(sch.status).toBe(201);
    const log = await waitFor(async () => {
      const l = await t.api('GET', `/api/v1/broadcasts/log?scheduleId=${sch.body.id}`);
      return l.body.length > 0 ? l.body : undefined;
    }, 10_000);
    expect(log[0]).toMatchObject({ scheduleId: sch.body.id, scheduleName: 'Bản tin họp dân', mediaId: media.body.id, mediaName: 'Họp dân thôn Đông' });
    const csv = await fetch(`${t.httpUrl}/api/v1/broadcasts/log?scheduleId=${sch.body.id}&format=csv`, { headers: { authorization: `Bearer ${t.adminToken}` } });
    const lines = (await csv.text()).replace(/^\uFEFF/, '').split('\r\n');
    expect(lines[0]).toBe('time,device_time,broadcast_id,schedule_id,schedule_name,media_id,media_name,area,area_name,device_id,device_name,state,previous_state,detail,source');
    expect(lines[1]).toContain(`,${sch.body.id},Bản tin họp dân,${media.body.id},Họp dân thôn Đông,va1,Thôn A1,loa-1,Loa đình,`);
  }, 20_000);
});
