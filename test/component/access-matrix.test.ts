/**
 * The role × area × route matrix (scoping everywhere; docs/roles.md):
 * every route registered on the running API, driven by every kind of
 * caller (admin token, admin user, operator, viewer and service of commune A, no token, a bad token), against an object inside A
 * and one in commune B. The route list is read from fastify itself, so a new
 * route without a matrix entry fails this test (add it to MATRIX below).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAccountsApp, ADMIN, type AccountsApp, type Reply } from './auth-fixture.js';
import { Readable } from 'node:stream';
import { seedAreas, seedDevices } from '../helpers/seed.js';
import { silentWav } from '../helpers/audio.js';

type Who = 'admin' | 'adminUser' | 'operator' | 'viewer' | 'service' | 'none' | 'bad';
type Where = 'in' | 'out';
type Signed = Exclude<Who, 'none' | 'bad'>;
const SIGNED: Signed[] = ['admin', 'adminUser', 'operator', 'viewer', 'service'];
const EVERYONE: Who[] = [...SIGNED, 'none', 'bad'];
const PW = 'matrix password 1';

interface Request { url: string; body?: unknown; token?: string | null }
/** A status, or the statuses acceptable (e.g. 201 or 503 when a helper program such as espeak-ng is missing). */
type Want = number | readonly number[];
interface Entry {
  /** No token needed: every caller gets `expect` (none and bad included). */
  public?: boolean;
  /** [inside A, inside B] per caller; none/bad get 401 unless public. */
  expect: Record<Signed, [Want, Want]>;
  prepare(who: Who, where: Where): Promise<Request> | Request;
}

let t: AccountsApp;
const tokens = {} as Record<Who, string | null>;
let n = 0;
const uniq = (p: string): string => `${p}${++n}`;
const area = (w: Where): string => (w === 'in' ? 'A' : 'B');
const leaf = (w: Where): string => (w === 'in' ? 'A1' : 'B');

/** Same answer for every signed caller, in and out. */
const all = (s: Want): Record<Signed, [Want, Want]> => ({ admin: [s, s], adminUser: [s, s], operator: [s, s], viewer: [s, s], service: [s, s] });
/** Admins only (role check: 403 for everyone else, wherever). */
const adminOnly = (ok: Want): Record<Signed, [Want, Want]> => ({ admin: [ok, ok], adminUser: [ok, ok], operator: [403, 403], viewer: [403, 403], service: [403, 403] });

async function freshDevice(w: Where): Promise<string> {
  const id = uniq('tmp-');
  await t.app.registry.createDevice({ id, kind: 'speaker', name: id, area: leaf(w), location: null, model: null });
  return id;
}
async function freshProvisioningKey(w: Where): Promise<string> {
  const r = await t.inject('POST', '/api/v1/provisioning-keys', { area: leaf(w) }, ADMIN);
  expect(r.status).toBe(201);
  return r.body.id as string;
}
async function freshPackage(): Promise<string> {
  return (await t.app.firmware.addPackage({ title: uniq('pkg-'), version: '1.0' }, Buffer.from('firmware bytes'), 'test')).id;
}
/** A rollout of two fresh devices of A1 (in) or B (out), its first half assigned. */
async function freshRollout(w: Where): Promise<string> {
  return (await t.app.firmware.createRollout(await freshPackage(), [await freshDevice(w), await freshDevice(w)], 50, 'test')).id;
}
async function freshViewer(w: Where): Promise<string> {
  const u = uniq('viewer-');
  await t.accounts.users.create({ username: u, password: PW, role: 'viewer', areas: [area(w)] }, { actor: 'test' });
  return u;
}

