/**
 * Stream URLs through the real API (config/README.md "Stream URLs"). The
 * attack: an operator's schedule or "play now" that makes every loudspeaker
 * of a village fetch an address inside a private network (the commune
 * office's router, a cloud metadata service, the speakers' own loopback),
 * directly or through a name that resolves there; and credentials in a URL
 * that every operator, the audit log and every speaker would see.
 */
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { seedAreas, seedDevices } from '../helpers/seed.js';
import { redactStreamUrl, redactStreamUrls } from '../../src/broadcast/stream-url.js';

let t: TestApp | undefined;
afterEach(async () => { await t?.stop(); t = undefined; });

async function app(streamHosts?: string[]): Promise<TestApp> {
  t = await startTestApp(streamHosts ? { broadcast: { streamHosts } } : {});
  await seedAreas(t, [{ code: 'p1', name: 'Tỉnh', level: 'province' }, { code: 'xa', name: 'Xã', level: 'commune', parent: 'p1' }]);
  await seedDevices(t, [{ id: 'spk-1', kind: 'speaker', name: 'Loa chợ', area: 'xa' }]);
  return t;
}

const playNow = (streamUrl: string) => t!.api('POST', '/api/v1/broadcasts', { target: { areas: ['xa'] }, content: { streamUrl }, durationSec: 60 });
let minute = 0;
const schedule = (streamUrl: string) => t!.api('POST', '/api/v1/schedules', {
  name: `Phát lại ${++minute}`, target: { areas: ['xa'] }, content: { streamUrl }, cron: `${minute % 60} 5 * * *`, durationSec: 60,
});

const NON_PUBLIC = [
  ['http://127.0.0.1:8000/live', 'loopback'],
  ['http://[::1]/live', 'loopback'],
  ['http://2130706433/live', 'loopback'], // 127.0.0.1 as one number
  ['http://0x7f.1/live', 'loopback'],
  ['http://0.0.0.0/live', 'unspecified'],
  ['http://10.0.0.1/live', 'private'],
  ['http://172.16.5.4/live', 'private'],
  ['http://192.168.1.1/admin', 'private'],
  ['http://[::ffff:192.168.1.1]/live', 'private'],
  ['http://100.64.0.1/live', 'shared address space'],
  ['http://169.254.169.254/latest/meta-data/', 'link-local'],
  ['http://[fe80::1]/live', 'link-local'],
  ['http://[fd00::1]/live', 'unique local'],
] as const;

