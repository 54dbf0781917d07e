/**
 * The web app's provisioning keys (Quản trị → Khoá đăng ký) in a real
 * Chromium: an admin issues a key for a village, sees key and secret once,
 * firmware (the Python SDK 1.7.1's exchange, test/helpers/tb-provision.ts)
 * registers itself with them, the list shows the count, the admin revokes
 * the key and the next device is refused. On a phone (controls a thumb's
 * size, no sideways scrolling) and on a wide screen in English.
 * Screenshots: test/artifacts/web-admin-provisioning-*.png.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { PHONE, WALL, launchBrowser, logIn, shot, type Browser } from '../helpers/browser.js';
import { COMMUNE_TREE, seedAreas } from '../helpers/seed.js';
import { PYTHON, sdkProvision } from '../helpers/tb-provision.js';

const ADMIN = { username: 'quan-tri', password: 'may-chu-xa-2026-ok' };
const havePaho = spawnSync(PYTHON, ['-c', 'import paho.mqtt.client'], { timeout: 10_000 }).status === 0;

describe.skipIf(!havePaho)('web app: provisioning keys (Chromium)', () => {
  let t: TestApp;
  let phone: Browser;
  let wide: Browser;

  beforeAll(async () => {
    t = await startTestApp();
    await seedAreas(t, COMMUNE_TREE);
    expect((await t.api('POST', '/api/v1/users', { ...ADMIN, role: 'admin' })).status).toBe(201);
    phone = await launchBrowser(PHONE);
    wide = await launchBrowser(WALL);
  }, 120_000);
  afterAll(async () => {
    await phone?.close();
    await wide?.close();
    await t?.stop();
  });

  it('an admin issues a key (secret shown once), a device registers with it, the admin revokes it', async () => {
    const page = await phone.newPage({ httpErrors: true });
    await logIn(page, t.httpUrl, ADMIN);
    await page.locator('nav.tabs [data-tab="admin"]').click();
    await page.locator('.seg [data-section="provisioning"]').click();
    await page.locator('[data-open="provisioning"]').click();
    const form = page.locator('form[data-form="provisioning"]');
    await form.locator('input[name="label"]').fill('40 cảm biến đất, lô tháng 3');
    await form.locator('select[name="area"]').selectOption('va1');
    await form.locator('select[name="kind"]').selectOption('sensor');
    await form.locator('input[name="model"]').fill('KS-SOIL-ESP32');
    await form.locator('input[name="maxDevices"]').fill('2');
    await form.locator('input[name="expires"]').fill('2099-12-31');
    await shot(page, 'admin-provisioning-form');
    await form.locator('button[type="submit"]').click();
    const once = page.locator('.adm-once');
    await once.waitFor();
    const key = await once.locator('[data-secret="key"] input').inputValue();
    const secret = await once.locator('[data-secret="secret"] input').inputValue();
    expect(key).toMatch(/^[A-Za-z0-9]{20}$/);
    expect(secret).toMatch(/^[A-Za-z0-9]{32}$/);
    await expect(once.textContent()).resolves.toContain('provision');
    await shot(page, 'admin-provisioning-once');

    const res = await sdkProvision(t.mqttPort, key, secret, 'Cảm biến đất 01');
    expect(res.response.status).toBe('SUCCESS');
    expect((await t.api('GET', '/api/v1/devices/cam-bien-dat-01')).body).toMatchObject({ area: 'va1', model: 'KS-SOIL-ESP32' });

    await once.getByRole('button', { name: 'Tôi đã cất xong' }).click();
    // The list reloads when the section is opened again.
    await page.locator('.seg [data-section="devices"]').click();
    await page.locator('.seg [data-section="provisioning"]').click();
    const item = page.locator('.adm-item', { hasText: '40 cảm biến đất, lô tháng 3' });
    await expect.poll(() => item.textContent()).toContain('Đã đăng ký 1/2 thiết bị');
    await expect(item.textContent()).resolves.toContain('Hết hạn 31/12/2099 23:59');
    await expect(item.textContent()).resolves.not.toContain(secret);
    await shot(page, 'admin-provisioning-list');

    await item.getByRole('button', { name: 'Thu hồi' }).click();
    await expect(item.locator('.adm-confirm p').textContent()).resolves.toContain('«40 cảm biến đất, lô tháng 3»');
    await item.locator('.adm-confirm .danger').click();
    await expect.poll(() => item.locator('.badge.bad').count()).toBe(1);
    expect((await sdkProvision(t.mqttPort, key, secret, 'Cảm biến đất 02')).response.status).toBe('NOT_FOUND');
    await shot(page, 'admin-provisioning-revoked');

    // Every control a thumb's size, and nothing wider than the phone (the section switch included).
    await page.locator('[data-open="provisioning"]').click();
    const small = await page.$$eval('main button, main input, main select', (els) => els
      .map((e) => ({ e, r: e.getBoundingClientRect() }))
      .filter(({ e, r }) => r.width > 0 && (e as HTMLInputElement).type !== 'checkbox' && (r.height < 44 || r.width < 44))
      .map(({ e, r }) => `${e.tagName} "${e.textContent || (e as HTMLInputElement).name}" ${Math.round(r.width)}×${Math.round(r.height)}`));
    expect(small).toEqual([]);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width);
    expect(phone.consoleErrors).toEqual([]);
    await page.close();
  }, 120_000);

  it('in English on a wide screen: the form beside the list', async () => {
    const page = await wide.newPage();
    await logIn(page, t.httpUrl, ADMIN);
    await page.getByRole('button', { name: 'Switch to English' }).click();
    await page.locator('nav.tabs [data-tab="admin"]').click();
    await page.locator('.seg [data-section="provisioning"]').click();
    const form = page.locator('form[data-form="provisioning"]');
    await form.waitFor();
    await expect(page.locator('.adm-main h2').textContent()).resolves.toBe('Provisioning keys issued');
    await form.locator('select[name="area"]').selectOption('cb');
    await form.locator('select[name="kind"]').selectOption('speaker');
    await form.locator('button[type="submit"]').click();
    await page.locator('.adm-once').waitFor();
    await expect(page.locator('.adm-once h3').textContent()).resolves.toMatch(/^Provisioning key “/);
    await shot(page, 'admin-provisioning-wide-en');
    await page.locator('.adm-once button.primary').click();
    await expect.poll(() => page.locator('.adm-item').count()).toBe(2);
    await expect(page.locator('.adm-item').first().textContent()).resolves.toContain('0 devices registered');
    expect(wide.consoleErrors).toEqual([]);
    await page.close();
  }, 120_000);
});
