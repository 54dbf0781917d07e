/**
 * /readyz during a stop: 503 from the moment stop begins (a load balancer's
 * health check takes the node out while the parts stopped before the API
 * finish), then the HTTP listener closes.
 */
import { afterEach, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp | undefined;
afterEach(async () => { await t?.stop().catch(() => undefined); t = undefined; });

it('answers 503 "shutting down" while the stop is under way, before the listener closes', async () => {
  t = await startTestApp();
  expect((await fetch(`${t.httpUrl}/readyz`)).status).toBe(200);
  // The live feed stops first (reverse start order); hold it, as many socket.io clients would.
  const live = t.app.live as unknown as { stop(): Promise<void> };
  const realStop = live.stop.bind(live);
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  live.stop = async () => { await held; await realStop(); };
  const stopping = t.app.stop();
  const during = await fetch(`${t.httpUrl}/readyz`, { headers: { authorization: `Bearer ${t.adminToken}` } });
  expect(during.status).toBe(503);
  const body = await during.json() as { error: { code: string; details: { checks: Record<string, { ok: boolean; detail?: unknown }> } } };
  expect(body.error.code).toBe('KENG_ERR_NOT_READY');
  expect(body.error.details.checks.server).toEqual({ ok: false, detail: { reason: 'shutting down' } });
  release();
  await stopping;
  await expect(fetch(`${t.httpUrl}/readyz`)).rejects.toThrow();
  t = undefined;
});