const MATRIX: Record<string, Entry> = {
  'GET /healthz': { public: true, expect: all(200), prepare: () => ({ url: '/healthz' }) },
  'GET /readyz': { public: true, expect: all(200), prepare: () => ({ url: '/readyz' }) },
  // Monitoring: admin and service tokens only (none/bad: 401); /readyz answers everyone, its details only to them.
  'GET /metrics': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [403, 403], viewer: [403, 403], service: [200, 200] },
    prepare: () => ({ url: '/metrics' }),
  },

  'POST /api/v1/auth/login': {
    public: true, expect: all(200),
    prepare: () => ({ url: '/api/v1/auth/login', body: { username: 'probe', password: PW } }),
  },
  'POST /api/v1/auth/logout': {
    expect: { admin: [400, 400], adminUser: [204, 204], operator: [204, 204], viewer: [204, 204], service: [400, 400] },
    // Each session logs out a fresh session of its own user (the shared ones stay valid).
    prepare: async (who) => ({ url: '/api/v1/auth/logout', body: undefined, token: USERS[who as Signed] ? await t.login(USERS[who as Signed]!, PW) : undefined }),
  },
  'GET /api/v1/auth/me': { expect: all(200), prepare: () => ({ url: '/api/v1/auth/me' }) },

  'GET /api/v1/areas': { expect: all(200), prepare: (_w, where) => ({ url: `/api/v1/areas?parent=${area(where)}` }) },
  'POST /api/v1/areas': {
    expect: adminOnly(201),
    prepare: (_w, where) => ({ url: '/api/v1/areas', body: { code: uniq('v-'), name: 'Thôn mới', level: 'village', parent: area(where) } }),
  },

  'GET /api/v1/devices': { expect: all(200), prepare: (_w, where) => ({ url: `/api/v1/devices?area=${area(where)}` }) },
  'POST /api/v1/devices': {
    expect: { admin: [201, 201], adminUser: [201, 201], operator: [201, 403], viewer: [403, 403], service: [403, 403] },
    prepare: (_w, where) => ({ url: '/api/v1/devices', body: { id: uniq('new-'), kind: 'sensor', name: 'Cảm biến', area: leaf(where) } }),
  },
  'GET /api/v1/devices/:id': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [200, 404], service: [200, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/devices/dev-${where === 'in' ? 'a' : 'b'}` }),
  },
  'DELETE /api/v1/devices/:id': {
    expect: { admin: [204, 204], adminUser: [204, 204], operator: [204, 404], viewer: [403, 404], service: [403, 404] },
    prepare: async (_w, where) => ({ url: `/api/v1/devices/${await freshDevice(where)}` }),
  },
  'PATCH /api/v1/devices/:id': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 404], service: [403, 404] },
    prepare: async (_w, where) => ({ url: `/api/v1/devices/${await freshDevice(where)}`, body: { name: 'Loa đổi tên', enabled: false } }),
  },
  'POST /api/v1/devices/:id/secret': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 404], service: [403, 404] },
    prepare: async (_w, where) => ({ url: `/api/v1/devices/${await freshDevice(where)}/secret` }),
  },
  'POST /api/v1/devices/:id/token': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 404], service: [403, 404] },
    prepare: async (_w, where) => ({ url: `/api/v1/devices/${await freshDevice(where)}/token` }),
  },
  // Loudspeaker control is broadcasting work: operators within their areas, never viewers or services.
  'POST /api/v1/devices/:id/volume': {
    expect: { admin: [202, 202], adminUser: [202, 202], operator: [202, 404], viewer: [403, 404], service: [403, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/devices/spk-${where === 'in' ? 'a' : 'b'}/volume`, body: { volume: 40 } }),
  },
  'GET /api/v1/devices/:id/commands/:requestId': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 404], service: [200, 404] },
    prepare: async (_w, where) => {
      const id = `spk-${where === 'in' ? 'a' : 'b'}`;
      const { requestId } = await t.app.broadcast.rpc.send(id, 'speaker.setVolume', { volume: 30 }, { expiresAt: Date.now() + 86_400_000 });
      return { url: `/api/v1/devices/${id}/commands/${requestId}` };
    },
  },
  // Provisioning keys register devices in their area: whoever may register devices there (devices.write).
  'POST /api/v1/provisioning-keys': {
    expect: { admin: [201, 201], adminUser: [201, 201], operator: [201, 403], viewer: [403, 403], service: [403, 403] },
    prepare: (_w, where) => ({ url: '/api/v1/provisioning-keys', body: { area: leaf(where), maxDevices: 3 } }),
  },
  'GET /api/v1/provisioning-keys': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 200], viewer: [403, 403], service: [403, 403] },
    prepare: () => ({ url: '/api/v1/provisioning-keys' }),
  },
  'GET /api/v1/provisioning-keys/:id': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 403], service: [403, 403] },
    prepare: async (_w, where) => ({ url: `/api/v1/provisioning-keys/${await freshProvisioningKey(where)}` }),
  },
  'DELETE /api/v1/provisioning-keys/:id': {
    expect: { admin: [204, 204], adminUser: [204, 204], operator: [204, 404], viewer: [403, 403], service: [403, 403] },
    prepare: async (_w, where) => ({ url: `/api/v1/provisioning-keys/${await freshProvisioningKey(where)}` }),
  },
  'GET /api/v1/modbus/maps': { expect: all(200), prepare: () => ({ url: '/api/v1/modbus/maps' }) },
  // Modbus devices whose gateway is unreachable: an allowed write gets as far as the line (503), a refused one never does.
  'POST /api/v1/devices/:id/modbus/write': {
    expect: { admin: [503, 503], adminUser: [503, 503], operator: [503, 404], viewer: [403, 404], service: [403, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/devices/mb-${where === 'in' ? 'a' : 'b'}/modbus/write`, body: { field: 'pump', value: true } }),
  },
  'GET /api/v1/devices/:id/attributes/shared': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [200, 404], service: [200, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/devices/dev-${where === 'in' ? 'a' : 'b'}/attributes/shared` }),
  },
  'PUT /api/v1/devices/:id/attributes/shared': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 404], service: [403, 404] },
    prepare: async (_w, where) => ({ url: `/api/v1/devices/${await freshDevice(where)}/attributes/shared`, body: { reportEverySec: 60 } }),
  },
  'GET /api/v1/areas/:code/attributes/shared': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [200, 404], service: [200, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/areas/${area(where)}/attributes/shared` }),
  },
  'PUT /api/v1/areas/:code/attributes/shared': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 404], service: [403, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/areas/${leaf(where)}/attributes/shared`, body: { volume: 70 } }),
  },
  // Firmware: packages are the admin's (firmware.write); rollouts need devices.write on every device.
  'POST /api/v1/firmware/packages': {
    expect: { admin: [201, 201], adminUser: [201, 201], operator: [403, 403], viewer: [403, 403], service: [403, 403] },
    prepare: () => ({ url: `/api/v1/firmware/packages?title=${uniq('fw-')}&version=1.0`, body: { type: 'application/octet-stream', raw: 'firmware bytes' } }),
  },
  'GET /api/v1/firmware/packages': { expect: all(200), prepare: () => ({ url: '/api/v1/firmware/packages' }) },
  'GET /api/v1/firmware/packages/:id': { expect: all(200), prepare: async () => ({ url: `/api/v1/firmware/packages/${await freshPackage()}` }) },
  'DELETE /api/v1/firmware/packages/:id': {
    expect: { admin: [204, 204], adminUser: [204, 204], operator: [403, 403], viewer: [403, 403], service: [403, 403] },
    prepare: async () => ({ url: `/api/v1/firmware/packages/${await freshPackage()}` }),
  },
  'POST /api/v1/firmware/rollouts': {
    expect: { admin: [201, 201], adminUser: [201, 201], operator: [201, 404], viewer: [403, 403], service: [403, 403] },
    prepare: async (_w, where) => ({ url: '/api/v1/firmware/rollouts', body: { packageId: await freshPackage(), target: { devices: [await freshDevice(where)] } } }),
  },
  'GET /api/v1/firmware/rollouts': { expect: all(200), prepare: () => ({ url: '/api/v1/firmware/rollouts' }) },
  'GET /api/v1/firmware/rollouts/:id': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [200, 404], service: [200, 404] },
    prepare: async (_w, where) => ({ url: `/api/v1/firmware/rollouts/${await freshRollout(where)}` }),
  },
  'POST /api/v1/firmware/rollouts/:id/continue': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 404], service: [403, 404] },
    prepare: async (_w, where) => ({ url: `/api/v1/firmware/rollouts/${await freshRollout(where)}/continue` }),
  },
  'GET /api/v1/devices/:id/firmware': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [200, 404], service: [200, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/devices/dev-${where === 'in' ? 'a' : 'b'}/firmware` }),
  },
  // The signed link is the authorisation: without exp/sig it is 403 for everyone.
  'GET /firmware/:id/file': { public: true, expect: all(403), prepare: () => ({ url: '/firmware/no-such-package/file' }) },
  'GET /api/v1/devices/:id/telemetry': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [200, 404], service: [200, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/devices/dev-${where === 'in' ? 'a' : 'b'}/telemetry` }),
  },
  'GET /api/v1/telemetry/latest': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [200, 404], service: [200, 404] },
    prepare: (_w, where) => ({ url: `/api/v1/telemetry/latest?area=${area(where)}` }),
  },

  'GET /api/v1/audit': { expect: adminOnly(200), prepare: () => ({ url: '/api/v1/audit?limit=5' }) },
  'GET /api/v1/audit/head': { expect: adminOnly(200), prepare: () => ({ url: '/api/v1/audit/head' }) },
  // Embedded mode: the one node (docs/cluster.md "Node leases").
  'GET /api/v1/cluster/nodes': { expect: adminOnly(200), prepare: () => ({ url: '/api/v1/cluster/nodes' }) },

  'POST /api/v1/tokens': {
    expect: adminOnly(201),
    prepare: (_w, where) => ({ url: '/api/v1/tokens', body: { name: 'ioc', role: 'service', areas: [area(where)] } }),
  },
  'GET /api/v1/tokens': { expect: adminOnly(200), prepare: () => ({ url: '/api/v1/tokens' }) },
  'DELETE /api/v1/tokens/:id': {
    expect: adminOnly(204),
    prepare: async (_w, where) => ({ url: `/api/v1/tokens/${(await t.accounts.tokens.create({ name: 'x', role: 'service', areas: [area(where)], expiresAt: null }, { actor: 'test' })).meta.id}` }),
  },

  'GET /api/v1/command-keys': { expect: all(200), prepare: () => ({ url: '/api/v1/command-keys' }) },
  'POST /api/v1/command-keys/rotate': { expect: adminOnly(201), prepare: () => ({ url: '/api/v1/command-keys/rotate' }) },
  'DELETE /api/v1/command-keys/:kid': {
    expect: adminOnly(204),
    // A rotated-out key for each call (the active key cannot be retired).
    prepare: async () => { const old = t.app.commandKeys.activeKid; await t.app.commandKeys.rotate(); return { url: `/api/v1/command-keys/${old}` }; },
  },

  'POST /api/v1/users': {
    expect: { admin: [201, 201], adminUser: [201, 201], operator: [201, 403], viewer: [403, 403], service: [403, 403] },
    prepare: (_w, where) => ({ url: '/api/v1/users', body: { username: uniq('new-user-'), password: PW, role: 'viewer', areas: [area(where)] } }),
  },
  'GET /api/v1/users': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 200], viewer: [403, 403], service: [403, 403] },
    prepare: () => ({ url: '/api/v1/users' }),
  },
  'PATCH /api/v1/users/:username': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 404], viewer: [403, 403], service: [403, 403] },
    prepare: async (_w, where) => ({ url: `/api/v1/users/${await freshViewer(where)}`, body: { disabled: true } }),
  },
  'DELETE /api/v1/users/:username': {
    expect: { admin: [204, 204], adminUser: [204, 204], operator: [204, 404], viewer: [403, 403], service: [403, 403] },
    prepare: async (_w, where) => ({ url: `/api/v1/users/${await freshViewer(where)}` }),
  },
};

