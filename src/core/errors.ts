/**
 * The error-code registry. Every error Keng reports to a caller (HTTP, CLI,
 * MQTT refusal counters) has a stable `KENG_ERR_*` code listed here and
 * documented in `docs/errors.md` (a unit test checks that every code is).
 *
 * HTTP shape (docs/errors.md):
 *   {"error": {"code": "KENG_...", "message": "...", "details"?: ...}}
 */
import createError from '@fastify/error';

export interface KengError extends Error {
  code: string;
  statusCode: number;
  details?: unknown;
}

type Ctor = (...args: unknown[]) => KengError;

function def(code: string, message: string, statusCode: number): Ctor {
  const C = createError(code, message, statusCode);
  return (...args: unknown[]) => new C(...args) as KengError;
}

export const Errors = {
  // 400: validation
  VALIDATION: def('KENG_ERR_VALIDATION', 'Invalid request: %s', 400),
  BAD_TIME: def('KENG_ERR_BAD_TIME', 'Invalid time value for "%s": expected ISO 8601 with offset or epoch milliseconds', 400),
  BAD_WINDOW: def('KENG_ERR_BAD_WINDOW', 'Invalid window "%s": expected a duration such as 30s, 5m, 1h or 1d', 400),
  WINDOW_TOO_LARGE: def('KENG_ERR_WINDOW_TOO_LARGE', 'Too many points requested: %s', 400),
  WEAK_PASSWORD: def('KENG_ERR_WEAK_PASSWORD', 'Password refused: %s', 400),
  NOT_A_SESSION: def('KENG_ERR_NOT_A_SESSION', 'Not a session token: %s', 400),
  CAP_FORBIDDEN_XML: def('KENG_ERR_CAP_FORBIDDEN_XML', 'XML refused: %s', 400),
  // 401/403/404
  UNAUTHENTICATED: def('KENG_ERR_UNAUTHENTICATED', 'Missing or invalid bearer token', 401),
  FORBIDDEN: def('KENG_ERR_FORBIDDEN', 'Not allowed: %s', 403),
  LOGIN_FAILED: def('KENG_ERR_LOGIN_FAILED', 'Wrong username or password', 401),
  ACCOUNT_LOCKED: def('KENG_ERR_ACCOUNT_LOCKED', 'Account locked for a while after repeated failed logins; try again later or ask an administrator to unlock it', 423),
  NOT_FOUND: def('KENG_ERR_NOT_FOUND', '%s not found', 404),
  ROUTE_NOT_FOUND: def('KENG_ERR_ROUTE_NOT_FOUND', 'Route %s %s not found', 404),
  // 409
  CONFLICT: def('KENG_ERR_CONFLICT', 'Conflict: %s', 409),
  AREA_EXISTS: def('KENG_ERR_AREA_EXISTS', 'Area "%s" already exists', 409),
  DEVICE_EXISTS: def('KENG_ERR_DEVICE_EXISTS', 'Device "%s" already exists', 409),
  AREA_HIERARCHY: def('KENG_ERR_AREA_HIERARCHY', 'Invalid area hierarchy: %s', 409),
  AREA_IN_USE: def('KENG_ERR_AREA_IN_USE', 'Area "%s" still has %s', 409),
  USER_EXISTS: def('KENG_ERR_USER_EXISTS', 'User "%s" already exists', 409),
  USERNAME_UNAVAILABLE: def('KENG_ERR_USERNAME_UNAVAILABLE', 'Username "%s" cannot be used; choose another', 409),
  MEDIA_IN_USE: def('KENG_ERR_MEDIA_IN_USE', 'Media "%s" is still used by %s', 409),
  COMMAND_KEY_ACTIVE: def('KENG_ERR_COMMAND_KEY_ACTIVE', 'Command key "%s" is the active key; rotate first, then retire it', 409),
  // 413/422/429
  PAYLOAD_TOO_LARGE: def('KENG_ERR_PAYLOAD_TOO_LARGE', 'Payload too large: %s', 413),
  UNSUPPORTED_MEDIA_TYPE: def('KENG_ERR_UNSUPPORTED_MEDIA_TYPE', 'Unsupported media type: %s', 415),
  RANGE_NOT_SATISFIABLE: def('KENG_ERR_RANGE_NOT_SATISFIABLE', 'Range not satisfiable: %s', 416),
  UNPROCESSABLE: def('KENG_ERR_UNPROCESSABLE', 'Unprocessable: %s', 422),
  CAP_INVALID: def('KENG_ERR_CAP_INVALID', 'Not a valid CAP 1.2 alert: %s', 422),
  MEDIA_NOT_AUDIO: def('KENG_ERR_MEDIA_NOT_AUDIO', 'Not playable audio: %s', 422),
  MEDIA_TOO_LONG: def('KENG_ERR_MEDIA_TOO_LONG', 'Audio too long: %s', 422),
  RATE_LIMITED: def('KENG_ERR_RATE_LIMITED', 'Too many requests: %s', 429),
  // 500/502/503/504
  INTERNAL: def('KENG_ERR_INTERNAL', 'Internal error', 500),
  MODBUS_EXCEPTION: def('KENG_ERR_MODBUS_EXCEPTION', 'The device refused: %s', 502),
  MODBUS_BAD_ANSWER: def('KENG_ERR_MODBUS_BAD_ANSWER', 'The device\'s answer was not understood: %s', 502),
  MODBUS_UNREACHABLE: def('KENG_ERR_MODBUS_UNREACHABLE', 'The device cannot be reached: %s', 503),
  MODBUS_TIMEOUT: def('KENG_ERR_MODBUS_TIMEOUT', 'The device did not answer: %s', 504),
  MODBUS_OUTCOME_UNKNOWN: def('KENG_ERR_MODBUS_OUTCOME_UNKNOWN', 'Outcome of the write unknown: %s', 504),
  NOT_READY: def('KENG_ERR_NOT_READY', 'Service not ready: %s', 503),
  STORE_UNAVAILABLE: def('KENG_ERR_STORE_UNAVAILABLE', 'Telemetry store unavailable: %s', 503),
  TTS_UNAVAILABLE: def('KENG_ERR_TTS_UNAVAILABLE', 'Text-to-speech unavailable: %s', 503),
  MEDIA_TOOL_UNAVAILABLE: def('KENG_ERR_MEDIA_TOOL_UNAVAILABLE', 'Audio checking unavailable: %s', 503),
  MEDIA_BUSY: def('KENG_ERR_MEDIA_BUSY', 'Audio processing is busy: %s', 503),
  MEDIA_FILE_MISSING: def('KENG_ERR_MEDIA_FILE_MISSING', 'The file of media "%s" is not on this node; in cluster mode every node needs the media files (docs/cluster.md)', 503),
  FIRMWARE_FILE_MISSING: def('KENG_ERR_FIRMWARE_FILE_MISSING', 'The file of firmware package "%s" is not on this node; in cluster mode every node needs the package files (docs/cluster.md)', 503),
  QUEUE_FULL: def('KENG_ERR_QUEUE_FULL', 'Telemetry queue is full (%s bytes on disk); readings are refused until the database catches up', 503),
  AUDIT_CHAIN_BROKEN: def('KENG_ERR_AUDIT_CHAIN_BROKEN', 'Audit log chain broken at seq %s: %s', 500),
  AUDIT_KEY: def('KENG_ERR_AUDIT_KEY', 'Audit key: %s', 500),
  SECRETS_KEY: def('KENG_ERR_SECRETS_KEY', 'Cluster secrets: %s', 500),
  // configuration (start-up)
  CONFIG: def('KENG_ERR_CONFIG', 'Invalid setting %s', 500),
  // data directory (server start-up, CLI); never sent over HTTP
  DATA_DIR_IN_USE: def('KENG_ERR_DATA_DIR_IN_USE', 'Data directory %s is in use by another Keng process (%s); stop it, or set KENG_DATA_DIR to another directory', 409),
  BACKUP_DATABASE: def('KENG_ERR_BACKUP_DATABASE', 'The cluster database could not be backed up: %s', 500),
  BACKUP_TARGET_NOT_EMPTY: def('KENG_ERR_BACKUP_TARGET_NOT_EMPTY', 'Backup directory %s exists and is not empty; give a new or empty directory', 409),
  CLUSTER_NOT_EMPTY: def('KENG_ERR_CLUSTER_NOT_EMPTY', 'The cluster database already holds Keng state (%s); `keng cluster import` copies a node into an unused database only', 409),
  NO_STATE: def('KENG_ERR_NO_STATE', 'No Keng state in %s (no %s there); set KENG_DATA_DIR to the server\'s data directory (only the server creates state, on its first start)', 404),
} as const;

