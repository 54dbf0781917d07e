/**
 * The commune staff's screens of the web app (loudspeakers, schedules,
 * broadcast log) in a real Chromium at phone size, against the whole app
 * in-process with simulated loudspeakers over real MQTT (the reference
 * simulator, src/sim/speaker): an operator of commune A sees A's speakers on
 * the list and the map, sets a volume the speaker confirms, schedules a TTS
 * bulletin after listening to it, sees it and a clash in the week, plays a
 * bulletin now and follows each speaker's state in the log, exports the CSV,
 * and can neither see nor act on commune B (forced calls are refused and the
 * refusal is shown). A second app with map tiles configured checks the CSP
 * and the tiles. Screenshots: test/artifacts/web-op-*.png.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Locator, Page } from 'playwright-core';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { PHONE, WALL, launchBrowser, logIn as logInAs, shot, type Browser } from '../helpers/browser.js';
import { connectDevice, end, publish, waitFor } from '../helpers/mqtt.js';
import { seedAreas, seedDevices, type DeviceBody } from '../helpers/seed.js';
import { runSpeakers, type SpeakerSim } from '../../src/sim/speaker/index.js';

const AREAS = [
  { code: 'p1', name: 'Tỉnh Bến Tre', level: 'province' },
  { code: 'ca', name: 'Xã Tân Phú', level: 'commune', parent: 'p1' },
  { code: 'va1', name: 'Thôn Đông', level: 'village', parent: 'ca' },
  { code: 'va2', name: 'Thôn Tây', level: 'village', parent: 'ca' },
  { code: 'cb', name: 'Xã Bình Minh', level: 'commune', parent: 'p1' },
];
const SPEAKERS: DeviceBody[] = [
  { id: 'loa-a1', kind: 'speaker', name: 'Loa đầu thôn Đông', area: 'va1', location: { lat: 10.2412, lon: 106.3751 } },
  { id: 'loa-a2', kind: 'speaker', name: 'Loa nhà văn hoá', area: 'va1', location: { lat: 10.2448, lon: 106.3803 } },
  { id: 'loa-a3', kind: 'speaker', name: 'Loa chợ Tây', area: 'va2', location: { lat: 10.2339, lon: 106.3602 } },
  { id: 'loa-a4', kind: 'speaker', name: 'Loa bến đò', area: 'va2', location: { lat: 10.2295, lon: 106.3566 } },
  { id: 'loa-b1', kind: 'speaker', name: 'Loa xã Bình Minh', area: 'cb', location: { lat: 10.3021, lon: 106.4410 } },
];
/** Run by the simulator; loa-a4 was online once and went away. */
const SIMULATED = ['loa-a1', 'loa-a2', 'loa-a3', 'loa-b1'];
const OPERATOR = { username: 'can-bo-tan-phu', password: 'loa-thon-dong-2026' };
const BULLETIN = 'Xin chào bà con thôn Đông. Sáng mai có lịch tiêm phòng cho trâu bò tại nhà văn hoá.';
const TZ_OFFSET_MS = 7 * 3600_000;

/** 'YYYY-MM-DD' of the commune day (UTC+7) of `ms`. */
const communeDate = (ms: number): string => new Date(ms + TZ_OFFSET_MS).toISOString().slice(0, 10);

/** The next 06:30 in commune time at least two minutes ahead. */
function next0630(now = Date.now()): number {
  const day = communeDate(now);
  const today = Date.parse(`${day}T06:30:00+07:00`);
  return today > now + 120_000 ? today : today + 86_400_000;
}

async function setup(overrides = {}): Promise<{ t: TestApp; creds: Record<string, { secret: string }> }> {
  const t = await startTestApp(overrides);
  await seedAreas(t, AREAS);
  const creds = await seedDevices(t, SPEAKERS);
  expect((await t.api('POST', '/api/v1/users', { ...OPERATOR, role: 'operator', areas: ['ca'] })).status).toBe(201);
  return { t, creds };
}

/** RFC 4180 records (quoted fields may hold commas, quotes and line breaks). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; } else if (c === '\r' && text[i + 1] === '\n') { row.push(field); rows.push(row); row = []; field = ''; i++; } else field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  return rows;
}

/** Touch targets a thumb can hit: every visible control at least 44 × 44 px. */
async function smallTargets(page: Page): Promise<string[]> {
  return page.$$eval('button, input:not([type="checkbox"]):not([type="radio"]), select, a[href], summary, label.choice > span', (els) => els
    .map((e) => ({ e, r: e.getBoundingClientRect() }))
    .filter(({ r }) => r.width > 0 && (r.height < 44 || r.width < 44))
    .map(({ e, r }) => `${e.tagName} "${(e.textContent ?? '').trim()}" ${Math.round(r.width)}×${Math.round(r.height)}`));
}

