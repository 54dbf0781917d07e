/**
 * The IOC overview and the admin screens of Keng's web app in a real
 * Chromium, against the whole app in-process, with real MQTT devices:
 *
 *  - the provincial IOC (a service-role user: the web login takes any role
 *    with a password; a service API token has no login form) sees every
 *    commune of the province with devices online, speakers playing and
 *    alerts, changing live without a reload, on a 1920×1080 wall screen
 *    without scrolling, and on a phone;
 *  - an admin creates an area, a user and a device through the forms, sees
 *    the device's secret once, disables it (its MQTT CONNECT is refused with
 *    CONNACK 5), enables it again, rotates its secret (old refused, new
 *    accepted), moves it to another village, creates an API token and
 *    revokes it (401 from then on), deletes the device after a confirmation
 *    that names it;
 *  - a non-admin never gets the admin tab and its forced API calls are refused.
 *
 * Screenshots go to test/artifacts/web-admin-*.png and web-ioc-*.png.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import type { MqttClient } from 'mqtt';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { PHONE, WALL, launchBrowser, logIn as logInAs, shot, type Browser } from '../helpers/browser.js';
import { connectDevice, connectRefused, end, waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices, type AreaBody, type DeviceBody } from '../helpers/seed.js';

const ADMIN = { username: 'quan-tri', password: 'may-chu-xa-2026-ok' };
const IOC = { username: 'ioc-quang-tri', password: 'trung-tam-dieu-hanh' };
const OPERATOR = { username: 'can-bo-hai-lang', password: 'loa-thon-dong-2026' };

/** A province of ten communes (two-tier government: no districts), a few villages. */
const COMMUNES: Array<[string, string]> = [
  ['c01', 'Xã Hải Lăng'], ['c02', 'Xã Triệu Phong'], ['c03', 'Xã Cam Lộ'], ['c04', 'Xã Gio Linh'], ['c05', 'Xã Vĩnh Linh'],
  ['c06', 'Xã Hướng Hoá'], ['c07', 'Xã Đakrông'], ['c08', 'Xã Cồn Tiên'], ['c09', 'Xã Ái Tử'], ['c10', 'Xã Bến Quan'],
];
const AREAS: AreaBody[] = [
  { code: 'p-qt', name: 'Tỉnh Quảng Trị', level: 'province' },
  ...COMMUNES.map(([code, name]) => ({ code, name, level: 'commune', parent: 'p-qt' })),
  { code: 'c01-dong', name: 'Thôn Đông', level: 'village', parent: 'c01' },
  { code: 'c01-tay', name: 'Thôn Tây', level: 'village', parent: 'c01' },
  { code: 'c02-bac', name: 'Thôn Bắc', level: 'village', parent: 'c02' },
];
const DEVICES: DeviceBody[] = [
  { id: 'dat-c01-1', kind: 'sensor', name: 'Ruộng ông Ba', area: 'c01-dong' },
  { id: 'dat-c01-2', kind: 'sensor', name: 'Ruộng bà Tư', area: 'c01-tay' },
  { id: 'loa-c01-1', kind: 'speaker', name: 'Loa nhà văn hoá', area: 'c01' },
  { id: 'dat-c02-1', kind: 'sensor', name: 'Ao cá thôn Bắc', area: 'c02-bac' },
  { id: 'loa-c02-1', kind: 'speaker', name: 'Loa chợ Triệu Phong', area: 'c02' },
  { id: 'dat-c03-1', kind: 'sensor', name: 'Vườn tiêu Cam Lộ', area: 'c03' },
  { id: 'loa-c05-1', kind: 'speaker', name: 'Loa bến đò', area: 'c05' },
  { id: 'dat-c07-1', kind: 'sensor', name: 'Nương sắn Đakrông', area: 'c07' },
];
/** Connected for the whole file: the overview's "online" figures. */
const ONLINE = ['dat-c01-1', 'loa-c01-1', 'loa-c02-1', 'dat-c03-1'];

