/**
 * The JSON path: a `POST /api/v1/alerts` body (AlertBodySchema, model.ts)
 * checked and turned into a CapAlert, and a CapAlert shown as JSON in the
 * same shape (plus identifier, sender, sent).
 *
 * Validation never throws on bad input: it returns every field error at once
 * (as the schedule bodies do), and `alertBodyError` makes the standard 400
 * KENG_ERR_VALIDATION of them. Times are read as the rest of the API reads
 * them (ISO 8601 with offset or epoch ms, core/time parseTime) and cut to
 * whole seconds, the only precision CAP can carry (§3.3.2).
 */
import { Errors, withDetails, type KengError } from '../../core/errors.js';
import { shapeErrors, type FieldError } from '../../core/schema.js';
import { formatTime, parseTime } from '../../core/time.js';
import {
  AlertBodyShape, DEFAULT_CATEGORY, DEFAULT_LANGUAGE, DEFAULT_REPEAT, type AlertBody, type CapAlert, type CapArea,
  type CapReference,
} from './model.js';
import { formatReference, hasNonXmlChar, parseReference, REFERENCE_MESSAGE } from './rules.js';

export type { FieldError };
export type Validation<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] };

/** A validated body: a CapAlert but for what the service assigns when it issues it. */
export type AlertDraft = Omit<CapAlert, 'identifier' | 'sender' | 'sent'>;

export interface AlertBodyOptions {
  /** Current time, epoch ms (from the injected Clock): expires must be after it. */
  now: number;
  /** Name of an area for its CAP areaDesc (the registry's name); the code itself when absent. */
  areaName?: (code: string) => string | undefined;
}

/**
 * The CapAlert fields the JSON form carries as they are (toAlertJson copies them);
 * picked from CapAlert so that the two cannot drift apart.
 */
type CopiedFields = 'identifier' | 'sender' | 'status' | 'msgType' | 'scope' | 'restriction' | 'addresses' | 'event'
  | 'urgency' | 'severity' | 'certainty' | 'senderName' | 'headline' | 'description' | 'instruction' | 'web' | 'contact'
  | 'note' | 'language' | 'content' | 'repeat';

/** The JSON form of an alert: the body's fields, with times in `tz`. */
export interface AlertJson extends Pick<CapAlert, CopiedFields> {
  sent: string;
  category: CapAlert['categories'];
  responseType?: CapAlert['responseTypes'];
  areas: string[];
  effective?: string;
  onset?: string;
  expires?: string;
  references?: string[];
}

