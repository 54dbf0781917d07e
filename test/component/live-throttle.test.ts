/**
 * Throttling of single-event live clients (src/live/feed.ts "Throttling",
 * docs/live-feed.md): a client whose subscriptions produce more than
 * live.maxEventRate telemetry events per second gets the latest value per
 * (device, field) once per throttleIntervalMs instead, still as ordinary
 * `telemetry` events; a quiet client is not affected; status events never
 * overtake held readings; when the rate falls, single events resume.
 * Real socket.io-client clients against the whole app.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { io as ioc, type Socket } from 'socket.io-client';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { parseMetrics, waitFor } from '../helpers/mqtt.js';
import { seedAreas } from '../helpers/seed.js';
import type { LiveFeed } from '../../src/live/index.js';
import { attachLiveFeedForTest } from '../helpers/live.js';
import { formatTime } from '../../src/core/time.js';

const PATH = '/live-throttle';
let t: TestApp | undefined;
let stopFeed: (() => Promise<void>) | undefined;
const sockets: Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.disconnect();
  await stopFeed?.();
  await t?.stop();
  t = undefined;
  stopFeed = undefined;
});

type Got = Array<{ ev: string; body: any; at: number }>;

async function setUp(): Promise<LiveFeed> {
  t = await startTestApp();
  await seedAreas(t, [
    { code: 'tp', name: 'Province', level: 'province' },
    { code: 'tc', name: 'Commune', level: 'commune', parent: 'tp' },
    { code: 'tq', name: 'Quiet commune', level: 'commune', parent: 'tp' },
  ]);
  const r = await attachLiveFeedForTest(t.app, { path: PATH, checkIntervalMs: 25, maxEventRate: 50, throttleIntervalMs: 300 });
  stopFeed = r.stop;
  return r.feed;
}

async function client(sub: { devices?: string[]; areas?: string[] }): Promise<{ s: Socket; got: Got }> {
  const s = ioc(t!.httpUrl, { path: PATH, transports: ['websocket'], reconnection: false, forceNew: true, auth: { token: t!.adminToken } });
  sockets.push(s);
  const got: Got = [];
  s.onAny((ev: string, body: unknown) => got.push({ ev, body, at: Date.now() }));
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('connect_error', reject); });
  expect(await s.timeout(5000).emitWithAck('subscribe', sub)).toMatchObject({ ok: true });
  return { s, got };
}

const tel = (deviceId: string, area: string, ts: number, values: Record<string, number>) =>
  t!.app.bus.emit('telemetry.accepted', { deviceId, area, kind: 'sensor', ts, values });
const readings = (got: Got) => got.filter((g) => g.ev === 'telemetry');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('live feed: throttling busy single-event clients', () => {
  it('a client over maxEventRate gets the latest values once per interval; a quiet client is untouched; single events resume when the rate falls', async () => {
    const feed = await setUp();
    const busy = await client({ areas: ['tc'] });
    const quiet = await client({ areas: ['tq'] });
    // ~2,000 readings/s from two devices for 1.2 s: 40 times maxEventRate
    const t0 = Date.now();
    let seq = 0;
    const timer = setInterval(() => { for (let k = 0; k < 10; k++, seq++) { tel('d1', 'tc', t0 + seq, { seq }); tel('d2', 'tc', t0 + seq, { seq, hum: 50 }); } }, 10);
    await waitFor(() => feed.stats().throttledClients === 1, 3000);
    tel('q1', 'tq', Date.now(), { level: 3 });
    await waitFor(() => readings(quiet.got).length === 1);
    await sleep(1200);
    clearInterval(timer);
    const sent = seq;
    await sleep(400); // one more throttle interval: the last values go out
    const got = readings(busy.got);
    expect(feed.stats().throttledClients).toBe(1);
    expect(quiet.got.map((g) => g.ev)).toEqual(['telemetry']);
    // far fewer events than readings (the first ~50 ms went out one by one), each an ordinary telemetry object
    expect(got.length).toBeLessThan(sent / 4);
    for (const g of got) expect(Object.keys(g.body).sort()).toEqual(['deviceId', 'ts', 'values']);
    // the last event of each device carries its latest reading
    const last = (id: string) => got.filter((g) => g.body.deviceId === id).at(-1)!.body;
    expect(last('d1')).toEqual({ deviceId: 'd1', ts: formatTime(t0 + sent - 1, 'Asia/Ho_Chi_Minh'), values: { seq: sent - 1 } });
    expect(last('d2')).toEqual({ deviceId: 'd2', ts: formatTime(t0 + sent - 1, 'Asia/Ho_Chi_Minh'), values: { seq: sent - 1, hum: 50 } });
    const m = parseMetrics(await (await fetch(`${t!.httpUrl}/metrics`, { headers: { authorization: `Bearer ${t!.adminToken}` } })).text());
    expect(m.get('keng_live_throttled_clients')).toBe(1);

    // a quiet second releases it: a new reading arrives at once, not at the next interval
    await waitFor(() => feed.stats().throttledClients === 0, 3000);
    const before = readings(busy.got).length;
    const at = Date.now();
    tel('d1', 'tc', Date.now(), { seq: -1 });
    await waitFor(() => readings(busy.got).length === before + 1);
    expect(readings(busy.got).at(-1)!.at - at).toBeLessThan(150);
  });

  it('a status event is not overtaken by held readings; subscribing more while throttled keeps the client scoped', async () => {
    const feed = await setUp();
    const busy = await client({ areas: ['tc'] });
    const t0 = Date.now();
    for (let i = 0; i < 300; i++) tel('d1', 'tc', t0 + i, { seq: i });
    await waitFor(() => feed.stats().throttledClients === 1, 3000);
    tel('d1', 'tc', t0 + 1000, { seq: 1000 });
    tel('d9', 'tq', t0 + 1000, { seq: 9 }); // not subscribed
    t!.app.bus.emit('status', { deviceId: 'd1', area: 'tc', online: false, at: t0 + 1001 });
    await waitFor(() => busy.got.some((g) => g.ev === 'status'));
    const i = busy.got.findIndex((g) => g.ev === 'status');
    expect(busy.got[i - 1]).toMatchObject({ ev: 'telemetry', body: { deviceId: 'd1', values: { seq: 1000 } } });
    // a subscription added while throttled is served through the throttled group
    expect(await busy.s.timeout(5000).emitWithAck('subscribe', { areas: ['tq'] })).toMatchObject({ ok: true });
    tel('d9', 'tq', t0 + 2000, { seq: 10 });
    await waitFor(() => readings(busy.got).some((g) => g.body.deviceId === 'd9'));
    expect(readings(busy.got).filter((g) => g.body.deviceId === 'd9').map((g) => g.body.values)).toEqual([{ seq: 10 }]);
  });
});