// Media (src/api/routes/media.ts, src/media/access.ts): admins and operators (media.read/media.write),
// never viewers or services. An item belongs to areas: "in" is an item of village A1, "out" one of
// commune B; the operator of A sees, changes and deletes only its own, and B's is 404 to it, as if absent.
const staff = (ok: Want, out: Want = ok): Record<Signed, [Want, Want]> => ({ admin: [ok, ok], adminUser: [ok, ok], operator: [ok, out], viewer: [403, 403], service: [403, 403] });
/** A not-audio upload naming the areas it is for (checked before the audio: 403 outside the operator's areas). */
const notAudio = (areas: string) => ({
  type: 'multipart/form-data; boundary=XyZ',
  raw: `--XyZ\r\nContent-Disposition: form-data; name="areas"\r\n\r\n${areas}\r\n`
    + '--XyZ\r\nContent-Disposition: form-data; name="file"; filename="x.mp3"\r\nContent-Type: audio/mpeg\r\n\r\nnot audio at all\r\n--XyZ--\r\n',
});
/** A media item of A1 (in) or B (out), made through the library (the upload route is a cell of its own). */
async function freshMedia(w: Where): Promise<string> {
  return (await t.app.media.upload(Readable.from([silentWav(1)]), { createdBy: 'test', areas: [leaf(w)], filename: 'x.wav' })).id;
}
const media = {} as Record<Where, string>;
/** An item a change may consume: a fresh one for callers who may change media, the standing one for the rest (refused before any lookup). */
const mediaFor = async (who: Who, w: Where): Promise<string> => (['admin', 'adminUser', 'operator'].includes(who) ? freshMedia(w) : media[w]);
Object.assign(MATRIX, {
  'GET /api/v1/media': { expect: staff(200), prepare: () => ({ url: '/api/v1/media' }) },
  'GET /api/v1/media/:id': { expect: staff(200, 404), prepare: (_w, where) => ({ url: `/api/v1/media/${media[where]}` }) },
  'PATCH /api/v1/media/:id': { expect: staff(200, 404), prepare: async (who, where) => ({ url: `/api/v1/media/${await mediaFor(who, where)}`, body: { name: 'Đổi tên' } }) },
  'DELETE /api/v1/media/:id': { expect: staff(204, 404), prepare: async (who, where) => ({ url: `/api/v1/media/${await mediaFor(who, where)}` }) },
  // Not audio: 422, or 503 where ffprobe/ffmpeg are not installed; for areas outside the operator's: 403.
  'POST /api/v1/media': { expect: staff([422, 503], 403), prepare: (_w, where) => ({ url: '/api/v1/media', body: notAudio(area(where)) }) },
  // 201, or 503 where espeak-ng/ffmpeg are not installed.
  'POST /api/v1/media/tts': { expect: staff([201, 503], 403), prepare: (_w, where) => ({ url: '/api/v1/media/tts', body: { text: 'Xin chào bà con', lang: 'vi', areas: [area(where)] } }) },
  // The signed link is the authorisation: without exp/sig it is 403 for everyone, bearer token or not.
  'GET /media/:id/file': { public: true, expect: all(403), prepare: () => ({ url: '/media/no-such-media/file' }) },
} satisfies Record<string, Entry>);

