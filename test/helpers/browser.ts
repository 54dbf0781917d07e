/**
 * A real Chromium (playwright-core, /usr/bin/chromium) for web app tests:
 * phone-sized persistent contexts, console errors collected (a test asserts
 * none), screenshots to test/artifacts/ (git-ignored) for a human look, and
 * the login form filled as a user would.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type ConsoleMessage, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
export const PHONE = { width: 412, height: 915 };
export const WALL = { width: 1920, height: 1080 };
export const ARTIFACTS = path.resolve(__dirname, '../artifacts');

export interface Browser {
  context: BrowserContext;
  /** Console errors and page errors of every page opened with newPage(). */
  consoleErrors: string[];
  /** `httpErrors`: the page provokes 401/403/423/429 replies on purpose (Chromium logs each as a console error). */
  newPage(opts?: { httpErrors?: boolean }): Promise<Page>;
  close(): Promise<void>;
}

export async function launchBrowser(viewport: { width: number; height: number } = PHONE): Promise<Browser> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-chromium-'));
  const context = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, args: ARGS, headless: true, viewport, locale: 'vi-VN' });
  const consoleErrors: string[] = [];
  return {
    context,
    consoleErrors,
    async newPage(opts = {}) {
      const page = await context.newPage();
      page.on('console', (m: ConsoleMessage) => {
        if (m.type() !== 'error') return;
        if (opts.httpErrors && /^Failed to load resource: the server responded with a status of 4(01|03|09|22|23|29)\b/.test(m.text())) return;
        consoleErrors.push(`${page.url()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => consoleErrors.push(`${page.url()}: ${e.message}`));
      return page;
    },
    async close() {
      await context.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A full-page screenshot as test/artifacts/web-<name>.png. */
export function shot(page: Page, name: string): Promise<Buffer> {
  return page.screenshot({ path: path.join(ARTIFACTS, `web-${name}.png`), fullPage: true });
}

/** Opens `/` and submits the login form. */
export async function logIn(page: Page, baseUrl: string, who: { username: string; password: string }): Promise<void> {
  await page.goto(`${baseUrl}/`);
  await page.fill('input[name="username"]', who.username);
  await page.fill('input[name="password"]', who.password);
  await page.click('button[type="submit"]');
}
