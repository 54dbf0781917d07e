/**
 * Keng's web app at `/` in a real Chromium (playwright-core), against the
 * whole app in-process: a farmer (viewer of commune A) logs in through the
 * form, sees the sensor of commune A with its values, sees a new MQTT reading
 * arrive without reloading, and never sees commune B's sensor. Phone-sized
 * viewport; screenshots go to test/artifacts/ (git-ignored) for a human look.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import type { MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { PHONE, launchBrowser, logIn as logInAs, shot, type Browser } from '../helpers/browser.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas, seedDevices } from '../helpers/seed.js';

const VIEWPORT = PHONE;

const FARMER = { username: 'nong-dan-a', password: 'lua-nep-cai-hoa-vang' };
const OPERATOR = { username: 'can-bo-a', password: 'loa-thon-dong-2026' };
const SENSOR_A = { id: 'dat-ca-01', name: 'Ruộng ông Ba', area: 'va1' };
const SENSOR_B = { id: 'dat-cb-01', name: 'Ruộng bà Tư', area: 'cb' };

describe('web app (Chromium, 412×915)', () => {
  let t: TestApp;
  let deviceA: MqttClient;
  let secretA = '';
  let browser: Browser;
  const newPage = (opts?: { httpErrors?: boolean }): Promise<Page> => browser.newPage(opts);
  const logIn = (page: Page, who: { username: string; password: string }): Promise<void> => logInAs(page, t.httpUrl, who);
  const card = (page: Page, id: string) => page.locator(`article[data-device="${id}"]`);
  const valueOf = (page: Page, id: string, field: string) => card(page, id).locator(`[data-field="${field}"] dd`);

  beforeAll(async () => {
    t = await startTestApp();
    await seedAreas(t, COMMUNE_TREE);
    const creds = await seedDevices(t, [
      { ...SENSOR_A, kind: 'sensor' },
      { ...SENSOR_B, kind: 'sensor' },
    ]);
    secretA = creds[SENSOR_A.id]!.secret;
    expect((await t.api('POST', '/api/v1/users', { ...FARMER, role: 'viewer', areas: ['ca'] })).status).toBe(201);
    expect((await t.api('POST', '/api/v1/users', { ...OPERATOR, role: 'operator', areas: ['ca'] })).status).toBe(201);

    // A day of history (for the chart), then the current reading.
    deviceA = await connectDevice(t.mqttUrl, SENSOR_A.id, secretA);
    const now = Date.now();
    const backlog = Array.from({ length: 48 }, (_, i) => ({
      ts: now - (48 - i) * 30 * 60_000,
      values: { soil_moisture: Math.round((28 + 6 * Math.sin(i / 6)) * 10) / 10, temperature: Math.round((26 + 4 * Math.sin(i / 8)) * 10) / 10 },
    }));
    await publish(deviceA, `v1/devices/${SENSOR_A.id}/telemetry`, JSON.stringify(backlog));
    await publish(deviceA, `v1/devices/${SENSOR_A.id}/telemetry`, JSON.stringify({ soil_moisture: 31.5, temperature: 28.4, battery_v: 3.92 }));
    const deviceB = await connectDevice(t.mqttUrl, SENSOR_B.id, creds[SENSOR_B.id]!.secret);
    await publish(deviceB, `v1/devices/${SENSOR_B.id}/telemetry`, JSON.stringify({ soil_moisture: 12.5 }));
    await end(deviceB);
    await waitFor(async () => (await t.api('GET', `/api/v1/devices/${SENSOR_A.id}`)).body.latest?.battery_v);

    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    if (deviceA?.connected) await end(deviceA);
    await t?.stop();
  });

  it('serves the page with a CSP that allows no inline script, and versioned assets cached for good', async () => {
    const res = await fetch(`${t.httpUrl}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/script-src 'self'/);
    expect(csp).not.toMatch(/script-src[^;]*unsafe-inline/);
    const page = await res.text();
    expect(page).toMatch(/<html lang="vi">/);
    expect(page).toContain('<meta name="keng-tz" content="Asia/Ho_Chi_Minh">');
    const main = /src="(\/app\/[0-9a-f]+\/main\.js)"/.exec(page)?.[1];
    expect(main).toBeDefined();
    const js = await fetch(t.httpUrl + main!, { headers: { 'accept-encoding': 'br' } });
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(js.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    const again = await fetch(t.httpUrl + main!, { headers: { 'if-none-match': js.headers.get('etag')! } });
    expect(again.status).toBe(304);
    // Vendored modules import each other relatively: the browser needs no import map.
    const hooks = await (await fetch(t.httpUrl + main!.replace('main.js', 'hooks.mjs'))).text();
    expect(hooks).toContain('from"./preact.mjs"');
    expect((await fetch(t.httpUrl + main!.replace('main.js', 'nope.js'))).status).toBe(404);
  });

  it('the farmer logs in and sees the sensor of their commune with its values, in Vietnamese formats', async () => {
    const page = await newPage();
    await page.goto(`${t.httpUrl}/`);
    expect(await page.getAttribute('html', 'lang')).toBe('vi');
    await page.locator('form.login').waitFor();
    // Vietnamese formats through Intl, in the commune's zone (the test machine's zone does not matter).
    const base = (await page.getAttribute('script[type="module"]', 'src'))!.replace(/main\.js$/, '');
    // A string, not a function: vitest rewrites import() in functions, and this one runs in the page.
    const formats = await page.evaluate(`(async () => {
      const m = await import('${base}i18n.js');
      const loc = m.makeLocale('vi', m.communeTz());
      const at = Date.UTC(2026, 11, 6, 7, 5);
      return [loc.dateTime(at), loc.number(31.5, 1) + ' %', loc.number(1234.5, 1), loc.when(at, at + 3600000), loc.when(at, at + 86400000)];
    })()`);
    expect(formats).toEqual(['06/12/2026 14:05', '31,5 %', '1.234,5', '14:05', '06/12/2026 14:05']);
    await shot(page, '1-login');
    await logIn(page, FARMER);
    await expect.poll(() => valueOf(page, SENSOR_A.id, 'soil_moisture').textContent(), { timeout: 5000 }).toBe('31,5 %');
    await expect(card(page, SENSOR_A.id).locator('h2').textContent()).resolves.toBe(SENSOR_A.name);
    await expect(valueOf(page, SENSOR_A.id, 'temperature').textContent()).resolves.toBe('28,4 °C');
    await expect(valueOf(page, SENSOR_A.id, 'battery_v').textContent()).resolves.toBe('3,92 V');
    await expect(card(page, SENSOR_A.id).locator('.soil').textContent()).resolves.toBe('Đất vừa');
    await expect(card(page, SENSOR_A.id).textContent()).resolves.toContain('Thôn A1');
    await expect(card(page, SENSOR_A.id).locator('.state').textContent()).resolves.toMatch(/^Cập nhật \d{2}:\d{2}$/);
    // Commune B's sensor is nowhere on the page.
    expect(await page.locator(`[data-device="${SENSOR_B.id}"]`).count()).toBe(0);
    expect(await page.content()).not.toContain(SENSOR_B.name);
    // The session lives in this tab only.
    expect(await page.evaluate(() => sessionStorage.getItem('keng.session'))).toContain('"role":"viewer"');
    await page.locator('.live.on').waitFor({ timeout: 5000 });
    await shot(page, '2-sensors');

    // A new reading reaches the page within 2 s, without a reload.
    await page.evaluate(() => { (window as unknown as { kengMarker: number }).kengMarker = 42; });
    const t0 = Date.now();
    await publish(deviceA, `v1/devices/${SENSOR_A.id}/telemetry`, JSON.stringify({ soil_moisture: 18.2 }));
    await expect.poll(() => valueOf(page, SENSOR_A.id, 'soil_moisture').textContent(), { timeout: 2000, interval: 50 }).toBe('18,2 %');
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await page.evaluate(() => (window as unknown as { kengMarker?: number }).kengMarker)).toBe(42);
    await expect(card(page, SENSOR_A.id).locator('.soil').textContent()).resolves.toBe('Đất khô');
    expect(await page.locator(`[data-device="${SENSOR_B.id}"]`).count()).toBe(0);
    await shot(page, '3-live-update');

    // The chart of the last day, from the history API.
    await card(page, SENSOR_A.id).getByRole('button', { name: 'Xem biểu đồ' }).click();
    await card(page, SENSOR_A.id).locator('.plot canvas').waitFor({ timeout: 5000 });
    await card(page, SENSOR_A.id).getByRole('button', { name: 'Tuần' }).click();
    await card(page, SENSOR_A.id).locator('.plot canvas').waitFor({ timeout: 5000 });
    await card(page, SENSOR_A.id).getByRole('button', { name: 'Ngày' }).click();
    await card(page, SENSOR_A.id).locator('.plot canvas').waitFor({ timeout: 5000 });
    await page.waitForTimeout(200);
    await shot(page, '4-chart');
    // Touch targets a thumb can hit: every control at least 44 × 44 px.
    const small = await page.$$eval('button, input, select, a[href]', (els) => els
      .map((e) => ({ e, r: e.getBoundingClientRect() }))
      .filter(({ r }) => r.width > 0 && (r.height < 44 || r.width < 44))
      .map(({ e, r }) => `${e.tagName} "${e.textContent}" ${Math.round(r.width)}×${Math.round(r.height)}`));
    expect(small).toEqual([]);
    // The same page on a wall screen in the commune office.
    await page.setViewportSize({ width: 1920, height: 1080 });
    await page.waitForTimeout(200);
    await shot(page, '4b-wall-screen');
    await page.setViewportSize(VIEWPORT);
    // Back on the phone, nothing stays as wide as the wall screen made it (no sideways scrolling).
    await expect.poll(() => page.evaluate(() => document.documentElement.scrollWidth), { timeout: 3000 }).toBeLessThanOrEqual(VIEWPORT.width);

    // The device goes away: the card says since when, in commune time.
    await end(deviceA);
    await expect.poll(() => card(page, SENSOR_A.id).locator('.state').textContent(), { timeout: 5000 }).toMatch(/^Mất kết nối từ \d{2}:\d{2}$/);
    await shot(page, '5-offline');

    // English on a switch, remembered across a reload; Vietnamese again on the way back.
    await page.getByRole('button', { name: 'Switch to English' }).click();
    await expect.poll(() => page.getAttribute('html', 'lang')).toBe('en');
    await expect(valueOf(page, SENSOR_A.id, 'soil_moisture').textContent()).resolves.toBe('18.2 %');
    await page.reload();
    await expect.poll(() => card(page, SENSOR_A.id).locator('[data-field="soil_moisture"] dt').textContent(), { timeout: 5000 }).toBe('Soil moisture');
    await expect(card(page, SENSOR_A.id).locator('.state').textContent()).resolves.toMatch(/^Offline since \d{2}:\d{2}$/);
    await shot(page, '6-english');
    await page.getByRole('button', { name: 'Chuyển sang tiếng Việt' }).click();
    await expect.poll(() => page.getAttribute('html', 'lang')).toBe('vi');

    await page.getByRole('button', { name: 'Đăng xuất' }).click();
    await page.locator('input[name="username"]').waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem('keng.session'))).toBeNull();
    await page.close();
  });

  it('an operator gets the staff menu and the same sensors view', async () => {
    const page = await newPage();
    await logIn(page, OPERATOR);
    await card(page, SENSOR_A.id).waitFor({ timeout: 5000 });
    expect(await page.locator(`[data-device="${SENSOR_B.id}"]`).count()).toBe(0);
    // A staff tab loads its own module (test/component/web-operator.test.ts covers the staff screens).
    await page.getByRole('button', { name: 'Lịch phát' }).click();
    await page.locator('section.week').waitFor({ timeout: 5000 });
    await expect(page.locator('main h1').textContent()).resolves.toBe('Lịch phát');
    await shot(page, '8-operator-schedules');
    await page.getByRole('button', { name: 'Cảm biến' }).click();
    await card(page, SENSOR_A.id).waitFor();
    await page.close();
  });

  it('the farmer\'s whole first visit, login to values shown, transfers under 300 KB', async () => {
    // A fresh browser: nothing cached.
    const fresh = await launchBrowser();
    try {
      const page = await fresh.newPage();
      const sizes: Array<Promise<number>> = [];
      page.on('requestfinished', (r) => sizes.push(r.sizes().then((s) => s.responseBodySize + s.responseHeadersSize)));
      await logIn(page, FARMER);
      await valueOf(page, SENSOR_A.id, 'soil_moisture').waitFor({ timeout: 5000 });
      await page.locator('.live.on').waitFor({ timeout: 5000 });
      const total = (await Promise.all(sizes)).reduce((a, b) => a + b, 0);
      console.log(`web app first visit: ${sizes.length} requests, ${(total / 1024).toFixed(1)} KiB`);
      expect(sizes.length).toBeGreaterThan(5);
      expect(total).toBeLessThan(300 * 1024);
      await page.close();
    } finally {
      browser.consoleErrors.push(...fresh.consoleErrors);
      await fresh.close();
    }
  });

  // Last: its failures make the next logins from this address wait.
  it('login errors are shown in Vietnamese: wrong password, too many tries with the wait, locked', async () => {
    const page = await newPage({ httpErrors: true });
    await logIn(page, { username: FARMER.username, password: 'sai-mat-khau-roi' });
    await expect(page.locator('[role="alert"]').textContent()).resolves.toBe('Sai tên đăng nhập hoặc mật khẩu.');
    // A try inside the growing delay is refused with the wait. The farmer logged in from this address
    // before, so only its own failures count here: the first delay is 1 s, which a slow machine may
    // outlast between two clicks; each further failure doubles it, so keep trying until the wait shows.
    await expect.poll(async () => {
      await page.click('button[type="submit"]');
      return page.locator('[role="alert"]').textContent();
    }, { timeout: 20_000 }).toMatch(/^Bạn đã thử quá nhiều lần\. Vui lòng chờ \d+ giây rồi thử lại\.$/);
    await shot(page, '7-login-wait');
    // Ten failures take minutes of growing delays: the locked reply is the server's, played back.
    await page.route('**/api/v1/auth/login', (route) => route.fulfill({
      status: 423, contentType: 'application/json', headers: { 'retry-after': '900' },
      body: JSON.stringify({ error: { code: 'KENG_ERR_ACCOUNT_LOCKED', message: 'locked' } }),
    }));
    await page.click('button[type="submit"]');
    await expect.poll(() => page.locator('[role="alert"]').textContent())
      .toBe('Tài khoản tạm khoá vì nhập sai quá nhiều lần. Hãy thử lại sau 15 phút, hoặc nhờ cán bộ xã mở khoá.');
    await page.close();
  });

  it('no page logged a console error', () => {
    expect(browser.consoleErrors).toEqual([]);
  });
});