// Schedules (operator: schedules.* within its areas; viewer and service: none) and broadcasts
// (operator: read and write within its areas; service: read within its areas; viewer: none).
// Objects that do not exist probe the role gate: 403 before any lookup for roles without the right.
const ops = (ok: Want, out: Want = ok): Record<Signed, [Want, Want]> => ({ admin: [ok, ok], adminUser: [ok, ok], operator: [ok, out], viewer: [403, 403], service: [403, 403] });
const stream = { streamUrl: 'http://203.0.113.10/live.mp3' }; // a public address literal: no DNS needed (stream-url.ts)
const relay = { durationSec: 60 };
Object.assign(MATRIX, {
  'POST /api/v1/schedules': {
    expect: ops(201, 403),
    prepare: (_w, where) => ({ url: '/api/v1/schedules', body: { name: uniq('sch-'), target: { areas: [area(where)] }, content: stream, ...relay, cron: `${++n % 60} ${Math.floor(n / 60) % 24} * * *` } }), // distinct minutes: no overlap (409)
  },
  'GET /api/v1/schedules': { expect: ops(200), prepare: () => ({ url: '/api/v1/schedules' }) },
  'GET /api/v1/schedules/:id': { expect: ops(404), prepare: () => ({ url: '/api/v1/schedules/no-such-schedule' }) },
  'PATCH /api/v1/schedules/:id': { expect: ops(404), prepare: () => ({ url: '/api/v1/schedules/no-such-schedule', body: { enabled: false } }) },
  'DELETE /api/v1/schedules/:id': { expect: ops(404), prepare: () => ({ url: '/api/v1/schedules/no-such-schedule' }) },
  'GET /api/v1/schedules/:id/occurrences': { expect: ops(404), prepare: () => ({ url: '/api/v1/schedules/no-such-schedule/occurrences' }) },
  'GET /api/v1/scheduler': { expect: adminOnly(200), prepare: () => ({ url: '/api/v1/scheduler' }) },
  'POST /api/v1/broadcasts': {
    expect: ops(201, 403),
    prepare: (_w, where) => ({ url: '/api/v1/broadcasts', body: { target: { areas: [area(where)] }, content: stream, ...relay } }),
  },
  'GET /api/v1/broadcasts': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 403], viewer: [403, 403], service: [200, 403] },
    prepare: (_w, where) => ({ url: `/api/v1/broadcasts?area=${area(where)}` }),
  },
  'GET /api/v1/broadcasts/log': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 403], viewer: [403, 403], service: [200, 403] },
    prepare: (_w, where) => ({ url: `/api/v1/broadcasts/log?area=${area(where)}` }),
  },
  'GET /api/v1/broadcasts/totals': {
    expect: { admin: [200, 200], adminUser: [200, 200], operator: [200, 403], viewer: [403, 403], service: [200, 403] },
    prepare: (_w, where) => ({ url: `/api/v1/broadcasts/totals?area=${area(where)}` }),
  },
  'GET /api/v1/broadcasts/:id': {
    expect: { admin: [404, 404], adminUser: [404, 404], operator: [404, 404], viewer: [403, 403], service: [404, 404] },
    prepare: () => ({ url: '/api/v1/broadcasts/no-such-broadcast' }),
  },
  'POST /api/v1/broadcasts/:id/stop': { expect: ops(404), prepare: () => ({ url: '/api/v1/broadcasts/no-such-broadcast/stop' }) },
} satisfies Record<string, Entry>);

