/**
 * The one error shape (docs/errors.md):
 *   {"error": {"code": "KENG_...", "message": "...", "details"?: ...}}
 * Every error reply goes through `classifyError` + `sendError`, which also
 * counts it in keng_http_errors_total{code}.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { Errors, isKengError, withDetails, type KengError } from '../core/errors.js';
import type { Metrics } from '../core/metrics.js';

export interface ErrorBody { error: { code: string; message: string; details?: unknown } }
export interface ClassifiedError { status: number; body: ErrorBody; /** unexpected: log with stack */ internal: boolean }

/** One failing field of a validation error (details of KENG_ERR_VALIDATION). */
export interface FieldError { in: string; field: string; message: string }

/** Shape of an ajv error as fastify reports it in `err.validation`. */
export interface AjvLikeError {
  keyword: string;
  instancePath: string;
  schemaPath: string;
  params: Record<string, unknown>;
  message?: string;
}

const MAX_FIELD_ERRORS = 50;

function pathToField(instancePath: string, extra?: string): string {
  const parts = instancePath.split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (extra !== undefined) parts.push(extra);
  return parts.join('.');
}

function describe(e: AjvLikeError): { field: string; message: string } {
  const p = e.params;
  switch (e.keyword) {
    case 'required':
      return { field: pathToField(e.instancePath, String(p.missingProperty)), message: 'is required' };
    case 'additionalProperties':
      return { field: pathToField(e.instancePath, String(p.additionalProperty)), message: 'is not a known property' };
    case 'enum':
      return { field: pathToField(e.instancePath), message: `must be one of: ${(p.allowedValues as unknown[]).join(', ')}` };
    default:
      return { field: pathToField(e.instancePath), message: e.message ?? `is invalid (${e.keyword})` };
  }
}

/**
 * Turn ajv errors into one entry per failing field. Alternatives (anyOf, e.g.
 * "an object or null") are collapsed: if the value failed inside a branch
 * (a nested field), those nested errors are reported; otherwise one entry
 * names the accepted types.
 */
export function validationDetails(errors: AjvLikeError[], where: string): FieldError[] {
  const anyOfs = errors.filter((e) => e.keyword === 'anyOf');
  const inBranch = (e: AjvLikeError, a: AjvLikeError): boolean => e !== a && e.schemaPath.startsWith(`${a.schemaPath}/`);
  const out: FieldError[] = [];
  const seen = new Set<string>();
  const push = (f: { field: string; message: string }): void => {
    const key = `${f.field}\u0000${f.message}`;
    if (!seen.has(key) && out.length < MAX_FIELD_ERRORS) { seen.add(key); out.push({ in: where, ...f }); }
  };
  for (const e of errors) {
    if (e.keyword === 'anyOf') {
      const branch = errors.filter((b) => inBranch(b, e));
      const deeper = branch.filter((b) => b.instancePath !== e.instancePath && b.keyword !== 'anyOf');
      if (deeper.length && !anyOfs.some((o) => o !== e && inBranch(o, e))) {
        for (const d of deeper) push(describe(d));
        continue;
      }
      const types = branch.filter((b) => b.instancePath === e.instancePath && b.keyword === 'type').map((b) => String(b.params.type));
      const consts = branch.filter((b) => b.keyword === 'const').map((b) => JSON.stringify(b.params.allowedValue));
      const accepted = [...types, ...consts];
      push({ field: pathToField(e.instancePath), message: accepted.length ? `must be ${accepted.join(' or ')}` : 'has an invalid value' });
      continue;
    }
    if (anyOfs.some((a) => inBranch(e, a))) continue; // reported with its anyOf
    push(describe(e));
  }
  return out;
}

function fieldSummary(details: FieldError[]): string {
  return details.map((d) => `${d.field ? `${d.in}.${d.field}` : d.in} ${d.message}`).join('; ');
}

const BY_STATUS: Record<number, (msg: string) => KengError> = {
  400: (m) => Errors.VALIDATION(m),
  401: () => Errors.UNAUTHENTICATED(),
  403: (m) => Errors.FORBIDDEN(m),
  404: (m) => Errors.NOT_FOUND(m),
  409: (m) => Errors.CONFLICT(m),
  413: (m) => Errors.PAYLOAD_TOO_LARGE(m),
  415: (m) => Errors.UNSUPPORTED_MEDIA_TYPE(m),
  422: (m) => Errors.UNPROCESSABLE(m),
  429: (m) => Errors.RATE_LIMITED(m),
};

function body(e: KengError): ErrorBody {
  const b: ErrorBody = { error: { code: e.code, message: e.message } };
  if (e.details !== undefined) b.error.details = e.details;
  return b;
}

/** Map anything thrown in a request to its status and reply body (pure; unit-tested). */
export function classifyError(err: unknown, ctx: { bodyLimit?: number } = {}): ClassifiedError {
  if (isKengError(err)) {
    const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
    // 5xx a caller can act on: a field device behind Keng refused (502), cannot be reached (503) or did not answer (504).
    if (status >= 400 && (status < 500 || status === 502 || status === 503 || status === 504)) return { status, body: body(err), internal: false };
    return { status: 500, body: body(Errors.INTERNAL()), internal: true };
  }
  const fe = (err ?? {}) as Partial<FastifyError> & { validation?: AjvLikeError[] };
  if (Array.isArray(fe.validation)) {
    const where = fe.validationContext ?? 'request';
    const details = validationDetails(fe.validation, where);
    return { status: 400, body: body(withDetails(Errors.VALIDATION(fieldSummary(details)), details)), internal: false };
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, body: body(Errors.PAYLOAD_TOO_LARGE(ctx.bodyLimit ? `the request body exceeds ${ctx.bodyLimit} bytes` : 'request body too large')), internal: false };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, body: body(Errors.UNSUPPORTED_MEDIA_TYPE('send application/json')), internal: false };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, body: body(Errors.VALIDATION(fe.message ?? 'malformed body')), internal: false };
    default:
      break;
  }
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status >= 400 && status < 500) {
    const make = BY_STATUS[status] ?? BY_STATUS[400]!;
    const e = make(fe.message ?? 'bad request');
    return { status: e.statusCode, body: body(e), internal: false };
  }
  return { status: 500, body: body(Errors.INTERNAL()), internal: true };
}

/** Send an error reply in the one shape and count it. */
export function sendError(req: FastifyRequest, reply: FastifyReply, err: unknown, metrics: Metrics, bodyLimit?: number): FastifyReply {
  const c = classifyError(err, { bodyLimit });
  if (c.internal) req.log.error({ err }, 'request failed');
  else req.log.debug({ code: c.body.error.code, status: c.status }, c.body.error.message);
  metrics.httpErrorsTotal.inc({ code: c.body.error.code });
  if (c.status === 401) reply.header('www-authenticate', 'Bearer realm="keng"');
  return reply.status(c.status).type('application/json; charset=utf-8').send(c.body);
}
