/**
 * Component-test helper: runs the whole of Keng in-process on ephemeral ports
 * with a temporary data directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, type Config, type DeepPartial } from '../../src/config/index.js';
import { buildApp, type KengApp } from '../../src/app.js';
import { createLogger } from '../../src/core/index.js';

export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

export interface TestApp {
  app: KengApp;
  dataDir: string;
  httpUrl: string;
  mqttUrl: string;
  mqttPort: number;
  adminToken: string;
  /** Authorised fetch against the API (admin token by default). */
  api(method: string, route: string, body?: unknown, token?: string): Promise<{ status: number; body: any }>;
  stop(opts?: { keepData?: boolean }): Promise<void>;
}

export async function startTestApp(overrides: DeepPartial<Config> = {}, opts: { dataDir?: string } = {}): Promise<TestApp> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'keng-test-'));
  const config = loadConfig({
    env: {},
    overrides: {
      dataDir,
      adminToken: TEST_ADMIN_TOKEN,
      logLevel: (process.env.KENG_TEST_LOG_LEVEL as Config['logLevel']) ?? 'silent',
      ...overrides,
      http: { port: 0, host: '127.0.0.1', ...(overrides.http ?? {}) },
      mqtt: { port: 0, host: '127.0.0.1', ...(overrides.mqtt ?? {}) },
    },
  });
  const app = buildApp(config, { logger: createLogger(config.logLevel) });
  await app.start();
  const a = app.addresses();
  const httpUrl = `http://127.0.0.1:${a.http.port}`;
  return {
    app, dataDir, httpUrl,
    mqttUrl: `mqtt://127.0.0.1:${a.mqtt.port}`,
    mqttPort: a.mqtt.port,
    adminToken: TEST_ADMIN_TOKEN,
    async api(method, route, body, token = TEST_ADMIN_TOKEN) {
      const res = await fetch(httpUrl + route, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
      const text = await res.text();
      let parsed: unknown = text;
      try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
      return { status: res.status, body: parsed };
    },
    async stop({ keepData = false } = {}) {
      await app.stop();
      if (!keepData && !opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