describe('stream URLs: where speakers may be sent', { timeout: 60_000 }, () => {
  it('by default: private, shared, loopback, link-local and unspecified addresses are refused (422), public ones accepted', async () => {
    await app();
    for (const [url, what] of NON_PUBLIC) {
      for (const r of [await playNow(url), await schedule(url)]) {
        expect(r.status, url).toBe(422);
        expect(r.body.error.code).toBe('KENG_ERR_UNPROCESSABLE');
        expect(r.body.error.message).toContain(what);
        expect(r.body.error.details).toEqual([{ field: 'content.streamUrl', message: expect.stringContaining('broadcast.streamHosts') }]);
      }
    }
    expect((await playNow('http://203.0.113.10/live')).status).toBe(201);
    expect((await schedule('https://203.0.113.10:8443/live')).status).toBe(201);
  });

  it('a name that resolves to loopback (localhost) is refused; a name that does not resolve is refused', async () => {
    await app();
    const r = await playNow('http://localhost:8000/live');
    expect(r.status).toBe(422);
    expect(r.body.error.message).toMatch(/"localhost" is a loopback address \(it resolves to 127\.0\.0\.1/);
    const n = await schedule('http://no-such-host.invalid/live');
    expect(n.status).toBe(422);
    expect(n.body.error.message).toMatch(/cannot resolve "no-such-host\.invalid"/);
  });

  it('credentials in the URL are refused (400): they would be shown to every operator and logged', async () => {
    await app();
    for (const url of ['http://user:secret@203.0.113.10/live', 'http://user@203.0.113.10/live', 'https://:secret@203.0.113.10/live']) {
      for (const r of [await playNow(url), await schedule(url)]) {
        expect(r.status, url).toBe(400);
        expect(r.body.error.code).toBe('KENG_ERR_VALIDATION');
        expect(JSON.stringify(r.body)).toContain('must not contain a user name or password');
      }
    }
  });

  it('an allow-list without "*": only its hosts, listed private ones included; a listed name needs no DNS', async () => {
    await app(['192.168.1.20', '10.10.0.0/16', '*.vov.vn']);
    expect((await playNow('http://192.168.1.20:8000/live')).status).toBe(201);
    expect((await schedule('http://10.10.3.4/live')).status).toBe(201);
    expect((await schedule('http://radio.vov.vn/vov1')).status).toBe(201); // not resolvable here: listed, so not resolved
    const other = await playNow('http://192.168.1.21/live');
    expect([other.status, other.body.error.message]).toEqual([422, expect.stringContaining('private')]);
    const pub = await playNow('http://203.0.113.10/live');
    expect([pub.status, pub.body.error.message]).toEqual([422, expect.stringContaining('not in broadcast.streamHosts')]);
    expect((await playNow('http://vov.vn/live')).status).toBe(422); // *.vov.vn: subdomains only
  });

  it('"*" next to listed ranges: any public host plus those', async () => {
    await app(['*', '10.10.0.0/16']);
    expect((await playNow('http://203.0.113.10/live')).status).toBe(201);
    expect((await playNow('http://10.10.3.4/live')).status).toBe(201);
    expect((await playNow('http://10.11.0.1/live')).status).toBe(422);
  });

  it('a URL with credentials saved by an earlier version: shown as ***@ in the API and never written to the audit log', async () => {
    await app();
    const s = await schedule('http://203.0.113.10/live');
    expect(s.status).toBe(201);
    // As an earlier version stored it.
    t!.app.stateDb.db.prepare('UPDATE schedules SET content_json = ? WHERE id = ?').run(JSON.stringify({ streamUrl: 'http://radio:hunter2@203.0.113.10/live' }), s.body.id);
    const got = await t!.api('GET', `/api/v1/schedules/${s.body.id}`);
    expect(got.body.content).toEqual({ streamUrl: 'http://***@203.0.113.10/live' });
    expect((await t!.api('PATCH', `/api/v1/schedules/${s.body.id}`, { name: 'Đổi tên' })).status).toBe(200);
    const list = await t!.api('GET', '/api/v1/schedules');
    expect(JSON.stringify(list.body)).not.toContain('hunter2');
    const audit = await t!.api('GET', '/api/v1/audit?limit=1000');
    expect(audit.status).toBe(200);
    expect(JSON.stringify(audit.body)).toContain('***@203.0.113.10');
    expect(JSON.stringify(audit.body)).not.toContain('hunter2');
    // Sending the shown URL back is refused, not silently stored without its password.
    const back = await t!.api('PATCH', `/api/v1/schedules/${s.body.id}`, { content: { streamUrl: 'http://***@203.0.113.10/live' } });
    expect(back.status).toBe(400);
  });

  it('a schedule saved before (or before a stricter streamHosts) stays editable: the host is judged when the content changes', async () => {
    await app(['*', '192.168.1.20']);
    const s = await schedule('http://192.168.1.20/live');
    expect(s.status).toBe(201);
    const dataDir = t!.dataDir;
    await t!.stop({ keepData: true });
    t = await startTestApp({ broadcast: { streamHosts: [] } }, { dataDir }); // the LAN radio no longer listed
    expect((await t.api('PATCH', `/api/v1/schedules/${s.body.id}`, { enabled: false })).status).toBe(200);
    const moved = await t.api('PATCH', `/api/v1/schedules/${s.body.id}`, { content: { streamUrl: 'http://192.168.1.21/live' } });
    expect([moved.status, moved.body.error.code]).toEqual([422, 'KENG_ERR_UNPROCESSABLE']);
    await t.stop();
    t = undefined;
    rmSync(dataDir, { recursive: true, force: true });
  });
});

describe('redactStreamUrl', () => {
  it('hides user and password, keeps everything else', () => {
    expect(redactStreamUrl('http://u:p@radio.example.vn:8000/live?x=1')).toBe('http://***@radio.example.vn:8000/live?x=1');
    expect(redactStreamUrl('https://radio.example.vn/live')).toBe('https://radio.example.vn/live');
    expect(redactStreamUrl('not a url')).toBe('not a url');
    expect(redactStreamUrls({ broadcastId: 'b', stream: { url: 'http://u:p@h/s' }, nested: [{ streamUrl: 'http://u:p@h/s' }] }))
      .toEqual({ broadcastId: 'b', stream: { url: 'http://***@h/s' }, nested: [{ streamUrl: 'http://***@h/s' }] });
  });
});