/** All registered codes, for documentation checks. */
export const ERROR_CODES: string[] = Object.values(Errors).map((f) => f().code);

/** Registered code → its HTTP status (restoreKengError). */
const STATUS_OF = new Map<string, number>(Object.values(Errors).map((f) => { const e = f(); return [e.code, e.statusCode]; }));

/** An error as it crosses between nodes (cluster mode): code, message and details; the status follows from the code. */
export interface WireError { code: string; message: string; details?: unknown }

export function toWireError(e: KengError): WireError {
  return { code: e.code, message: e.message, ...(e.details !== undefined ? { details: e.details } : {}) };
}

/**
 * The KengError another node reported, answered here as if it were raised here: same code, message
 * and details, the status of the code's registration. Null for anything that is not a registered code
 * (another node's message is input, not trusted to name arbitrary statuses).
 */
export function restoreKengError(w: unknown): KengError | null {
  if (typeof w !== 'object' || w === null) return null;
  const { code, message, details } = w as Partial<WireError>;
  if (typeof code !== 'string' || typeof message !== 'string') return null;
  const statusCode = STATUS_OF.get(code);
  if (statusCode === undefined) return null;
  const e = new Error(message) as KengError;
  e.name = 'KengError';
  e.code = code;
  e.statusCode = statusCode;
  if (details !== undefined) e.details = details;
  return e;
}

/** Attach machine-readable details to an error (rendered as error.details). */
export function withDetails<E extends KengError>(err: E, details: unknown): E {
  err.details = details;
  return err;
}

export function isKengError(e: unknown): e is KengError {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string'
    && String((e as { code: string }).code).startsWith('KENG_');
}
