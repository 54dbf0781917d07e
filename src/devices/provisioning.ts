/**
 * Device provisioning (firmware-protocols/provisioning.md): a commune issues
 * a provisioning key and secret for one area; factory firmware that sends
 * ThingsBoard's provision request registers itself in that area and gets its
 * access token. The MQTT side (the `provision` login, its topics, the
 * per-address limit) is the broker's (src/broker/provision-session.ts); it
 * calls `provision()` here through the DeviceProvisioner port.
 *
 * Answers are ThingsBoard's, word for word where firmware compares them:
 * - a missing, unknown, revoked, expired or used-up key, or a wrong secret:
 *   `{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}`;
 * - a device of that name exists already (whatever its area: the answer does
 *   not say where), or the name gives no usable id:
 *   `{"errorMsg":"Failed to provision device!","status":"FAILURE"}`;
 * - credentials that do not fit Keng's (MQTT_BASIC, X.509, a chosen token
 *   that is too short or could be read as another login): FAILURE with a
 *   message saying so; a chosen token in use by another device: FAILURE;
 * - success: `{"credentialsValue":"<access token>","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}`
 *   (the token the device chose, or a new random one).
 * Every issue, revoke, use and failure is audited (the secret never is).
 */
import type { Registry } from 'prom-client';
import type { AuditRecorder, Actor } from '../audit/log.js';
import type { Clock } from '../core/clock.js';
import { Errors, withDetails } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { counterOn } from '../core/metrics.js';
import { PROVISION_FAILURE_MSG, PROVISION_NOT_FOUND_MSG, type ProvisionStatus } from '../core/protocol.js';
import { randomBase62 } from '../core/random.js';
import type { Db } from '../storage/sql/index.js';
import { MAX_NAME_LENGTH } from './area-tree.js';
import { ProvisioningRepo, type ProvisioningKey, type StoredKey } from './provisioning-repo.js';
import { chosenTokenProblem, deviceIdFromName, parseProvisionRequest, randomDeviceName } from './provision-request.js';
import type { DevicesApi } from './registry-types.js';
import { hashSecret, verifySecret } from './secrets.js';
import type { Area, DeviceKind } from './types.js';

export type { ProvisioningKey };

/** What the broker sends back on `/provision/response` (serialised in ThingsBoard's field order). */
export type ProvisionAnswer =
  | { credentialsValue: string; credentialsType: 'ACCESS_TOKEN'; status: 'SUCCESS' }
  | { errorMsg: string; status: Exclude<ProvisionStatus, 'SUCCESS'> };

/** The port the broker's provisioning sessions call. */
export interface DeviceProvisioner {
  /** One provision request (the raw payload); never throws: every outcome is an answer. */
  provision(payload: Buffer, from: { ip: string | null }): Promise<ProvisionAnswer>;
}

export interface NewProvisioningKey {
  area: string;
  /** Epoch ms; absent: DEFAULT_KEY_LIFETIME_MS from now; null: never. */
  expiresAt?: number | null;
  /** Devices the key may create; absent or null: no limit (until it expires). */
  maxDevices?: number | null;
  kind?: DeviceKind;
  model?: string | null;
  label?: string | null;
}

/** Who asked (the API's principal and address). */
export interface Requester { actor: Actor | string; ip?: string | null }

export const DEFAULT_KEY_LIFETIME_MS = 30 * 24 * 3600_000;
export const MAX_DEVICES_PER_KEY = 100_000;
/** Key and secret lengths (base62). The key is public; the secret ≈ 190 bits. */
const KEY_LENGTH = 20;
const SECRET_LENGTH = 32;
const KINDS: readonly DeviceKind[] = ['sensor', 'speaker', 'gateway'];

/** Actor of audit rows about requests whose key is unknown. */
const MQTT_ACTOR = 'mqtt:provision';

export type ProvisionResult = 'success' | 'not_found' | 'failure';

export interface ProvisioningDeps {
  db: Db<unknown>;
  devices: Pick<DevicesApi, 'createDevice' | 'getDevice'> & { getArea(code: string): Area | undefined };
  audit: AuditRecorder;
  clock: Clock;
  logger?: Logger;
  metrics?: Registry;
}

function invalid(field: string, message: string): Error {
  return withDetails(Errors.VALIDATION(message), [{ in: 'body', field, message }]);
}

const notFound = (): ProvisionAnswer => ({ errorMsg: PROVISION_NOT_FOUND_MSG, status: 'NOT_FOUND' });
const failure = (msg = PROVISION_FAILURE_MSG): ProvisionAnswer => ({ errorMsg: msg, status: 'FAILURE' });