// Alerts (docs/alerts.md): operators raise and decide within their areas, service accounts (the IOC) read,
// viewers nothing; the policy is the admin's; the Atom feed of public alerts needs no login.
// Raising renders the announcement: 201, or 503 where espeak-ng/ffmpeg are not installed.
const tts = [201, 503] as const;
const readers = (ok: Want): Record<Signed, [Want, Want]> => ({ admin: [ok, ok], adminUser: [ok, ok], operator: [ok, ok], viewer: [403, 403], service: [ok, ok] });
Object.assign(MATRIX, {
  'POST /api/v1/alerts': {
    expect: { admin: [tts, tts], adminUser: [tts, tts], operator: [tts, 403], viewer: [403, 403], service: [403, 403] },
    prepare: (_w, where) => ({
      url: '/api/v1/alerts',
      body: {
        status: 'Actual', msgType: 'Alert', event: 'Lũ', urgency: 'Expected', severity: 'Severe', certainty: 'Likely', headline: 'Cảnh báo lũ',
        areas: [area(where)], expires: new Date(Date.now() + 3600_000).toISOString(),
      },
    }),
  },
  'GET /api/v1/alerts': { expect: readers(200), prepare: () => ({ url: '/api/v1/alerts' }) },
  'GET /api/v1/alerts/policy': { expect: readers(200), prepare: () => ({ url: '/api/v1/alerts/policy' }) },
  'PUT /api/v1/alerts/policy': { expect: adminOnly(200), prepare: () => ({ url: '/api/v1/alerts/policy', body: { playAtOnce: [] } }) },
  'GET /api/v1/alerts/:id': { expect: readers(404), prepare: () => ({ url: '/api/v1/alerts/no-such-alert' }) },
  'POST /api/v1/alerts/:id/approve': { expect: ops(404), prepare: () => ({ url: '/api/v1/alerts/no-such-alert/approve' }) },
  'POST /api/v1/alerts/:id/reject': { expect: ops(404), prepare: () => ({ url: '/api/v1/alerts/no-such-alert/reject' }) },
  'POST /api/v1/alerts/:id/cancel': { expect: ops(404), prepare: () => ({ url: '/api/v1/alerts/no-such-alert/cancel' }) },
  'GET /api/v1/alerts.atom': { public: true, expect: all(200), prepare: () => ({ url: '/api/v1/alerts.atom' }) },
} satisfies Record<string, Entry>);