const TEXT_FIELDS = ['restriction', 'addresses', 'event', 'senderName', 'headline', 'description', 'instruction', 'contact', 'note'] as const;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Check a `POST /api/v1/alerts` body; all errors at once. */
export function validateAlertBody(input: unknown, opts: AlertBodyOptions): Validation<AlertDraft> {
  const errors = shapeErrors(AlertBodyShape, input);
  if (!isObject(input)) return { ok: false, errors };
  const body = input as AlertBody;
  const misshapen = new Set(errors.map((e) => /^[^.[]*/.exec(e.field)![0]));
  const fits = (k: keyof AlertBody) => body[k] !== undefined && !misshapen.has(k);
  const err = (field: string, message: string) => { errors.push({ field, message }); };

  // Text JSON can hold but XML cannot (the alert must be writable as CAP).
  for (const k of TEXT_FIELDS) if (fits(k) && hasNonXmlChar(body[k]!)) err(k, 'contains a control character that CAP (XML) cannot carry');
  if (fits('content') && 'ttsText' in body.content! && hasNonXmlChar(body.content.ttsText!)) {
    err('content.ttsText', 'contains a control character that CAP (XML) cannot carry');
  }

  const readTime = (k: 'effective' | 'onset' | 'expires'): number | undefined => {
    if (!fits(k)) return undefined;
    try {
      return Math.floor(parseTime(body[k]!, k) / 1000) * 1000;
    } catch {
      err(k, 'expected ISO 8601 with offset (e.g. 2026-08-01T18:00:00+07:00) or epoch milliseconds');
      return undefined;
    }
  };
  const effective = readTime('effective');
  const onset = readTime('onset');
  const expires = readTime('expires');
  if (expires !== undefined && expires <= opts.now) err('expires', 'is in the past');
  if (expires !== undefined && effective !== undefined && expires <= effective) err('expires', 'must be after effective');

  // §3.2.1: restriction "Used when <scope> value is "Restricted"", addresses "Required when <scope> is "Private"".
  const scope = fits('scope') ? body.scope! : 'Public';
  if (!misshapen.has('scope')) {
    if (scope === 'Restricted' && body.restriction === undefined) err('restriction', 'is required when scope is Restricted');
    if (scope !== 'Restricted' && body.restriction !== undefined) err('restriction', 'is only for scope Restricted');
    if (scope === 'Private' && body.addresses === undefined) err('addresses', 'is required when scope is Private');
  }

  const references: CapReference[] = [];
  if (fits('references')) {
    body.references!.forEach((s, i) => {
      const r = parseReference(s.trim());
      if (r) references.push(r); else err(`references[${i}]`, REFERENCE_MESSAGE);
    });
  }

  if (errors.length > 0) return { ok: false, errors };

  const trimmed = (k: (typeof TEXT_FIELDS)[number]) => body[k]?.trim();
  const draft: AlertDraft = {
    status: body.status, msgType: body.msgType, scope, codes: [], references,
    language: body.language ?? DEFAULT_LANGUAGE,
    categories: body.category ?? [DEFAULT_CATEGORY],
    event: trimmed('event')!,
    responseTypes: body.responseType ?? [],
    urgency: body.urgency, severity: body.severity, certainty: body.certainty,
    eventCodes: [], parameters: [], resources: [],
    headline: trimmed('headline'),
    areas: body.areas.map((code): CapArea => ({
      areaDesc: opts.areaName?.(code) ?? code, areaCodes: [code], polygons: [], circles: [], geocodes: [],
    })),
    repeat: body.repeat ?? DEFAULT_REPEAT,
  };
  for (const k of ['restriction', 'addresses', 'senderName', 'description', 'instruction', 'contact', 'note'] as const) {
    const v = trimmed(k);
    if (v !== undefined) draft[k] = v;
  }
  if (body.web !== undefined) draft.web = body.web;
  if (effective !== undefined) draft.effective = effective;
  if (onset !== undefined) draft.onset = onset;
  if (expires !== undefined) draft.expires = expires;
  if (body.content !== undefined) {
    draft.content = 'mediaId' in body.content ? { mediaId: body.content.mediaId! } : { ttsText: body.content.ttsText!.trim() };
  }
  return { ok: true, value: draft };
}

/** Give a validated draft the identity the service assigns: identifier, sender (CAP §3.2.1), sent (epoch ms, cut to seconds). */
export function newCapAlert(draft: AlertDraft, meta: { identifier: string; sender: string; sent: number }): CapAlert {
  return { ...draft, identifier: meta.identifier, sender: meta.sender, sent: Math.floor(meta.sent / 1000) * 1000 };
}

/** The 400 error for a body's field errors (details = the list). */
export function alertBodyError(errors: FieldError[]): KengError {
  const summary = errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join('; ');
  return withDetails(Errors.VALIDATION(summary), errors);
}

/** An alert as JSON, times as ISO 8601 in `tz` (config.tz). Area geometry and other CAP extras are in the XML form. */
export function toAlertJson(a: CapAlert, tz: string): AlertJson {
  const t = (ms: number | undefined) => (ms === undefined ? undefined : formatTime(ms, tz));
  const out: AlertJson = {
    identifier: a.identifier, sender: a.sender, sent: formatTime(a.sent, tz),
    status: a.status, msgType: a.msgType, scope: a.scope,
    category: [...a.categories], event: a.event,
    urgency: a.urgency, severity: a.severity, certainty: a.certainty,
    areas: [...new Set(a.areas.flatMap((x) => x.areaCodes))],
    language: a.language, repeat: a.repeat,
  };
  const opt = <K extends keyof AlertJson>(k: K, v: AlertJson[K] | undefined) => { if (v !== undefined) out[k] = v; };
  opt('restriction', a.restriction);
  opt('addresses', a.addresses);
  if (a.responseTypes.length > 0) out.responseType = [...a.responseTypes];
  opt('senderName', a.senderName);
  opt('headline', a.headline);
  opt('description', a.description);
  opt('instruction', a.instruction);
  opt('web', a.web);
  opt('contact', a.contact);
  opt('note', a.note);
  opt('effective', t(a.effective));
  opt('onset', t(a.onset));
  opt('expires', t(a.expires));
  if (a.content) out.content = { ...a.content };
  if (a.references.length > 0) out.references = a.references.map(formatReference);
  return out;
}