describe('web app: IOC overview and admin screens (Chromium)', () => {
  let t: TestApp;
  let browser: Browser;
  let wall: Browser;
  const creds: Record<string, string> = {};
  const clients: MqttClient[] = [];
  /** Per page: how many 404s the alerts API gave (its console line is expected until that API exists). */
  const alerts404 = new Map<Page, number>();

  const logIn = (page: Page, who: { username: string; password: string }): Promise<void> => logInAs(page, t.httpUrl, who);
  const tile = (page: Page, area: string) => page.locator(`.ioc-tile[data-area="${area}"]`);
  const figure = (page: Page, area: string, stat: string) => tile(page, area).locator(`[data-stat="${stat}"] .n`);
  const watchAlerts404 = (page: Page): Page => {
    page.on('response', (r) => {
      if (r.status() === 404 && new URL(r.url()).pathname === '/api/v1/alerts') alerts404.set(page, (alerts404.get(page) ?? 0) + 1);
    });
    return page;
  };
  const sessionToken = (page: Page): Promise<string> => page.evaluate(() => JSON.parse(sessionStorage.getItem('keng.session')!).token as string);

  beforeAll(async () => {
    t = await startTestApp();
    await seedAreas(t, AREAS);
    const c = await seedDevices(t, DEVICES);
    for (const [id, v] of Object.entries(c)) creds[id] = v.secret;
    for (const [who, role, areas] of [[ADMIN, 'admin', undefined], [IOC, 'service', ['p-qt']], [OPERATOR, 'operator', ['c01']]] as const) {
      expect((await t.api('POST', '/api/v1/users', { ...who, role, ...(areas ? { areas } : {}) })).status).toBe(201);
    }
    for (const id of ONLINE) clients.push(await connectDevice(t.mqttUrl, id, creds[id]));
    await waitFor(async () => (await t.api('GET', '/api/v1/devices?online=true')).body.length === ONLINE.length);
    browser = await launchBrowser(PHONE);
    wall = await launchBrowser(WALL);
  });

  afterAll(async () => {
    await browser?.close();
    await wall?.close();
    for (const c of clients) if (c.connected) await end(c);
    await t?.stop();
  });

  it('the IOC sees every commune on a wall screen, live: a device connects and goes away, a speaker plays, without a reload', async () => {
    const page = watchAlerts404(await wall.newPage());
    await logIn(page, IOC);
    // The service role's first tab is the overview, and there is no admin tab.
    await page.locator('nav.tabs').waitFor();
    await expect(page.locator('nav.tabs .tab').evaluateAll((els) => els.map((e) => e.getAttribute('data-tab')))).resolves.toEqual(['overview', 'sensors', 'alerts']);
    await expect.poll(() => figure(page, 'c01', 'sensors').textContent(), { timeout: 5000 }).toBe('1/2');
    await expect.poll(() => page.locator('.ioc-tile').count()).toBe(10);
    await expect(figure(page, 'c01', 'speakers').textContent()).resolves.toBe('1/1');
    await expect(figure(page, 'c02', 'sensors').textContent()).resolves.toBe('0/1');
    await expect(figure(page, 'c02', 'speakers').textContent()).resolves.toBe('1/1');
    await expect(figure(page, 'c04', 'sensors').textContent()).resolves.toBe('0/0');
    await expect(page.locator('[data-totals] [data-stat="sensors"] .n').textContent()).resolves.toBe('2/5');
    await expect(page.locator('[data-totals] [data-stat="speakers"] .n').textContent()).resolves.toBe('2/3');
    await expect(tile(page, 'c01').locator('.ioc-note').textContent()).resolves.toContain('Ruộng bà Tư');
    await expect(tile(page, 'c01').locator('h2').textContent()).resolves.toBe('Xã Hải Lăng');
    await expect(page.locator('.ioc h1').textContent()).resolves.toBe('Toàn cảnh · Tỉnh Quảng Trị');
    // The alerts API answers (no alert yet): every commune shows its alert figure, at zero.
    await expect.poll(() => figure(page, 'c01', 'alerts').textContent()).toBe('0');
    await expect(page.locator('[data-totals] [data-stat="alerts"] .n').textContent()).resolves.toBe('0');
    await expect.poll(() => page.locator('.ioc .error').count()).toBe(0);
    await page.locator('.live.on').waitFor({ timeout: 5000 });
    const updated = () => page.locator('[data-updated]').textContent();
    await expect(updated()).resolves.toMatch(/^Số liệu lúc \d{2}:\d{2}:\d{2}$/);

    // Live, without a reload: the page keeps its marker throughout.
    await page.evaluate(() => { (window as unknown as { kengMarker: number }).kengMarker = 7; });
    const t0 = Date.now();
    const late = await connectDevice(t.mqttUrl, 'dat-c01-2', creds['dat-c01-2']);
    await expect.poll(() => figure(page, 'c01', 'sensors').textContent(), { timeout: 3000, interval: 50 }).toBe('2/2');
    console.log(`overview: device connect shown after ${Date.now() - t0} ms`);
    await expect(tile(page, 'c01').locator('.ioc-note').textContent()).resolves.toBe('Tất cả trực tuyến');
    await expect(page.locator('[data-totals] [data-stat="sensors"] .n').textContent()).resolves.toBe('3/5');
    // A speaker starts playing (the broadcast module's event, as the executor emits it).
    t.app.bus.emit('broadcast.state', { broadcastId: 'bc-test-1', deviceId: 'loa-c02-1', area: 'c02', state: 'playing', at: Date.now() });
    await expect.poll(() => figure(page, 'c02', 'playing').textContent(), { timeout: 3000 }).toBe('1');
    await expect(page.locator('[data-totals] [data-stat="playing"] .n').textContent()).resolves.toBe('1');
    await page.waitForTimeout(300);
    await shot(page, 'ioc-wall');
    // A wall screen shows the whole province without scrolling.
    const size = await page.evaluate(() => ({ h: document.documentElement.scrollHeight, w: document.documentElement.scrollWidth }));
    expect(size.h).toBeLessThanOrEqual(WALL.height);
    expect(size.w).toBeLessThanOrEqual(WALL.width);

    await end(late);
    await expect.poll(() => figure(page, 'c01', 'sensors').textContent(), { timeout: 3000, interval: 50 }).toBe('1/2');
    await expect(tile(page, 'c01').getAttribute('class')).resolves.toContain('has-offline');
    t.app.bus.emit('broadcast.state', { broadcastId: 'bc-test-1', deviceId: 'loa-c02-1', area: 'c02', state: 'completed', at: Date.now() });
    await expect.poll(() => figure(page, 'c02', 'playing').textContent(), { timeout: 3000 }).toBe('0');
    expect(await page.evaluate(() => (window as unknown as { kengMarker?: number }).kengMarker)).toBe(7);

    // A device registered meanwhile appears when it first connects (the overview fetches the picture again).
    const extra = await seedDevices(t, [{ id: 'dat-c04-1', kind: 'sensor', name: 'Ruộng Gio Linh', area: 'c04' }]);
    const c04 = await connectDevice(t.mqttUrl, 'dat-c04-1', extra['dat-c04-1']!.secret);
    await expect.poll(() => figure(page, 'c04', 'sensors').textContent(), { timeout: 3000 }).toBe('1/1');
    await end(c04);
    await expect.poll(() => figure(page, 'c04', 'sensors').textContent(), { timeout: 3000 }).toBe('0/1');
    await page.close();
  });

  it('the overview shows alerts when the alerts API answers, and fits a phone', async () => {
    const page = await browser.newPage();
    // The alerts API is being built elsewhere: its reply is played back here in the shape it will have.
    await page.route('**/api/v1/alerts', (route) => route.fulfill({
      status: 200, contentType: 'application/json',
      body: JSON.stringify([
        { id: 'a1', state: 'active', areas: ['c02-bac'], headline: 'Lũ quét' },
        { id: 'a2', state: 'active', areas: ['p-qt'], headline: 'Bão số 5' },
        { id: 'a3', state: 'pending_approval', areas: ['c05'], headline: 'Rét đậm' },
        { id: 'a4', state: 'expired', areas: ['c01'], headline: 'Nắng nóng' },
      ]),
    }));
    await logIn(page, IOC);
    await expect.poll(() => figure(page, 'c02', 'alerts').textContent(), { timeout: 5000 }).toBe('2');
    await expect(figure(page, 'c01', 'alerts').textContent()).resolves.toBe('1');
    await expect(tile(page, 'c05').locator('[data-stat="alerts"] .sub').textContent()).resolves.toBe('1 chờ duyệt');
    await expect(page.locator('[data-totals] [data-stat="alerts"] .n').textContent()).resolves.toBe('2');
    await expect(tile(page, 'c02').getAttribute('class')).resolves.toContain('has-alert');
    await page.locator('.live.on').waitFor({ timeout: 5000 });
    await shot(page, 'ioc-phone');
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width);
    // In English on the switch (and back: the choice is remembered for the next tests' pages).
    await page.getByRole('button', { name: 'Switch to English' }).click();
    await expect.poll(() => tile(page, 'c01').locator('[data-stat="sensors"] .lbl').textContent()).toBe('Sensors');
    await expect(page.locator('[data-updated]').textContent()).resolves.toMatch(/^Data as of \d{2}:\d{2}:\d{2}$/);
    await expect(tile(page, 'c05').locator('[data-stat="alerts"] .sub').textContent()).resolves.toBe('1 awaiting approval');
    await shot(page, 'ioc-phone-en');
    await page.getByRole('button', { name: 'Chuyển sang tiếng Việt' }).click();
    await expect.poll(() => page.getAttribute('html', 'lang')).toBe('vi');
    await page.close();
  });

  it('an admin creates an area, a user and a device through the forms; disables, re-enables, rotates, moves and deletes the device; makes and revokes an API token', async () => {
    const page = watchAlerts404(await browser.newPage({ httpErrors: true }));
    await logIn(page, ADMIN);
    await page.locator('nav.tabs [data-tab="admin"]').click();
    await page.locator('.seg [data-section="users"]').waitFor();
    const adminToken = await sessionToken(page);

    // ---- Areas: a new village under Xã Hải Lăng; then the same code again is refused in words.
    await page.locator('.seg [data-section="areas"]').click();
    // On a phone each section's form opens on demand, above its list.
    await page.locator('[data-open="area"]').click();
    const areaForm = page.locator('form[data-form="area"]');
    await areaForm.locator('select[name="level"]').selectOption('village');
    await areaForm.locator('select[name="parent"]').selectOption('c01');
    await areaForm.locator('input[name="code"]').fill('c01-moi');
    await areaForm.locator('input[name="name"]').fill('Thôn Mới Đồng Ruộng');
    await areaForm.locator('button[type="submit"]').click();
    await expect(areaForm.locator('[role="status"]').textContent()).resolves.toBe('Đã tạo Thôn Mới Đồng Ruộng.');
    await page.locator('.adm-tree [data-area="c01-moi"]').waitFor();
    expect((await t.api('GET', '/api/v1/areas?parent=c01')).body.map((a: any) => a.code)).toContain('c01-moi');
    await areaForm.locator('select[name="level"]').selectOption('village');
    await areaForm.locator('select[name="parent"]').selectOption('c01');
    await areaForm.locator('input[name="code"]').fill('c01-moi');
    await areaForm.locator('input[name="name"]').fill('Trùng mã');
    await areaForm.locator('button[type="submit"]').click();
    await expect(areaForm.locator('[role="alert"]').textContent()).resolves.toBe('Mã khu vực này đã có. Hãy chọn mã khác.');
    await shot(page, 'admin-areas');

    // ---- Users: an operator for Xã Hải Lăng, areas picked from the tree.
    await page.locator('.seg [data-section="users"]').click();
    await page.locator('[data-open="user"]').click();
    const userForm = page.locator('form[data-form="user"]');
    await userForm.locator('input[name="username"]').fill('can-bo-moi');
    await userForm.getByRole('button', { name: 'Tạo mật khẩu' }).click();
    const firstPassword = await userForm.locator('input[name="password"]').inputValue();
    expect(firstPassword).toMatch(/^[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{5}$/);
    await userForm.locator('select[name="role"]').selectOption('operator');
    await userForm.locator('[data-picker="areas"] input[value="c01"]').check();
    // Ticking the commune covers its villages: they show ticked and cannot be unticked alone.
    await expect(userForm.locator('[data-picker="areas"] input[value="c01-dong"]').isChecked()).resolves.toBe(true);
    await expect(userForm.locator('[data-picker="areas"] input[value="c01-dong"]').isDisabled()).resolves.toBe(true);
    await shot(page, 'admin-user-form');
    await userForm.locator('button[type="submit"]').click();
    await expect(userForm.locator('[role="status"]').textContent()).resolves.toBe('Đã tạo tài khoản can-bo-moi.');
    const item = page.locator('[data-user="can-bo-moi"]');
    await expect(item.textContent()).resolves.toContain('Xã Hải Lăng');
    expect((await t.api('GET', '/api/v1/users')).body.find((u: any) => u.username === 'can-bo-moi')).toMatchObject({ role: 'operator', areas: ['c01'] });
    // Edit: a viewer of two villages.
    await item.getByRole('button', { name: 'Sửa' }).click();
    await item.locator('select[name="role"]').selectOption('viewer');
    await item.locator('input[value="c01"]').uncheck();
    await item.locator('input[value="c01-dong"]').check();
    await item.locator('input[value="c02-bac"]').check();
    await item.getByRole('button', { name: 'Lưu' }).click();
    await expect.poll(async () => (await t.api('GET', '/api/v1/users')).body.find((u: any) => u.username === 'can-bo-moi'))
      .toMatchObject({ role: 'viewer', areas: ['c01-dong', 'c02-bac'] });
    await expect.poll(() => item.textContent()).toContain('Thôn Đông, Xã Hải Lăng; Thôn Bắc, Xã Triệu Phong');
    // A new password to hand over: the old one stops working, the new one logs in.
    await item.getByRole('button', { name: 'Đặt lại mật khẩu' }).click();
    const newPw = await item.locator('input[name="new-password"]').inputValue();
    await item.getByRole('button', { name: 'Đặt mật khẩu này' }).click();
    await item.locator('[role="status"]').waitFor();
    const login = (password: string) => fetch(`${t.httpUrl}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'can-bo-moi', password }),
    }).then((r) => r.status);
    expect(await login(newPw)).toBe(200);
    await shot(page, 'admin-users');

    // ---- Devices: register a speaker in the new village; its credentials are shown once.
    await page.locator('.seg [data-section="devices"]').click();
    await page.locator('[data-open="device"]').click();
    const devForm = page.locator('form[data-form="device"]');
    await devForm.locator('input[name="id"]').fill('loa-c01-moi');
    await devForm.locator('select[name="kind"]').selectOption('speaker');
    await devForm.locator('input[name="name"]').fill('Loa đầu làng Mới');
    await devForm.locator('select[name="area"]').selectOption('c01-moi');
    await devForm.locator('input[name="lat"]').fill('16,7512');
    await devForm.locator('input[name="lon"]').fill('107,1893');
    await devForm.locator('input[name="model"]').fill('KL-200');
    await devForm.locator('button[type="submit"]').click();
    const once = page.locator('.adm-once');
    await once.waitFor();
    await expect(once.locator('.warn').textContent()).resolves.toMatch(/^Chỉ hiện MỘT LẦN/);
    let secret = await once.locator('[data-secret="secret"] input').inputValue();
    const accessToken = await once.locator('[data-secret="accessToken"] input').inputValue();
    expect(secret.length).toBeGreaterThan(16);
    expect(accessToken.length).toBeGreaterThan(10);
    await once.locator('[data-secret="secret"] button').click();
    await expect(once.locator('[data-secret="secret"] button').textContent()).resolves.toMatch(/^(Đã chép|Chép)$/);
    await shot(page, 'admin-device-secret');
    expect((await t.api('GET', '/api/v1/devices/loa-c01-moi')).body).toMatchObject({ kind: 'speaker', area: 'c01-moi', location: { lat: 16.7512, lon: 107.1893 }, model: 'KL-200' });
    await once.getByRole('button', { name: 'Tôi đã cất xong' }).click();
    await expect.poll(() => page.locator('.adm-once').count()).toBe(0);
    expect(await page.content()).not.toContain(secret);
    await page.locator('[data-open="device"]').click();
    // The same id again: refused in words (409).
    await devForm.locator('input[name="id"]').fill('loa-c01-moi');
    await devForm.locator('input[name="name"]').fill('Trùng');
    await devForm.locator('select[name="area"]').selectOption('c01');
    await devForm.locator('button[type="submit"]').click();
    await expect(devForm.locator('[role="alert"]').textContent()).resolves.toBe('Mã thiết bị này đã có. Hãy chọn mã khác.');

    const dev = page.locator('[data-adm-device="loa-c01-moi"]');
    await expect(dev.locator('[data-area-name]').textContent()).resolves.toBe('Thôn Mới Đồng Ruộng, Xã Hải Lăng');
    await expect(dev.locator('[data-location]').textContent()).resolves.toBe('16,7512; 107,1893');
    const c1 = await connectDevice(t.mqttUrl, 'loa-c01-moi', secret);
    await end(c1);

    // Disable: the confirmation names the device; then CONNECT is refused with CONNACK 5.
    await dev.getByRole('button', { name: 'Thao tác' }).click();
    await dev.getByRole('button', { name: 'Tắt', exact: true }).click();
    await expect(dev.locator('.adm-confirm p').textContent()).resolves.toContain('«Loa đầu làng Mới» (loa-c01-moi)');
    await dev.locator('.adm-confirm .danger').click();
    await expect.poll(() => dev.locator('[data-state]').getAttribute('data-state')).toBe('disabled');
    expect(await connectRefused(t.mqttUrl, 'loa-c01-moi', secret)).toBe(5);
    await shot(page, 'admin-device-disabled');
    // Enable again: it connects.
    await dev.getByRole('button', { name: 'Bật lại' }).click();
    await expect.poll(() => dev.locator('[data-state]').getAttribute('data-state')).not.toBe('disabled');
    await end(await connectDevice(t.mqttUrl, 'loa-c01-moi', secret));

    // Rotate the secret: shown once; the old one is refused, the new one connects.
    await dev.getByRole('button', { name: 'Đổi mật khẩu MQTT' }).click();
    await dev.locator('.adm-confirm .danger').click();
    await dev.locator('.adm-once [data-secret="secret"] input').waitFor();
    const rotated = await dev.locator('.adm-once [data-secret="secret"] input').inputValue();
    expect(rotated).not.toBe(secret);
    expect(await connectRefused(t.mqttUrl, 'loa-c01-moi', secret)).not.toBe(0);
    await end(await connectDevice(t.mqttUrl, 'loa-c01-moi', rotated));
    await dev.getByRole('button', { name: 'Tôi đã cất xong' }).click();
    secret = rotated;

    // Move it to another village (Thôn Bắc of Xã Triệu Phong) and rename it; the name typed survives picking the area.
    await dev.getByRole('button', { name: 'Sửa' }).click();
    await dev.locator('form input[name="name"]').fill('Loa chợ Thôn Bắc');
    await dev.locator('select[name="area"]').selectOption('c02-bac');
    await expect(dev.locator('form input[name="name"]').inputValue()).resolves.toBe('Loa chợ Thôn Bắc');
    await dev.getByRole('button', { name: 'Lưu' }).click();
    await expect.poll(() => dev.locator('[data-area-name]').textContent()).toBe('Thôn Bắc, Xã Triệu Phong');
    expect((await t.api('GET', '/api/v1/devices/loa-c01-moi')).body).toMatchObject({ area: 'c02-bac', name: 'Loa chợ Thôn Bắc', location: { lat: 16.7512, lon: 107.1893 } });

    // Filters: by area (a commune covers its villages) and by kind.
    await page.locator('select[name="filter-area"]').selectOption('c02');
    await expect(page.locator('[data-adm-device]').evaluateAll((els) => els.map((e) => e.getAttribute('data-adm-device')).sort()))
      .resolves.toEqual(['dat-c02-1', 'loa-c01-moi', 'loa-c02-1']);
    await page.locator('select[name="filter-kind"]').selectOption('speaker');
    await expect.poll(() => page.locator('[data-adm-device]').count()).toBe(2);
    await shot(page, 'admin-devices');
    await page.setViewportSize({ width: 1366, height: 900 });
    await page.waitForTimeout(200);
    await shot(page, 'admin-devices-desktop');
    await page.setViewportSize(PHONE);
    await page.locator('select[name="filter-area"]').selectOption('');
    await page.locator('select[name="filter-kind"]').selectOption('');

    // Delete, after a confirmation that names it.
    await dev.getByRole('button', { name: 'Xoá' }).click();
    await expect(dev.locator('.adm-confirm p').textContent()).resolves.toMatch(/^Xoá hẳn thiết bị «Loa chợ Thôn Bắc» \(loa-c01-moi\)\?/);
    await dev.locator('.adm-confirm .danger').click();
    await expect.poll(() => page.locator('[data-adm-device="loa-c01-moi"]').count()).toBe(0);
    expect((await t.api('GET', '/api/v1/devices/loa-c01-moi')).status).toBe(404);
    expect(await connectRefused(t.mqttUrl, 'loa-c01-moi', secret)).not.toBe(0);

    // ---- API tokens: a service token for the whole installation, shown once, then revoked.
    await page.locator('.seg [data-section="tokens"]').click();
    await page.locator('[data-open="token"]').click();
    const tokForm = page.locator('form[data-form="token"]');
    await tokForm.locator('input[name="name"]').fill('IOC tỉnh Quảng Trị');
    await tokForm.locator('select[name="role"]').selectOption('service');
    await tokForm.locator('[data-picker="token-areas"] input[value="p-qt"]').check();
    await tokForm.locator('input[name="expires"]').fill('2099-12-31');
    await tokForm.locator('button[type="submit"]').click();
    const tokOnce = page.locator('.adm-once');
    await tokOnce.waitFor();
    const apiToken = await tokOnce.locator('[data-secret="token"] input').inputValue();
    expect(apiToken).toMatch(/^kengt_/);
    await shot(page, 'admin-token-once');
    const me = await t.api('GET', '/api/v1/auth/me', undefined, apiToken);
    expect(me.body).toMatchObject({ kind: 'token', role: 'service', areas: ['p-qt'] });
    await tokOnce.getByRole('button', { name: 'Tôi đã cất xong' }).click();
    const tok = page.locator('[data-token-name="IOC tỉnh Quảng Trị"]');
    await expect(tok.textContent()).resolves.toContain('Hết hạn 31/12/2099 23:59');
    await tok.getByRole('button', { name: 'Thu hồi' }).click();
    await expect(tok.locator('.adm-confirm p').textContent()).resolves.toContain('«IOC tỉnh Quảng Trị»');
    await tok.locator('.adm-confirm .danger').click();
    await expect.poll(() => tok.locator('.badge.bad').count()).toBe(1);
    expect((await t.api('GET', '/api/v1/auth/me', undefined, apiToken)).status).toBe(401);
    await shot(page, 'admin-tokens');

    // Every control on these screens is a thumb's size.
    for (const s of ['users', 'tokens', 'areas', 'devices']) {
      await page.locator(`.seg [data-section="${s}"]`).click();
      await page.waitForTimeout(100);
      const small = await page.$$eval('main button, main input, main select', (els) => els
        .map((e) => ({ e, r: e.getBoundingClientRect() }))
        .filter(({ e, r }) => r.width > 0 && (e as HTMLInputElement).type !== 'checkbox' && (r.height < 44 || r.width < 44))
        .map(({ e, r }) => `${e.tagName} "${e.textContent || (e as HTMLInputElement).name}" ${Math.round(r.width)}×${Math.round(r.height)}`));
      expect(small, s).toEqual([]);
      expect(await page.evaluate(() => document.documentElement.scrollWidth), s).toBeLessThanOrEqual(PHONE.width);
    }
    // The admin's own session still works (nothing above logged it out).
    expect((await t.api('GET', '/api/v1/auth/me', undefined, adminToken)).status).toBe(200);
    // And the overview, for an admin too.
    await page.locator('nav.tabs [data-tab="overview"]').click();
    await expect.poll(() => figure(page, 'c01', 'sensors').textContent(), { timeout: 5000 }).toBe('1/2');
    await shot(page, 'admin-overview-phone');
    await page.close();
  });

  it('a non-admin never gets the admin tab, and forced API calls are refused', async () => {
    for (const who of [OPERATOR, IOC]) {
      const page = watchAlerts404(await browser.newPage({ httpErrors: true }));
      await logIn(page, who);
      await page.locator('nav.tabs').waitFor();
      await expect.poll(() => page.locator('nav.tabs [data-tab="admin"]').count()).toBe(0);
      // A tab remembered from an admin's session in this tab is not honoured.
      await page.evaluate(() => sessionStorage.setItem('keng.tab', 'admin'));
      await page.reload();
      await page.locator('nav.tabs').waitFor();
      await expect.poll(() => page.locator('nav.tabs [data-tab="admin"]').count()).toBe(0);
      await expect.poll(() => page.locator('.seg').count()).toBe(0);
      const token = await sessionToken(page);
      for (const [method, route, body] of [
        ['GET', '/api/v1/tokens', undefined], ['POST', '/api/v1/tokens', { name: 'x', role: 'admin' }],
        ['POST', '/api/v1/areas', { code: 'zz', name: 'Z', level: 'province' }], ['GET', '/api/v1/audit', undefined],
      ] as const) {
        const r = await t.api(method, route, body, token);
        expect(r.status, `${who.username} ${method} ${route}`).toBe(403);
      }
      await page.close();
    }
  });

  it('a province of sixteen communes still fits the wall screen without scrolling', async () => {
    const more = ['Xã Cửa Tùng', 'Xã Cửa Việt', 'Xã Lao Bảo', 'Xã Khe Sanh', 'Xã Tà Rụt', 'Xã La Lay'];
    await seedAreas(t, more.map((name, i) => ({ code: `c${11 + i}`, name, level: 'commune', parent: 'p-qt' })));
    const page = watchAlerts404(await wall.newPage());
    await logIn(page, IOC);
    await expect.poll(() => page.locator('.ioc-tile').count(), { timeout: 5000 }).toBe(16);
    await page.locator('.live.on').waitFor({ timeout: 5000 });
    await shot(page, 'ioc-wall-16');
    expect(await page.evaluate(() => document.documentElement.scrollHeight)).toBeLessThanOrEqual(WALL.height);
    await page.close();
  });

  it('no page logged a console error (but the alerts API\'s 404 until that API exists)', () => {
    const expected404 = [...alerts404.values()].reduce((a, b) => a + b, 0);
    const errors = [...browser.consoleErrors, ...wall.consoleErrors];
    const others = errors.filter((e) => !/the server responded with a status of 404/.test(e));
    expect(others).toEqual([]);
    expect(errors.length - others.length).toBeLessThanOrEqual(expected404);
  });
});
