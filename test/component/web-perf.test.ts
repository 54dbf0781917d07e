/**
 * The farmer's whole first visit on a rural phone link: a fresh Chromium
 * (nothing cached) under emulated slow 3G (1.6 Mbit/s down, 750 kbit/s up,
 * 300 ms round trip, through the DevTools protocol) opens the page, logs in
 * and sees the first sensor value. It must take under 5 s from navigation
 * start and transfer under 300 KB on the wire (headers, bodies and websocket
 * frames until the live feed is on). The figures and the request waterfall
 * are printed, so a slower build shows where the time went.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CDPSession } from 'playwright-core';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { launchBrowser, type Browser } from '../helpers/browser.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas, seedDevices } from '../helpers/seed.js';

const FARMER = { username: 'nong-dan-cham', password: 'dong-ruong-xanh-muot' };
const SENSOR = { id: 'dat-cham-01', name: 'Ruộng nhà Chăm', area: 'va1', kind: 'sensor' as const };

/** Slow 3G as the brief for rural links gives it (bytes per second for CDP). */
const SLOW_3G = { offline: false, latency: 300, downloadThroughput: 1_600_000 / 8, uploadThroughput: 750_000 / 8, connectionType: 'cellular3g' as const };
const TIME_LIMIT_MS = 5000;
const BYTES_LIMIT = 300 * 1024;

interface Req { url: string; method: string; start: number; end?: number; bytes: number; fromCache: boolean }

/** Every request of the page with its timing and on-the-wire size, from the DevTools protocol. */
function watchNetwork(cdp: CDPSession) {
  const reqs = new Map<string, Req>();
  let wsBytes = 0;
  cdp.on('Network.requestWillBeSent', (e) => {
    reqs.set(e.requestId, { url: e.request.url, method: e.request.method, start: e.timestamp, bytes: 0, fromCache: false });
  });
  cdp.on('Network.requestServedFromCache', (e) => { const r = reqs.get(e.requestId); if (r) r.fromCache = true; });
  cdp.on('Network.loadingFinished', (e) => {
    const r = reqs.get(e.requestId);
    if (r) { r.end = e.timestamp; r.bytes = e.encodedDataLength; }
  });
  cdp.on('Network.webSocketFrameReceived', (e) => { wsBytes += e.response.payloadData.length + 2; });
  cdp.on('Network.webSocketFrameSent', (e) => { wsBytes += e.response.payloadData.length + 6; });
  return {
    reqs,
    bytes: () => [...reqs.values()].reduce((s, r) => s + r.bytes, 0) + wsBytes,
    wsBytes: () => wsBytes,
    waterfall(origin: number): string {
      const list = [...reqs.values()].sort((a, b) => a.start - b.start);
      return list.map((r) => {
        const from = Math.round((r.start - origin) * 1000);
        const to = r.end !== undefined ? Math.round((r.end - origin) * 1000) : NaN;
        const name = r.url.replace(/^https?:\/\/[^/]+/, '').replace(/^\/app\/[0-9a-f]+\//, '');
        return `  ${String(from).padStart(5)} → ${String(to).padStart(5)} ms ${(r.bytes / 1024).toFixed(1).padStart(6)} KiB  ${r.method.padEnd(4)} ${name}`;
      }).join('\n');
    },
  };
}

const PUBLIC = path.resolve(__dirname, '../../src/web/public');

/** The modules main.js needs before it runs: its static imports, transitively (lazy views are not among them). */
function staticImports(entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (name: string): void => {
    let text: string;
    try { text = readFileSync(path.join(PUBLIC, name), 'utf8'); } catch { return; /* a vendored module, served from node_modules */ }
    for (const m of text.matchAll(/^import\s[^;]*?from\s*'\.\/([^']+)'/gm)) {
      if (!seen.has(m[1]!)) { seen.add(m[1]!); visit(m[1]!); }
    }
  };
  visit(entry);
  return seen;
}

describe('web app on slow 3G (fresh Chromium, 412×915)', () => {
  let t: TestApp;
  let browser: Browser;

  beforeAll(async () => {
    t = await startTestApp();
    await seedAreas(t, COMMUNE_TREE);
    const creds = await seedDevices(t, [SENSOR]);
    expect((await t.api('POST', '/api/v1/users', { ...FARMER, role: 'viewer', areas: ['ca'] })).status).toBe(201);
    const device = await connectDevice(t.mqttUrl, SENSOR.id, creds[SENSOR.id]!.secret);
    await publish(device, `v1/devices/${SENSOR.id}/telemetry`, JSON.stringify({ soil_moisture: 27.5, temperature: 29.1, battery_v: 3.88 }));
    await waitFor(async () => (await t.api('GET', `/api/v1/devices/${SENSOR.id}`)).body.latest?.battery_v);
    await end(device);
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await t?.stop();
  });

  it('index.html preloads every module main.js imports, so the browser fetches them in one round trip, not one per level', () => {
    const page = readFileSync(path.join(PUBLIC, 'index.html'), 'utf8');
    const preloaded = new Set([...page.matchAll(/<link rel="modulepreload" href="%BASE%([^"]+)">/g)].map((m) => m[1]!));
    const needed = staticImports('main.js');
    expect(needed).toContain('view-sensors.js');
    expect([...needed].filter((n) => !preloaded.has(n))).toEqual([]);
    // And nothing more: a preloaded staff view would cost the farmer's phone its bytes.
    expect([...preloaded].filter((n) => !needed.has(n))).toEqual([]);
  });

  it('login to the first value in under 5 s, under 300 KB on the wire', async () => {
    const page = await browser.newPage();
    const cdp = await browser.context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    await cdp.send('Network.emulateNetworkConditions', SLOW_3G);
    const net = watchNetwork(cdp);

    await page.goto(`${t.httpUrl}/`, { waitUntil: 'commit' });
    // As a user does: type as soon as the form is there (Playwright waits for it), then submit.
    await page.fill('input[name="username"]', FARMER.username);
    await page.fill('input[name="password"]', FARMER.password);
    const formAt = await page.evaluate(() => performance.now());
    await page.click('button[type="submit"]');
    // Milliseconds since navigation start (performance.timeOrigin) when the value is on screen.
    const shownAt = await (await page.waitForFunction(() => {
      const dd = document.querySelector('[data-field="soil_moisture"] dd');
      return dd && dd.textContent === '27,5 %' ? performance.now() : 0;
    }, undefined, { polling: 'raf', timeout: 20_000 })).jsonValue() as number;
    const shownBytes = net.bytes();
    await page.locator('.live.on').waitFor({ timeout: 20_000 });
    const liveAt = await page.evaluate(() => performance.now());
    const total = net.bytes();

    const origin = Math.min(...[...net.reqs.values()].map((r) => r.start));
    console.log([
      `slow 3G first visit: form ready ${Math.round(formAt)} ms, first value ${Math.round(shownAt)} ms, live feed on ${Math.round(liveAt)} ms after navigation start`,
      `  ${net.reqs.size} requests; ${(shownBytes / 1024).toFixed(1)} KiB until the value, ${(total / 1024).toFixed(1)} KiB until live (websocket ${(net.wsBytes() / 1024).toFixed(1)} KiB)`,
      net.waterfall(origin),
    ].join('\n'));

    expect([...net.reqs.values()].filter((r) => r.fromCache)).toEqual([]);
    expect(shownAt).toBeLessThan(TIME_LIMIT_MS);
    expect(total).toBeLessThan(BYTES_LIMIT);
    await page.close();
    expect(browser.consoleErrors).toEqual([]);
  });
});