export class ProvisioningService implements DeviceProvisioner {
  private readonly repo: ProvisioningRepo;
  private readonly requests;

  constructor(private readonly deps: ProvisioningDeps) {
    this.repo = new ProvisioningRepo(deps.db);
    this.requests = counterOn<'result'>(deps.metrics, 'keng_provisioning_requests_total',
      'Device provision requests by result (success, not_found, failure)', ['result']);
  }

  // ---------------------------------------------------------------- keys (API)

  /** A new key; the secret is returned here only (stored hashed). Throws VALIDATION / UNPROCESSABLE. */
  async issue(input: NewProvisioningKey, by: Requester): Promise<{ key: ProvisioningKey; secret: string }> {
    const now = this.deps.clock.now();
    const kind = input.kind ?? 'sensor';
    if (!KINDS.includes(kind)) throw invalid('kind', `kind must be one of ${KINDS.join(', ')}`);
    if (!this.deps.devices.getArea(input.area)) throw Errors.UNPROCESSABLE(`area "${input.area}" does not exist`);
    const expiresAt = input.expiresAt === undefined ? now + DEFAULT_KEY_LIFETIME_MS : input.expiresAt;
    if (expiresAt !== null && expiresAt <= now) throw invalid('expiresAt', 'expiresAt must be in the future');
    const maxDevices = input.maxDevices ?? null;
    if (maxDevices !== null && (!Number.isInteger(maxDevices) || maxDevices < 1 || maxDevices > MAX_DEVICES_PER_KEY)) {
      throw invalid('maxDevices', `maxDevices must be an integer from 1 to ${MAX_DEVICES_PER_KEY}`);
    }
    for (const f of ['model', 'label'] as const) {
      const v = input[f];
      if (v !== undefined && v !== null && (typeof v !== 'string' || v.length > MAX_NAME_LENGTH)) {
        throw invalid(f, `${f} must be a string of at most ${MAX_NAME_LENGTH} characters`);
      }
    }
    const secret = randomBase62(SECRET_LENGTH);
    const stored: StoredKey = {
      id: `pk_${randomBase62(16)}`, key: randomBase62(KEY_LENGTH), secretHash: await hashSecret(secret),
      area: input.area, kind, model: input.model ?? null, label: input.label ?? null, maxDevices, used: 0, expiresAt,
      createdBy: typeof by.actor === 'string' ? by.actor : `${by.actor.kind}:${by.actor.id}`, createdAt: now, revokedAt: null,
    };
    const key = publicKey(stored);
    await this.deps.db.write(async (trx) => {
      await this.repo.insert(trx, stored);
      await this.deps.audit.record({ actor: by.actor, ip: by.ip ?? null, action: 'provisioning_key.create', target: `provisioning_key:${key.id}`, after: key }, trx);
    });
    return { key, secret };
  }

  async list(): Promise<ProvisioningKey[]> { return (await this.repo.all()).map(publicKey); }

  async get(id: string): Promise<ProvisioningKey | undefined> {
    const k = await this.repo.get(id);
    return k ? publicKey(k) : undefined;
  }

  /** Revokes a live key (it stops working for the next request); false when it was revoked already. */
  revoke(id: string, by: Requester): Promise<boolean> {
    return this.deps.db.write(async (trx) => {
      const before = await this.repo.get(id, trx);
      if (!before || !await this.repo.revoke(trx, id, this.deps.clock.now())) return false;
      const after = await this.repo.get(id, trx);
      await this.deps.audit.record({
        actor: by.actor, ip: by.ip ?? null, action: 'provisioning_key.revoke', target: `provisioning_key:${id}`,
        before: publicKey(before), after: after && publicKey(after),
      }, trx);
      return true;
    });
  }

  // ---------------------------------------------------------------- requests (MQTT)

  async provision(payload: Buffer, from: { ip: string | null }): Promise<ProvisionAnswer> {
    try {
      return await this.handle(payload, from.ip);
    } catch (err) {
      this.deps.logger?.error({ err }, 'provision request failed with an error');
      return this.refuse('failure', failure(), from.ip, MQTT_ACTOR, null, 'error').catch(() => failure());
    }
  }