/** A choice chip by its exact words ("Thôn Đông", not "Loa đầu thôn Đông"). */
const choice = (form: Locator, words: string): Locator => form.locator('label.choice > span').getByText(words, { exact: true });

const openTab = async (page: Page, tab: string): Promise<void> => { await page.locator(`nav.tabs button[data-tab="${tab}"]`).click(); };

describe('operator screens (Chromium, 412×915, simulated speakers)', () => {
  let t: TestApp;
  let sim: SpeakerSim;
  let browser: Browser;
  let dir: string;
  const logIn = (page: Page): Promise<void> => logInAs(page, t.httpUrl, OPERATOR);
  const card = (page: Page, id: string) => page.locator(`article[data-device="${id}"]`);

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keng-web-op-'));
    const s = await setup();
    t = s.t;
    // loa-a4 connects once and goes away: its card says since when.
    const gone = await connectDevice(t.mqttUrl, 'loa-a4', s.creds['loa-a4']!.secret);
    await publish(gone, 'v1/devices/loa-a4/telemetry', JSON.stringify({ volume: 60, playing: false, power_source: 'solar', battery_v: 11.9, rssi: -91 }));
    await end(gone);
    sim = await runSpeakers({ url: t.mqttUrl, credentials: SIMULATED.map((id) => ({ id, secret: s.creds[id]!.secret })), speed: 1, telemetryIntervalMs: 1500 });
    await waitFor(() => SIMULATED.every((id) => t.app.registry.isOnline(id)) && !t.app.registry.isOnline('loa-a4'), 20_000, 50);
    await waitFor(() => SIMULATED.every((id) => t.app.registry.latest(id).volume !== undefined), 10_000, 50);
    browser = await launchBrowser();
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await sim?.stop();
    await t?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('Loa phát thanh: the speakers of commune A on the list and the map, live, and a volume the speaker confirms', async () => {
    const page = await browser.newPage();
    await logIn(page);
    await openTab(page, 'speakers');
    await card(page, 'loa-a1').waitFor({ timeout: 5000 });
    expect(await page.locator('article[data-device]').evaluateAll((els) => els.map((e) => e.getAttribute('data-device')))).toEqual(['loa-a1', 'loa-a2', 'loa-a4', 'loa-a3']);
    // Commune B's speaker is nowhere: not in the list, not on the map, not named.
    expect(await page.locator('[data-device="loa-b1"]').count()).toBe(0);
    expect(await page.content()).not.toContain('Bình Minh');
    await expect(card(page, 'loa-a1').locator('h2').textContent()).resolves.toBe('Loa đầu thôn Đông');
    await expect(card(page, 'loa-a1').textContent()).resolves.toContain('Thôn Đông');
    await page.locator('.live.on').waitFor({ timeout: 5000 });

    // The map without tiles: an SVG of the four speakers with the village names.
    const map = page.locator('.op-map');
    expect(await map.getAttribute('data-mode')).toBe('svg');
    expect(await map.locator('img.tile').count()).toBe(0);
    expect(await map.locator('g.spk').evaluateAll((els) => els.map((e) => e.getAttribute('data-device')).sort())).toEqual(['loa-a1', 'loa-a2', 'loa-a3', 'loa-a4']);
    expect(await map.locator('text.village-name').allTextContents()).toEqual(expect.arrayContaining(['Thôn Đông', 'Thôn Tây']));
    expect(await map.locator('g.spk.offline').getAttribute('data-device')).toBe('loa-a4');
    // West is left, north is up: Thôn Tây's market lies left of and below the village hall.
    const boxOf = async (id: string) => (await map.locator(`g.spk[data-device="${id}"]`).boundingBox())!;
    const [hall, market] = [await boxOf('loa-a2'), await boxOf('loa-a3')];
    expect(market.x).toBeLessThan(hall.x);
    expect(market.y).toBeGreaterThan(hall.y);

    // Telemetry in words and Vietnamese numbers; the one that went away says since when.
    await expect.poll(() => card(page, 'loa-a1').locator('[data-field="volume"] dd').textContent(), { timeout: 5000 }).toBe('70 %');
    await expect(card(page, 'loa-a1').locator('[data-role="connection"]').textContent()).resolves.toBe('Trực tuyến');
    await expect(card(page, 'loa-a1').locator('[data-role="playing"]').textContent()).resolves.toBe('Đang nghỉ');
    await expect(card(page, 'loa-a1').locator('[data-field="power_source"] dd').textContent()).resolves.toMatch(/^(Điện lưới|Điện mặt trời)$/);
    await expect(card(page, 'loa-a1').locator('[data-field="battery_v"] dd').textContent()).resolves.toMatch(/^\d{2},\d{1,2} V$/);
    await expect(card(page, 'loa-a4').locator('[data-role="connection"]').textContent()).resolves.toMatch(/^Mất kết nối từ \d{2}:\d{2}$/);
    await expect(card(page, 'loa-a4').locator('[data-field="power_source"] dd').textContent()).resolves.toBe('Điện mặt trời');
    // A bulletin starts elsewhere: the card and the map show what the speaker plays, live.
    const playing = await t.api('POST', '/api/v1/broadcasts', {
      target: { devices: ['loa-a3'] }, content: { ttsText: `Thông báo của xã Tân Phú. ${'Bà con chú ý lịch tiêm phòng. '.repeat(4)}` },
    });
    expect(playing.status, JSON.stringify(playing.body)).toBe(201);
    await expect.poll(() => card(page, 'loa-a3').locator('[data-role="playing"]').textContent(), { timeout: 10_000 })
      .toMatch(/^Đang phát: Thông báo của xã Tân Phú\. Bà con/);
    expect(await map.locator('g.spk.playing').getAttribute('data-device')).toBe('loa-a3');
    await expect(page.locator('.spk-summary').textContent()).resolves.toBe('4 loa · 3 trực tuyến · 1 đang phát');
    await shot(page, 'op-1-speakers');
    expect(await smallTargets(page)).toEqual([]);
    // On the office's wall screen the map stands beside the list.
    await page.setViewportSize(WALL);
    await page.waitForTimeout(300);
    await shot(page, 'op-1d-speakers-wall');
    await page.setViewportSize(PHONE);
    expect((await t.api('POST', `/api/v1/broadcasts/${playing.body.id}/stop`)).status).toBe(200);
    await expect.poll(() => card(page, 'loa-a3').locator('[data-role="playing"]').textContent(), { timeout: 10_000 }).toBe('Đang nghỉ');

    // Volume: three presses of "+" and send; the speaker answers and its telemetry follows.
    await card(page, 'loa-a1').getByRole('button', { name: 'Chỉnh âm lượng' }).click();
    for (let i = 0; i < 3; i++) await card(page, 'loa-a1').getByRole('button', { name: 'To hơn' }).click();
    await card(page, 'loa-a1').getByRole('button', { name: 'Đặt âm lượng 85 %' }).click();
    await expect.poll(() => card(page, 'loa-a1').locator('.note').textContent(), { timeout: 10_000 }).toBe('Loa đã đặt âm lượng 85 %.');
    expect(sim.get('loa-a1')!.volume).toBe(85);
    await expect.poll(() => card(page, 'loa-a1').locator('[data-field="volume"] dd').textContent(), { timeout: 5000 }).toBe('85 %');
    await shot(page, 'op-1b-volume');
    expect(await smallTargets(page)).toEqual([]);

    // A call forced onto commune B's speaker from this page: refused by the server, and the page says so.
    await page.route('**/api/v1/devices/loa-a2/volume', (route) => route.continue({ url: route.request().url().replace('loa-a2', 'loa-b1') }));
    const errorsBefore = browser.consoleErrors.length;
    await card(page, 'loa-a2').getByRole('button', { name: 'Chỉnh âm lượng' }).click();
    await card(page, 'loa-a2').getByRole('button', { name: 'Nhỏ hơn' }).click();
    await card(page, 'loa-a2').getByRole('button', { name: 'Đặt âm lượng 65 %' }).click();
    await expect.poll(() => card(page, 'loa-a2').locator('[role="alert"]').textContent(), { timeout: 5000 })
      .toBe('Không tìm thấy — có thể nó không thuộc khu vực của bạn.');
    expect(sim.get('loa-b1')!.volume).toBe(70);
    // The one console line this provokes is Chromium reporting that 404; nothing else may appear.
    const provoked = browser.consoleErrors.splice(errorsBefore);
    expect(provoked.every((e) => /status of 404/.test(e))).toBe(true);
    await shot(page, 'op-1c-refused');
    await page.close();
  }, 60_000);

  it('Lịch phát: a TTS bulletin scheduled through the form after listening to it, then a clash in the week', async () => {
    const page = await browser.newPage({ httpErrors: true });
    await logIn(page);
    await openTab(page, 'schedules');
    await page.locator('section.week').waitFor({ timeout: 5000 });
    expect(await page.locator('ol.days > li').count()).toBe(7);
    await expect(page.locator('ol.days > li h3 span').first().textContent()).resolves.toBe('Thứ Hai');

    // The repeat the staff choose (days and a time) becomes the cron expression the scheduler reads, and back.
    const base = (await page.getAttribute('script[type="module"]', 'src'))!.replace(/main\.js$/, '');
    // A string, not a function: vitest rewrites import() in functions, and this one runs in the page.
    expect(await page.evaluate(`(async () => {
      const m = await import('${base}view-schedules.js');
      const all = [0, 1, 2, 3, 4, 5, 6];
      return [m.cronOf(all, '06:30'), m.cronOf([0, 2, 4], '18:05'), m.cronOf([6, 5], '07:00'),
        m.readCron('30 6 * * *'), m.readCron('0 17 * * 1-5'), m.readCron('0 7 * * 0,6'), m.readCron('*/5 * * * *')];
    })()`)).toEqual(['30 6 * * *', '5 18 * * 1,3,5', '0 7 * * 0,6',
      { days: [0, 1, 2, 3, 4, 5, 6], time: '06:30' }, { days: [0, 1, 2, 3, 4], time: '17:00' }, { days: [5, 6], time: '07:00' }, null]);

    await page.getByRole('button', { name: 'Lịch mới' }).click();
    const form = page.locator('form.sch-form');
    // Saved empty: what is missing is said field by field, before anything is sent.
    await form.getByRole('button', { name: 'Lưu lịch' }).click();
    await expect(form.locator('[role="alert"]').textContent()).resolves.toBe('Cần sửa lại:Tên lịch: chưa điềnNơi phát: chưa điềnNội dung: chưa điền');
    await form.locator('input[name="name"]').fill('Bản tin sáng');
    await choice(form, 'Thôn Đông').click();
    await expect(form.locator('.target .hint').textContent()).resolves.toBe('Sẽ phát trên 2 loa.');
    await form.locator('textarea').fill(BULLETIN);
    await form.getByRole('button', { name: '▶ Nghe thử' }).click();
    // Listen before sending: the rendered speech plays in the page (its length is known once it loaded).
    const audio = form.locator('.listen audio');
    await audio.waitFor({ timeout: 20_000 });
    await expect.poll(() => audio.evaluate((a: HTMLAudioElement) => a.duration), { timeout: 10_000 }).toBeGreaterThan(1);
    const heard = await form.locator('.listen').getAttribute('data-media');
    await choice(form, 'Lặp lại hằng tuần').click();
    await form.locator('input[name="time"]').fill('06:30');
    await shot(page, 'op-2-new-schedule');
    expect(await smallTargets(page)).toEqual([]);
    await form.getByRole('button', { name: 'Lưu lịch' }).click();
    await expect.poll(() => page.locator('.notice').textContent(), { timeout: 10_000 }).toMatch(/^Đã lưu lịch «Bản tin sáng»\. Lần phát tới: \d{2}\/\d{2}\/\d{4} 06:30\.$/);

    // Saved as the staff meant it: every day at 06:30 in the commune's zone, the very audio they heard.
    const list = (await t.api('GET', '/api/v1/schedules')).body as any[];
    const morning = list.find((s) => s.name === 'Bản tin sáng');
    expect(morning).toMatchObject({ cron: '30 6 * * *', timezone: 'Asia/Ho_Chi_Minh', target: { areas: ['va1'] }, content: { mediaId: heard }, priority: 'normal' });
    // Seven mornings in the week shown (the week of the next one), none before the schedule existed.
    const items = page.locator('li.item[data-schedule="' + morning.id + '"]');
    await expect.poll(() => items.count()).toBeGreaterThan(0);
    expect(await page.content()).not.toContain('30 6 * * *');
    await expect(items.first().locator('.time').textContent()).resolves.toMatch(/^06:30\d+ giây$/);

    // A second bulletin on the same speakers at the same time: refused with the clash named in words...
    const at = next0630();
    await page.getByRole('button', { name: 'Lịch mới' }).click();
    await form.locator('input[name="name"]').fill('Thông báo tiêm phòng');
    await choice(form, 'Toàn Xã Tân Phú').click();
    await form.locator('textarea').fill('Thông báo: tiêm phòng lở mồm long móng cho trâu bò từ bảy giờ sáng.');
    // A time already past is the server's refusal (400), said in words.
    await form.locator('input[name="date"]').fill(communeDate(Date.now() - 86_400_000));
    await form.locator('input[name="time"]').fill('06:30');
    const errorsBefore = browser.consoleErrors.length;
    await form.getByRole('button', { name: 'Lưu lịch' }).click();
    const alert = form.locator('[role="alert"]');
    await expect.poll(() => alert.textContent(), { timeout: 15_000 }).toBe('Cần sửa lại:Ngày giờ phát: đã qua, hãy chọn thời điểm sau bây giờ');
    // Chromium reports that 400 on the console (httpErrors covers 4xx of auth and conflicts only); nothing else may appear.
    expect(browser.consoleErrors.splice(errorsBefore).every((e) => /status of 400/.test(e))).toBe(true);
    await form.locator('input[name="date"]').fill(communeDate(at));
    await form.getByRole('button', { name: 'Lưu lịch' }).click();
    await expect.poll(() => alert.textContent(), { timeout: 15_000 }).toMatch(/^Trùng giờ với lịch «Bản tin sáng» trên 2 loa lúc \d{2}\/\d{2}\/\d{4} 06:30\./);
    await expect(alert.textContent()).resolves.toContain('chọn mức «Ưu tiên»');
    await shot(page, 'op-2b-clash-refused');
    // ...and accepted as a priority bulletin: both are then marked in red in the week, with a note.
    await choice(form, 'Ưu tiên').click();
    await form.getByRole('button', { name: 'Lưu lịch' }).click();
    await expect.poll(() => page.locator('.notice').textContent(), { timeout: 15_000 }).toMatch(/^Đã lưu lịch «Thông báo tiêm phòng»/);
    const day = page.locator(`li.day[data-day="${communeDate(at)}"]`);
    const clashes = day.locator('li.item.clash');
    await expect.poll(() => clashes.count(), { timeout: 5000 }).toBe(2);
    await expect(day.locator('li.item.clash.prio .clash-note').textContent()).resolves
      .toBe('⚠ Trùng giờ với «Bản tin sáng» trên 2 loa.Loa sẽ phát lần lượt, bản tin ưu tiên trước.');
    await expect(page.locator('.clash-sum').textContent()).resolves.toBe('⚠ 2 chỗ trùng giờ trong tuần này.');
    await day.scrollIntoViewIfNeeded();
    await shot(page, 'op-3-calendar-clash');
    expect(await smallTargets(page)).toEqual([]);
    // The details of an item, and the week on the commune office's wall screen.
    await day.locator('li.item.clash.prio .item-head').click();
    await expect(day.locator('.item-details').textContent()).resolves.toContain('Toàn Xã Tân Phú');
    await page.setViewportSize(WALL);
    await page.waitForTimeout(300);
    await shot(page, 'op-3b-calendar-wall');
    await page.setViewportSize(PHONE);
    await expect.poll(() => page.evaluate(() => document.documentElement.scrollWidth), { timeout: 3000 }).toBeLessThanOrEqual(PHONE.width);
    // Next week: the daily bulletin goes on, the one-off does not.
    await page.getByRole('button', { name: 'Tuần sau ›' }).click();
    await expect.poll(() => page.locator(`li.item[data-schedule="${morning.id}"]`).count()).toBe(7);
    expect(await page.locator('li.item.clash').count()).toBe(0);
    await page.close();
  }, 90_000);

  it('Phát ngay, then Nhật ký phát: each speaker\'s state from the simulated speakers, live; stop; CSV', async () => {
    const page = await browser.newPage({ httpErrors: true });
    await logIn(page);
    await openTab(page, 'schedules');
    await page.getByRole('button', { name: 'Phát ngay' }).click();
    const form = page.locator('form.sch-form[data-mode="now"]');
    await choice(form, 'Thôn Tây').click();
    await form.locator('summary', { hasText: 'Chọn từng loa' }).click();
    await choice(form, 'Loa đầu thôn Đông').click();
    await expect(form.locator('.target .hint').textContent()).resolves.toBe('Sẽ phát trên 3 loa.');
    // An audio file already in the library: the bulletin rendered for the schedule.
    await choice(form, 'Tệp đã có').click();
    const option = form.locator('select option', { hasText: 'Xin chào bà con' });
    await option.waitFor({ state: 'attached', timeout: 5000 });
    await form.locator('select').selectOption(await option.getAttribute('value'));
    await form.locator('.listen audio').waitFor();
    await shot(page, 'op-4-play-now');
    expect(await smallTargets(page)).toEqual([]);
    await form.getByRole('button', { name: 'Phát ngay bây giờ' }).click();
    await expect.poll(() => page.locator('.notice').textContent(), { timeout: 10_000 }).toBe('Đang phát trên 3 loa. Xem tiến trình ở «Nhật ký phát».');

    await openTab(page, 'log');
    await page.locator('article.bc').first().waitFor({ timeout: 5000 });
    const firstId = (await page.locator('article.bc').first().getAttribute('data-broadcast'))!;
    const bc = page.locator(`article.bc[data-broadcast="${firstId}"]`);
    await expect(bc.locator('h2').textContent()).resolves.toBe('Phát ngay (không theo lịch)');
    await expect(bc.locator('.what').textContent()).resolves.toMatch(/^Xin chào bà con thôn Đông/);
    const state = (id: string) => bc.locator(`li[data-device="${id}"] .pill`).getAttribute('data-state');
    // The simulated speakers play it to the end; the one that is away waits for it.
    await expect.poll(() => state('loa-a1'), { timeout: 30_000 }).toBe('completed');
    await expect.poll(() => state('loa-a3'), { timeout: 30_000 }).toBe('completed');
    expect(await state('loa-a4')).toBe('offline');
    await expect(bc.locator('li[data-device="loa-a1"] .pill').textContent()).resolves.toBe('Đã phát xong');
    await expect(bc.locator('li[data-device="loa-a4"] .pill').textContent()).resolves.toBe('Loa mất kết nối, chờ');
    await expect(bc.locator('.counts').textContent()).resolves.toContain('2 · Đã phát xong');
    await shot(page, 'op-5-log');
    expect(await smallTargets(page)).toEqual([]);

    // A broadcast started elsewhere shows up on top without a reload, and its states follow live.
    await page.evaluate(() => { (window as unknown as { kengMarker: number }).kengMarker = 7; });
    const other = await t.api('POST', '/api/v1/broadcasts', { target: { devices: ['loa-a2'] }, content: { ttsText: 'Kiểm tra loa nhà văn hoá.' } });
    expect(other.status, JSON.stringify(other.body)).toBe(201);
    const top = page.locator(`article.bc[data-broadcast="${other.body.id}"]`);
    await top.waitFor({ timeout: 10_000 });
    await expect.poll(() => top.locator('li[data-device="loa-a2"] .pill').getAttribute('data-state'), { timeout: 30_000 }).toBe('completed');
    expect(await page.evaluate(() => (window as unknown as { kengMarker?: number }).kengMarker)).toBe(7);
    expect(await page.locator('article.bc').first().getAttribute('data-broadcast')).toBe(other.body.id);

    // Stop the first one: the speaker still waiting for it is withdrawn.
    await bc.getByRole('button', { name: '■ Dừng phát' }).click();
    await expect.poll(() => state('loa-a4'), { timeout: 10_000 }).toBe('stopped');
    await expect(bc.getByRole('button', { name: '■ Dừng phát' }).count()).resolves.toBe(0);
    await expect(bc.textContent()).resolves.toMatch(/Đã yêu cầu dừng lúc \d{2}:\d{2}\./);

    // Proof of play as CSV, downloaded with the token: the server's columns, the speakers' names, only commune A.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: '⬇ Tải tệp CSV (Excel)' }).click()]);
    expect(download.suggestedFilename()).toMatch(/^nhat-ky-phat-thanh-\d{4}-\d{2}-\d{2}\.csv$/);
    const file = path.join(dir, download.suggestedFilename());
    await download.saveAs(file);
    const bytes = readFileSync(file);
    expect([...bytes.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
    const rows = parseCsv(bytes.toString('utf8').slice(1));
    expect(rows[0]).toEqual(['time', 'device_time', 'broadcast_id', 'schedule_id', 'schedule_name', 'media_id', 'media_name',
      'area', 'area_name', 'device_id', 'device_name', 'state', 'previous_state', 'detail', 'source']);
    const ofFirst = rows.filter((r) => r[2] === firstId && r[9] === 'loa-a1' && r[11] === 'completed');
    expect(ofFirst).toHaveLength(1);
    expect(ofFirst[0]![10]).toBe('Loa đầu thôn Đông');
    expect(ofFirst[0]![8]).toBe('Thôn Đông');
    expect(rows.some((r) => r[2] === firstId && r[9] === 'loa-a3' && r[11] === 'completed' && r[8] === 'Thôn Tây')).toBe(true);
    expect(rows.some((r) => r[2] === firstId && r[9] === 'loa-a4' && r[11] === 'stopped')).toBe(true);
    expect(rows.some((r) => r[9] === 'loa-b1')).toBe(false);
    await expect(page.locator('.log-filter .note').textContent()).resolves.toMatch(/^Đã tải tệp nhat-ky-phat-thanh-/);

    // The same log in English on the switch; Vietnamese again on the way back.
    await page.getByRole('button', { name: 'Switch to English' }).click();
    await expect.poll(() => page.locator('main h1').textContent()).toBe('Broadcast log');
    await expect(bc.locator('li[data-device="loa-a1"] .pill').textContent()).resolves.toBe('Played to the end');
    await expect(bc.locator('h2').textContent()).resolves.toBe('Played now (no schedule)');
    await page.getByRole('button', { name: 'Chuyển sang tiếng Việt' }).click();
    await expect.poll(() => page.locator('main h1').textContent()).toBe('Nhật ký phát');
    await page.close();
  }, 120_000);

  it('commune B stays out of reach: its broadcasts are not listed, a play forced onto it is refused and shown', async () => {
    const b = await t.api('POST', '/api/v1/broadcasts', { target: { areas: ['cb'] }, content: { ttsText: 'Loa xã Bình Minh.' } });
    expect(b.status, JSON.stringify(b.body)).toBe(201);
    const page = await browser.newPage({ httpErrors: true });
    await logIn(page);
    await openTab(page, 'log');
    await page.locator('.log-list').waitFor({ state: 'attached', timeout: 5000 });
    expect(await page.locator(`article.bc[data-broadcast="${b.body.id}"]`).count()).toBe(0);
    expect(await page.locator('li[data-device="loa-b1"]').count()).toBe(0);

    await openTab(page, 'schedules');
    await page.getByRole('button', { name: 'Phát ngay' }).click();
    const form = page.locator('form.sch-form[data-mode="now"]');
    expect(await form.locator('label.choice', { hasText: 'Bình Minh' }).count()).toBe(0);
    await choice(form, 'Thôn Đông').click();
    // A recording uploaded from the phone (multipart POST /media): something that is not audio is refused in words...
    await choice(form, 'Tải tệp ghi âm').click();
    const notAudio = path.join(dir, 'ghi-chu.mp3');
    writeFileSync(notAudio, 'đây không phải là âm thanh');
    await form.locator('input[type="file"]').setInputFiles(notAudio);
    await expect.poll(() => form.locator('.content [role="alert"]').textContent(), { timeout: 10_000 })
      .toBe('Tệp này không phải âm thanh phát được. Hãy chọn tệp MP3, WAV hoặc OGG.');
    // ...and a real one can be heard before it is sent.
    const wav = path.join(dir, 'Kẻng báo giờ.wav');
    execFileSync('/usr/bin/ffmpeg', ['-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine=frequency=880:duration=2', '-ac', '1', '-ar', '16000', wav]);
    await form.locator('input[type="file"]').setInputFiles(wav);
    const audio = form.locator('.listen audio');
    await audio.waitFor({ timeout: 10_000 });
    await expect.poll(() => audio.evaluate((a: HTMLAudioElement) => a.duration), { timeout: 10_000 }).toBeGreaterThan(1.5);
    await expect(form.locator('.listen p').textContent()).resolves.toBe('«Kẻng báo giờ», dài 2 giây.');
    expect(await form.locator('.content [role="alert"]').count()).toBe(0);
    // The page is made to ask for commune B: the server refuses, the form says why, B's speaker hears nothing.
    await page.route('**/api/v1/broadcasts', (route) => route.continue({
      postData: JSON.stringify({ ...route.request().postDataJSON(), target: { areas: ['cb'] } }),
    }));
    const heardBefore = sim.get('loa-b1')!.events.length;
    await form.getByRole('button', { name: 'Phát ngay bây giờ' }).click();
    await expect.poll(() => form.locator('[role="alert"]').textContent(), { timeout: 10_000 }).toBe('Bạn không có quyền làm việc này ở khu vực đó.');
    await page.unroute('**/api/v1/broadcasts');
    // A device of B named directly is answered like an unknown one, and said in words.
    await page.route('**/api/v1/broadcasts', (route) => route.continue({
      postData: JSON.stringify({ ...route.request().postDataJSON(), target: { devices: ['loa-b1'] } }),
    }));
    await form.getByRole('button', { name: 'Phát ngay bây giờ' }).click();
    await expect.poll(() => form.locator('[role="alert"]').textContent(), { timeout: 10_000 })
      .toBe('Cần sửa lại:Nơi phát: không có hoặc không thuộc khu vực của bạn');
    await shot(page, 'op-6-refused-b');
    await page.waitForTimeout(500);
    expect(sim.get('loa-b1')!.events.slice(heardBefore).filter((e) => e.broadcastId !== b.body.id)).toEqual([]);
    const ops = await t.api('GET', '/api/v1/broadcasts');
    expect((ops.body as any[]).filter((x) => x.targets.some((tg: any) => tg.deviceId === 'loa-b1')).map((x) => x.id)).toEqual([b.body.id]);
    await page.close();
  }, 60_000);

  it('no page logged a console error', () => {
    expect(browser.consoleErrors).toEqual([]);
  });
});

describe('speakers\' map with raster tiles configured (web.mapTileUrl)', () => {
  const TILES = 'https://tiles.example.test/osm/{z}/{x}/{y}.png';
  let t: TestApp;
  let browser: Browser;
  let png: Buffer;

  beforeAll(async () => {
    ({ t } = await setup({ web: { mapTileUrl: TILES, mapTileAttribution: '© Bản đồ thử nghiệm' } }));
    const dir = mkdtempSync(path.join(tmpdir(), 'keng-tile-'));
    const file = path.join(dir, 'tile.png');
    execFileSync('/usr/bin/ffmpeg', ['-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i', 'color=c=0xdfe9d6:s=256x256,drawgrid=w=64:h=64:t=2:c=0xb5c9a9',
      '-frames:v', '1', file]);
    png = readFileSync(file);
    rmSync(dir, { recursive: true, force: true });
    browser = await launchBrowser();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await t?.stop();
  });

  it('the page allows the tile host for images, and the map draws the tiles behind the speakers', async () => {
    const res = await fetch(`${t.httpUrl}/`);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/img-src 'self' data: https:\/\/tiles\.example\.test(;|$)/);
    expect(csp).toMatch(/script-src 'self'/);
    const html = await res.text();
    expect(html).toContain('<meta name="keng-map-tiles" content="https://tiles.example.test/osm/{z}/{x}/{y}.png">');
    // The API's own replies keep helmet's policy unchanged.
    expect((await fetch(`${t.httpUrl}/healthz`)).headers.get('content-security-policy')).not.toContain('tiles.example.test');

    const page = await browser.newPage();
    const asked: string[] = [];
    await page.route('https://tiles.example.test/**', (route) => {
      asked.push(route.request().url());
      return route.fulfill({ status: 200, contentType: 'image/png', body: png });
    });
    await logInAs(page, t.httpUrl, OPERATOR);
    await openTab(page, 'speakers');
    const map = page.locator('.op-map[data-mode="tiles"]');
    await map.waitFor({ timeout: 5000 });
    await expect.poll(() => asked.length, { timeout: 5000 }).toBeGreaterThan(0);
    for (const u of asked) expect(u).toMatch(/^https:\/\/tiles\.example\.test\/osm\/(1[0-8]|[1-9])\/\d+\/\d+\.png$/);
    await expect.poll(() => map.locator('img.tile').evaluateAll((imgs) => imgs.every((i) => (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth === 256)))
      .toBe(true);
    expect(await map.locator('g.spk').count()).toBe(4);
    await expect(map.locator('.credit').textContent()).resolves.toBe('© Bản đồ thử nghiệm');
    await shot(page, 'op-7-map-tiles');
    await page.close();
    expect(browser.consoleErrors).toEqual([]);
  }, 60_000);
});
