/**
 * Component fixture for the account tests: the whole app (buildApp, which
 * wires the account services), a clock that can jump ahead, and helpers over
 * inject() and real HTTP.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, type Config, type DeepPartial } from '../../src/config/index.js';
import { buildApp, type KengApp } from '../../src/app.js';
import { createLogger } from '../../src/core/index.js';
import type { Accounts } from '../../src/auth/index.js';

export const ADMIN = 'test-admin-token-0123456789abcdef';

/** A non-JSON body (e.g. multipart) for inject/http. */
export interface RawBody { raw: string; type: string }
const isRaw = (b: unknown): b is RawBody => typeof b === 'object' && b !== null && 'raw' in b && 'type' in b;
const encode = (b: unknown): { type?: string; payload?: string } =>
  b === undefined ? {} : isRaw(b) ? { type: b.type, payload: b.raw } : { type: 'application/json', payload: JSON.stringify(b) };

export interface Reply { status: number; body: any; headers: Record<string, string | string[] | undefined> }

export interface AccountsApp {
  app: KengApp;
  accounts: Accounts;
  dataDir: string;
  httpUrl: string;
  /** Jump the app's clock ahead. */
  advance(ms: number): void;
  /** How far the clock was moved (pass as startOffsetMs to a restarted app). */
  offset(): number;
  inject(method: string, url: string, body?: unknown, token?: string | null, headers?: Record<string, string>): Promise<Reply>;
  /** Over a real socket; `headers` e.g. X-Forwarded-For (with http.trustProxy set, the client's address). */
  http(method: string, url: string, body?: unknown, token?: string | null, headers?: Record<string, string>): Promise<Reply>;
  login(username: string, password: string): Promise<string>;
  stop(): Promise<void>;
}

/**
 * `stoppedAt`: the app's clock stands still at this instant and moves only by advance(), so a test
 * that reads delays (Retry-After) is not shortened by how long the machine took to answer.
 * `config`: further settings (e.g. `http.trustProxy`, `auth`).
 */
export async function startAccountsApp(opts: { dataDir?: string; startOffsetMs?: number; stoppedAt?: number; config?: DeepPartial<Config> } = {}): Promise<AccountsApp> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'keng-auth-'));
  const config = loadConfig({
    env: {},
    overrides: {
      ...opts.config,
      dataDir, adminToken: ADMIN, logLevel: (process.env.KENG_TEST_LOG_LEVEL as 'silent') ?? 'silent',
      http: { ...opts.config?.http, port: 0, host: '127.0.0.1' }, mqtt: { port: 0, host: '127.0.0.1' },
    },
  });
  let offset = opts.startOffsetMs ?? 0;
  const stoppedAt = opts.stoppedAt;
  const clock = { now: () => (stoppedAt ?? Date.now()) + offset };
  const app = buildApp(config, { logger: createLogger(config.logLevel), clock });
  const accounts = app.accounts;
  await app.start();
  const httpUrl = `http://127.0.0.1:${app.addresses().http.port}`;
  const inject: AccountsApp['inject'] = async (method, url, body, token = ADMIN, headers = {}) => {
    const b = encode(body);
    const r = await app.api.fastify.inject({
      method: method as 'GET', url,
      headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...(b.type ? { 'content-type': b.type } : {}), ...headers },
      payload: b.payload,
    });
    let parsed: unknown = r.body;
    try { parsed = r.body ? JSON.parse(r.body) : undefined; } catch { /* not JSON */ }
    return { status: r.statusCode, body: parsed, headers: r.headers as Reply['headers'] };
  };
  const http: AccountsApp['http'] = async (method, url, body, token = ADMIN, headers = {}) => {
    const b = encode(body);
    const res = await fetch(httpUrl + url, {
      method,
      headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...(b.type ? { 'content-type': b.type } : {}), ...headers },
      body: b.payload,
    });
    const text = await res.text();
    let parsed: unknown = text;
    try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
    return { status: res.status, body: parsed, headers: Object.fromEntries(res.headers.entries()) };
  };
  return {
    app, accounts, dataDir, httpUrl, inject, http,
    advance(ms) { offset += ms; },
    offset: () => offset,
    async login(username, password) {
      const r = await inject('POST', '/api/v1/auth/login', { username, password }, null);
      if (r.status !== 200) throw new Error(`login ${username}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.token as string;
    },
    async stop() {
      await app.stop();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