  private async handle(payload: Buffer, ip: string | null): Promise<ProvisionAnswer> {
    const req = parseProvisionRequest(payload);
    if (!req.ok) {
      const answer = req.reason === 'missing_key' ? notFound() : failure(req.reason === 'bad_name' ? PROVISION_FAILURE_MSG : req.message);
      return this.refuse(req.reason === 'missing_key' ? 'not_found' : 'failure', answer, ip, MQTT_ACTOR, null, req.reason);
    }
    const k = await this.repo.byKey(req.key);
    if (!k) return this.refuse('not_found', notFound(), ip, MQTT_ACTOR, null, 'unknown_key', { provisionDeviceKey: req.key.slice(0, 64) });
    const actor: Actor = { kind: 'provisioning_key', id: k.id };
    const target = `provisioning_key:${k.id}`;
    if (!(await verifySecret(req.secret, k.secretHash))) return this.refuse('not_found', notFound(), ip, actor, target, 'bad_secret');
    const now = this.deps.clock.now();
    const stale = k.revokedAt !== null ? 'revoked' : k.expiresAt !== null && k.expiresAt <= now ? 'expired'
      : k.maxDevices !== null && k.used >= k.maxDevices ? 'used_up' : null;
    if (stale) return this.refuse('not_found', notFound(), ip, actor, target, stale);
    // Keng's devices log in with id + secret or an access token: a token the firmware chose fits (stored hashed
    // like any), a username/password pair or a certificate of its own does not.
    if (req.credentialsType !== 'ACCESS_TOKEN') {
      const msg = `credentialsType ${req.credentialsType.slice(0, 40)} is not supported by Keng: use ACCESS_TOKEN (or leave credentialsType out)`;
      return this.refuse('failure', failure(msg), ip, actor, target, 'credentials_type');
    }
    const tokenProblem = req.token === null ? null : chosenTokenProblem(req.token);
    if (tokenProblem) return this.refuse('failure', failure(`Access token refused: ${tokenProblem}`), ip, actor, target, 'credentials_type');
    const name = req.deviceName ?? randomDeviceName();
    const id = deviceIdFromName(name);
    if (id === null) return this.refuse('failure', failure(), ip, actor, target, 'bad_name', { deviceName: name.slice(0, 64) });
    // The same answer whether the existing device is in this area or another: nothing about it leaks.
    if (this.deps.devices.getDevice(id)) return this.refuse('failure', failure(), ip, actor, target, 'device_exists', { deviceId: id });
    if (!await this.repo.reserve(k.id, now)) return this.refuse('not_found', notFound(), ip, actor, target, 'used_up');
    let created;
    try {
      created = await this.deps.devices.createDevice({ id, kind: k.kind, name, area: k.area, model: k.model, ...(req.token !== null ? { accessToken: req.token } : {}) });
    } catch (err) {
      await this.repo.release(k.id);
      const code = (err as { code?: string }).code;
      // As ThingsBoard: a taken name or token is a plain FAILURE (whose it is does not leak).
      const reason = code === 'KENG_ERR_DEVICE_EXISTS' ? 'device_exists' : code === 'KENG_ERR_CONFLICT' ? 'token_in_use' : 'error';
      if (reason === 'error') this.deps.logger?.error({ err, deviceId: id, keyId: k.id }, 'provisioned device could not be registered');
      return this.refuse('failure', failure(), ip, actor, target, reason, { deviceId: id });
    }
    const d = created.device;
    this.requests.labels({ result: 'success' }).inc();
    await this.deps.audit.record({
      actor, ip, action: 'device.provision', target: `device:${d.id}`,
      after: { id: d.id, name: d.name, kind: d.kind, area: d.area, model: d.model, provisioningKey: k.id },
    });
    this.deps.logger?.info({ deviceId: d.id, area: d.area, keyId: k.id, ip }, 'device provisioned');
    return { credentialsValue: created.credentials.accessToken, credentialsType: 'ACCESS_TOKEN', status: 'SUCCESS' };
  }

  private async refuse(
    result: Exclude<ProvisionResult, 'success'>, answer: ProvisionAnswer, ip: string | null, actor: Actor | string, target: string | null,
    reason: string, detail: Record<string, unknown> = {},
  ): Promise<ProvisionAnswer> {
    this.requests.labels({ result }).inc();
    await this.deps.audit.record({ actor, ip, action: 'device.provision_failed', target, after: { reason, status: answer.status, ...detail } });
    this.deps.logger?.info({ ip, reason, status: answer.status, target }, 'provision request refused');
    return answer;
  }
}

/** A key as the API shows it (never the secret hash). */
function publicKey(k: StoredKey): ProvisioningKey {
  const { secretHash: _omit, ...rest } = k;
  return rest;
}