// Sensor rules (alert-rules.ts): alerts.read / alerts.write within the rule's area; a rule elsewhere is 404,
// creating one elsewhere 403. Rules are made disabled: nothing here should raise an alert.
const ruleBody = (w: Where) => ({
  name: uniq('rule-'), area: area(w), field: 'water_level_cm', op: '>', threshold: 250, enabled: false,
  alert: { event: 'Lũ', severity: 'Severe', urgency: 'Immediate', certainty: 'Observed', headline: 'Nước lên' },
});
const freshRule = async (w: Where): Promise<string> => (await t.app.alertRules.create(
  { principal: { kind: 'admin', id: 'admin', role: 'admin', areas: ['*'] }, inScope: () => true }, ruleBody(w))).rule.id;
const alertReaders = (ok: Want, out: Want = ok): Record<Signed, [Want, Want]> => ({ ...ops(ok, out), service: [ok, out] });
Object.assign(MATRIX, {
  'POST /api/v1/alert-rules': { expect: ops(201, 403), prepare: (_w, where) => ({ url: '/api/v1/alert-rules', body: ruleBody(where) }) },
  'GET /api/v1/alert-rules': { expect: alertReaders(200), prepare: () => ({ url: '/api/v1/alert-rules' }) },
  'GET /api/v1/alert-rules/:id': { expect: alertReaders(200, 404), prepare: async (_w, where) => ({ url: `/api/v1/alert-rules/${await freshRule(where)}` }) },
  'PATCH /api/v1/alert-rules/:id': {
    expect: ops(200, 404), prepare: async (_w, where) => ({ url: `/api/v1/alert-rules/${await freshRule(where)}`, body: { threshold: 260 } }),
  },
  'DELETE /api/v1/alert-rules/:id': { expect: ops(204, 404), prepare: async (_w, where) => ({ url: `/api/v1/alert-rules/${await freshRule(where)}` }) },
} satisfies Record<string, Entry>);

// The web app's page and files (src/web): no data in them, the same for everyone, token or not.
Object.assign(MATRIX, {
  'GET /': { public: true, expect: all(200), prepare: () => ({ url: '/' }) },
  'GET /app/:version/:name': { public: true, expect: all(200), prepare: () => ({ url: '/app/any-version/main.js' }) },
} satisfies Record<string, Entry>);

/** Usernames behind the session callers. */
const USERS: Partial<Record<Signed, string>> = { adminUser: 'root-user', operator: 'op-a', viewer: 'view-a' };

/** `METHOD /path` of every route fastify has, from printRoutes (HEAD, CORS preflight and the /docs UI left out). */
function registeredRoutes(): string[] {
  const tree = t.app.api.fastify.printRoutes({ commonPrefix: false });
  const stack: string[] = [];
  const out = new Set<string>();
  for (const line of tree.split('\n')) {
    const m = /^((?:[│ ] {3})*)(?:├── |└── )(\S+)(?: \(([^)]*)\))?$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    stack.push(m[2]!);
    const path = stack.join('');
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
      if (method === 'HEAD' || method === 'OPTIONS' || path === '/docs' || path.startsWith('/docs/') || path.startsWith('/docs*')) continue;
      out.add(`${method} ${path}`);
    }
  }
  return [...out].sort();
}

