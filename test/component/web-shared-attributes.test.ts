/**
 * Settings sent to devices (shared attributes) in the web app's admin
 * screens, in a real Chromium: an admin sets a commune's reporting interval
 * and a device's own volume, sees where each value comes from, deletes the
 * device's value; a connected device gets each change over MQTT.
 * Screenshots: test/artifacts/web-shared-*.png.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { PHONE, launchBrowser, logIn, shot, type Browser } from '../helpers/browser.js';
import { connectDevice, end, waitFor } from '../helpers/mqtt.js';
import { COMMUNE_TREE, seedAreas, seedDevices, type DeviceCredentials } from '../helpers/seed.js';

const ADMIN = { username: 'quan-tri', password: 'may-chu-xa-2026-ok' };

describe('web app: settings sent to devices (Chromium)', () => {
  let t: TestApp;
  let browser: Browser;
  let creds: Record<string, DeviceCredentials>;

  beforeAll(async () => {
    t = await startTestApp();
    await seedAreas(t, COMMUNE_TREE);
    creds = await seedDevices(t, [{ id: 'loa-a1', kind: 'speaker', name: 'Loa nhà văn hoá', area: 'va1' }]);
    expect((await t.api('POST', '/api/v1/users', { ...ADMIN, role: 'admin' })).status).toBe(201);
    browser = await launchBrowser(PHONE);
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await t?.stop();
  });

  it('an admin sets an area value and a device value, sees their sources, deletes one; the device gets each change', async () => {
    const dev = await connectDevice(t.mqttUrl, creds['loa-a1']!.accessToken, undefined, { clean: true });
    const got: unknown[] = [];
    dev.on('message', (_t, p) => got.push(JSON.parse(p.toString())));
    await dev.subscribeAsync('v1/devices/me/attributes', { qos: 1 });

    const page = await browser.newPage({ httpErrors: true });
    await logIn(page, t.httpUrl, ADMIN);
    await page.locator('nav.tabs [data-tab="admin"]').click();
    await page.locator('.seg [data-section="areas"]').click();
    const commune = page.locator('.adm-tree li[data-area="ca"]');
    await commune.locator('[data-open="shared"]').click();
    const areaBox = commune.locator('[data-shared="area"]');
    await areaBox.locator('input[name="key"]').fill('reportEverySec');
    await areaBox.locator('input[name="value"]').fill('300');
    await areaBox.getByRole('button', { name: 'Lưu' }).click();
    await expect.poll(() => areaBox.locator('tr[data-key="reportEverySec"] [data-value]').textContent()).toBe('300');
    await expect.poll(() => areaBox.locator('tr[data-key="reportEverySec"] [data-source]').textContent()).toBe('riêng');
    await waitFor(() => got.length >= 1);
    expect(got[0]).toEqual({ reportEverySec: 300 });
    await shot(page, 'shared-area');

    await page.locator('.seg [data-section="devices"]').click();
    const item = page.locator('[data-adm-device="loa-a1"]');
    await item.getByRole('button', { name: 'Thao tác' }).click();
    await item.locator('[data-open="shared"]').click();
    const box = item.locator('[data-shared="device"]');
    await expect.poll(() => box.locator('tr[data-key="reportEverySec"] [data-source]').textContent()).toBe('từ Xã A');
    await box.locator('input[name="key"]').fill('volume');
    await box.locator('input[name="value"]').fill('80');
    await box.getByRole('button', { name: 'Lưu' }).click();
    await expect.poll(() => box.locator('tr[data-key="volume"] [data-source]').textContent()).toBe('riêng');
    await waitFor(() => got.length >= 2);
    expect(got[1]).toEqual({ volume: 80 });
    // The inherited key has no delete button; the device's own has.
    expect(await box.locator('tr[data-key="reportEverySec"] button').count()).toBe(0);
    await shot(page, 'shared-device');
    await box.locator('tr[data-key="volume"]').getByRole('button', { name: 'Xoá' }).click();
    await expect.poll(() => box.locator('tr[data-key="volume"]').count()).toBe(0);
    await waitFor(() => got.length >= 3);
    expect(got[2]).toEqual({ deleted: ['volume'] });

    // Refused in words: a key firmware updates own.
    await box.locator('input[name="key"]').fill('fw_version');
    await box.locator('input[name="value"]').fill('2.0');
    await box.getByRole('button', { name: 'Lưu' }).click();
    await expect.poll(() => box.locator('[role="alert"]').textContent()).toContain('fw_');
    // Chromium logs the refusal's 400 (provoked above); nothing else.
    expect(browser.consoleErrors.filter((e) => !e.includes('status of 400'))).toEqual([]);
    await page.close();
    await end(dev);
  }, 90_000);
});