async function call(via: 'inject' | 'http', method: string, r: Request, token: string | null): Promise<Reply> {
  const tok = r.token !== undefined ? r.token : token;
  return via === 'inject' ? t.inject(method, r.url, r.body, tok) : t.http(method, r.url, r.body, tok);
}

async function runCell(via: 'inject' | 'http', key: string, who: Who, where: Where): Promise<{ got: number; want: Want; ok: boolean; code?: string }> {
  const e = MATRIX[key]!;
  const [method] = key.split(' ');
  const req = await e.prepare(who, where);
  const r = await call(via, method!, req, tokens[who]);
  const want = who === 'none' || who === 'bad'
    ? (e.public ? e.expect.admin[where === 'in' ? 0 : 1] : 401)
    : e.expect[who][where === 'in' ? 0 : 1];
  const ok = typeof want === 'number' ? r.status === want : want.includes(r.status);
  return { got: r.status, want, ok, code: r.body?.error?.code };
}

beforeAll(async () => {
  t = await startAccountsApp();
  const admin = (m: string, url: string, body?: unknown): Promise<Reply> => t.inject(m, url, body, ADMIN);
  await seedAreas(t, [
    { code: 'P', name: 'Tỉnh', level: 'province' },
    { code: 'A', name: 'Xã A', level: 'commune', parent: 'P' },
    { code: 'A1', name: 'Thôn A1', level: 'village', parent: 'A' },
    { code: 'B', name: 'Xã B', level: 'commune', parent: 'P' },
  ]);
  await seedDevices(t, [
    { id: 'dev-a', kind: 'sensor', name: 'A', area: 'A1' },
    { id: 'dev-b', kind: 'sensor', name: 'B', area: 'B' },
    // Loudspeakers, so that broadcasts and schedules have targets in both communes.
    { id: 'spk-a', kind: 'speaker', name: 'Loa A', area: 'A1' },
    { id: 'spk-b', kind: 'speaker', name: 'Loa B', area: 'B' },
  ]);
  for (const [id, area, unitId] of [['mb-a', 'A1', 1], ['mb-b', 'B', 2]] as const) {
    expect((await admin('POST', '/api/v1/devices', {
      id, kind: 'sensor', name: id, area, transport: { type: 'modbus-tcp', host: '127.0.0.1', port: 1, unitId },
      registerMap: { registers: [{ field: 'pump', function: 'coil', address: 0, type: 'bool' }] },
    })).status).toBe(201);
  }
  for (const [username, role, areas] of [['root-user', 'admin', []], ['op-a', 'operator', ['A']], ['view-a', 'viewer', ['A']], ['probe', 'viewer', ['A']], ['view-b', 'viewer', ['B']]] as const) {
    expect((await admin('POST', '/api/v1/users', { username, password: PW, role, areas })).status).toBe(201);
  }
  const svc = await admin('POST', '/api/v1/tokens', { name: 'IOC A', role: 'service', areas: ['A'] });
  expect(svc.status).toBe(201);
  Object.assign(tokens, {
    admin: ADMIN, adminUser: await t.login('root-user', PW), operator: await t.login('op-a', PW), viewer: await t.login('view-a', PW),
    service: svc.body.token, none: null, bad: 'kengs_' + 'x'.repeat(43),
  });
  media.in = await freshMedia('in');
  media.out = await freshMedia('out');
}, 120_000);
afterAll(async () => { await t?.stop(); });

describe('role × area × route matrix', () => {
  it('has an entry for every registered route, and no entry for a route that does not exist', () => {
    const routes = registeredRoutes();
    expect(routes.length).toBeGreaterThan(10);
    expect({ missingFromMatrix: routes.filter((r) => !MATRIX[r]) }).toEqual({ missingFromMatrix: [] });
    expect({ notRegistered: Object.keys(MATRIX).filter((k) => !routes.includes(k)) }).toEqual({ notRegistered: [] });
  });

  it('every route × caller × area gives the expected status (inject)', async () => {
    const failures: string[] = [];
    for (const key of registeredRoutes().filter((r) => MATRIX[r])) {
      for (const who of EVERYONE) {
        for (const where of ['in', 'out'] as const) {
          const { got, want, ok, code } = await runCell('inject', key, who, where);
          if (!ok) failures.push(`${key} as ${who} ${where}: got ${got} ${code ?? ''}, want ${JSON.stringify(want)}`);
        }
      }
    }
    expect(failures).toEqual([]);
  }, 120_000);

  it('the same over real HTTP for the device, broadcast, user and audit routes', async () => {
    const failures: string[] = [];
    for (const key of ['GET /api/v1/devices/:id', 'POST /api/v1/devices', 'PATCH /api/v1/devices/:id', 'POST /api/v1/provisioning-keys', 'DELETE /api/v1/provisioning-keys/:id', 'POST /api/v1/devices/:id/volume', 'POST /api/v1/broadcasts', 'DELETE /api/v1/devices/:id', 'PATCH /api/v1/users/:username', 'GET /api/v1/audit', 'GET /api/v1/telemetry/latest',
      'GET /api/v1/media/:id', 'PATCH /api/v1/media/:id', 'DELETE /api/v1/media/:id', 'POST /api/v1/media']) {
      for (const who of EVERYONE) {
        for (const where of ['in', 'out'] as const) {
          const { got, want, ok, code } = await runCell('http', key, who, where);
          if (!ok) failures.push(`${key} as ${who} ${where}: got ${got} ${code ?? ''}, want ${JSON.stringify(want)}`);
        }
      }
    }
    expect(failures).toEqual([]);
  }, 120_000);

  it('lists are filtered to the caller\'s scope: commune A never sees commune B', async () => {
    for (const who of ['operator', 'viewer', 'service'] as const) {
      const devices = await t.inject('GET', '/api/v1/devices', undefined, tokens[who]);
      const ids = devices.body.map((d: { id: string }) => d.id);
      expect(ids).toContain('dev-a');
      expect(devices.body.every((d: { area: string }) => d.area === 'A' || d.area === 'A1' || d.area.startsWith('v-'))).toBe(true);
      expect(ids).not.toContain('dev-b');
      const areas = (await t.inject('GET', '/api/v1/areas', undefined, tokens[who])).body.map((a: { code: string }) => a.code);
      expect(areas).toContain('A');
      expect(areas).toContain('A1');
      expect(areas).not.toContain('B');
      expect(areas).not.toContain('P');
      const latest = await t.inject('GET', '/api/v1/telemetry/latest', undefined, tokens[who]);
      expect(latest.body.devices.map((d: { id: string }) => d.id)).not.toContain('dev-b');
      expect((await t.inject('GET', '/api/v1/devices?area=B', undefined, tokens[who])).body).toEqual([]);
    }
    const keys = (await t.inject('GET', '/api/v1/provisioning-keys', undefined, tokens.operator)).body as Array<{ area: string; provisionDeviceSecret?: string }>;
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.every((k) => k.area === 'A1' && k.provisionDeviceSecret === undefined)).toBe(true);
    const mediaIds = (await t.inject('GET', '/api/v1/media?limit=1000', undefined, tokens.operator)).body.map((m: { id: string }) => m.id);
    expect(mediaIds).toContain(media.in);
    expect(mediaIds).not.toContain(media.out);
    const users = (await t.inject('GET', '/api/v1/users', undefined, tokens.operator)).body;
    expect(users.length).toBeGreaterThan(0);
    expect(users.every((u: { role: string; areas: string[] }) => u.role === 'viewer' && u.areas.every((a) => a === 'A' || a === 'A1'))).toBe(true);
    expect(users.map((u: { username: string }) => u.username)).not.toContain('view-b');
    expect(users.map((u: { username: string }) => u.username)).not.toContain('op-a');
    const all = (await t.inject('GET', '/api/v1/users')).body.map((u: { username: string }) => u.username);
    expect(all).toEqual(expect.arrayContaining(['root-user', 'op-a', 'view-a', 'view-b']));
  });

  it('an operator cannot escalate: no operator/admin accounts, no viewers outside its areas, no "*"', async () => {
    const op = tokens.operator;
    for (const body of [
      { username: 'x-op', password: PW, role: 'operator', areas: ['A'] },
      { username: 'x-admin', password: PW, role: 'admin', areas: [] },
      { username: 'x-star', password: PW, role: 'viewer', areas: ['*'] },
      { username: 'x-prov', password: PW, role: 'viewer', areas: ['P'] },
      { username: 'x-mixed', password: PW, role: 'viewer', areas: ['A', 'B'] },
    ]) expect((await t.inject('POST', '/api/v1/users', body, op)).status).toBe(403);
    const v = await freshViewer('in');
    expect((await t.inject('PATCH', `/api/v1/users/${v}`, { role: 'operator' }, op)).status).toBe(403);
    expect((await t.inject('PATCH', `/api/v1/users/${v}`, { areas: ['B'] }, op)).status).toBe(403);
    expect((await t.inject('PATCH', `/api/v1/users/${v}`, { unlock: true }, op)).status).toBe(403);
    expect((await t.inject('PATCH', '/api/v1/users/op-a', { areas: ['P'] }, op)).status).toBe(404);
  });
});
