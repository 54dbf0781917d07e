/**
 * The CAP 1.2 alert as Keng holds it (CapAlert), the code lists of the
 * standard, and the TypeBox schema of the JSON body of `POST /api/v1/alerts`
 * (checked in body.ts; rules on single values shared with the XML reader are
 * in rules.ts). References: OASIS "Common Alerting Protocol Version 1.2"
 * (CAP-v1.2-os, 1 July 2010), §3.2 data dictionary.
 *
 * One CapAlert carries one <info> block (the one Keng broadcasts: see
 * xml-parse.ts for which one is kept), flattened into the alert. Times are
 * epoch ms; a CAP message's own offsets are not kept (the writer uses the
 * commune's zone). Keng's own additions, what plays and how often, travel in
 * CAP <parameter>s named "keng:*" (KENG_PARAM), so they survive XML.
 */
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { StringEnum } from '../../core/schema.js';
import type { Circle, Polygon } from './geo.js';
import { AREA_CODE_PATTERN, LANGUAGE_PATTERN, REFERENCE_MESSAGE } from './rules.js';

export const CAP_NAMESPACE = 'urn:oasis:names:tc:emergency:cap:1.2';

// §3.2.1 "alert" code lists. Keng issues and broadcasts only the first three
// statuses and message types; System/Draft and Ack/Error are valid CAP that
// Keng refuses (KENG_STATUSES, KENG_MSG_TYPES).
export const CAP_STATUSES = ['Actual', 'Exercise', 'System', 'Test', 'Draft'] as const;
export const KENG_STATUSES = ['Actual', 'Exercise', 'Test'] as const;
export const CAP_MSG_TYPES = ['Alert', 'Update', 'Cancel', 'Ack', 'Error'] as const;
export const KENG_MSG_TYPES = ['Alert', 'Update', 'Cancel'] as const;
export const CAP_SCOPES = ['Public', 'Restricted', 'Private'] as const;
// §3.2.2 "info" code lists.
export const CAP_CATEGORIES = ['Geo', 'Met', 'Safety', 'Security', 'Rescue', 'Fire', 'Health', 'Env', 'Transport', 'Infra', 'CBRNE', 'Other'] as const;
export const CAP_RESPONSE_TYPES = ['Shelter', 'Evacuate', 'Prepare', 'Execute', 'Avoid', 'Monitor', 'Assess', 'AllClear', 'None'] as const;
export const CAP_URGENCIES = ['Immediate', 'Expected', 'Future', 'Past', 'Unknown'] as const;
export const CAP_SEVERITIES = ['Extreme', 'Severe', 'Moderate', 'Minor', 'Unknown'] as const;
export const CAP_CERTAINTIES = ['Observed', 'Likely', 'Possible', 'Unlikely', 'Unknown'] as const;

export type CapStatus = (typeof KENG_STATUSES)[number];
export type CapMsgType = (typeof KENG_MSG_TYPES)[number];
export type CapScope = (typeof CAP_SCOPES)[number];
export type CapCategory = (typeof CAP_CATEGORIES)[number];
export type CapResponseType = (typeof CAP_RESPONSE_TYPES)[number];
export type CapUrgency = (typeof CAP_URGENCIES)[number];
export type CapSeverity = (typeof CAP_SEVERITIES)[number];
export type CapCertainty = (typeof CAP_CERTAINTIES)[number];

/** Keng's alerts are in Vietnamese; CAP's own default for a missing <language> is "en-US" (§3.2.2). */
export const DEFAULT_LANGUAGE = 'vi-VN';
export const CAP_DEFAULT_LANGUAGE = 'en-US';
/** A new alert's category when the body names none: "General emergency and public safety" (§3.2.2). */
export const DEFAULT_CATEGORY: CapCategory = 'Safety';
/** The <geocode> valueName under which an area carries a Keng area code. */
export const KENG_AREA_GEOCODE = 'keng:area';
/** <parameter> valueNames of Keng's additions (a §3.2.2 parameter is a "system-specific additional parameter"). */
export const KENG_PARAM = { repeat: 'keng:repeat', mediaId: 'keng:mediaId', ttsText: 'keng:ttsText' } as const;
export const MIN_REPEAT = 1;
export const MAX_REPEAT = 10;
export const DEFAULT_REPEAT = 1;

/** A valueName/value pair: eventCode, parameter, geocode (§3.2.2, §3.2.4). */
export interface CapValuePair {
  valueName: string;
  value: string;
}

/** §3.2.3 "resource"; derefUri (embedded content) is not kept: Keng never plays or forwards it. */
export interface CapResource {
  resourceDesc: string;
  mimeType: string;
  size?: number;
  uri?: string;
  digest?: string;
}

/** §3.2.4 "area". */
export interface CapArea {
  areaDesc: string;
  /** Keng area codes (geocodes named KENG_AREA_GEOCODE). */
  areaCodes: string[];
  polygons: Polygon[];
  circles: Circle[];
  /** The other geocodes (SAME, FIPS, …), kept as given. */
  geocodes: CapValuePair[];
  /** Feet above mean sea level (§3.2.4; WGS 84 datum). */
  altitude?: number;
  /** Feet; only together with altitude. */
  ceiling?: number;
}

/** One entry of §3.2.1 references: "sender,identifier,sent"; `sent` kept as written, it is part of the name. */
export interface CapReference {
  sender: string;
  identifier: string;
  sent: string;
}

/** What the loudspeakers play: a media library item or text for TTS. Absent: TTS of the alert's text (spokenContent). */
export type CapContent = { mediaId: string } | { ttsText: string };

/** The normalised alert: one <alert> with the one <info> Keng keeps. */
export interface CapAlert {
  // §3.2.1 alert
  identifier: string;
  sender: string;
  /** Epoch ms. */
  sent: number;
  status: CapStatus;
  msgType: CapMsgType;
  source?: string;
  scope: CapScope;
  /** Required when scope is Restricted. */
  restriction?: string;
  /** Space-separated addressees as written in CAP; required when scope is Private. */
  addresses?: string;
  /** <code> elements: special handling codes. */
  codes: string[];
  note?: string;
  references: CapReference[];
  /** Space-separated incident ids as written in CAP. */
  incidents?: string;
  // §3.2.2 info
  language: string;
  categories: CapCategory[];
  event: string;
  responseTypes: CapResponseType[];
  urgency: CapUrgency;
  severity: CapSeverity;
  certainty: CapCertainty;
  audience?: string;
  eventCodes: CapValuePair[];
  effective?: number;
  onset?: number;
  expires?: number;
  senderName?: string;
  headline?: string;
  description?: string;
  instruction?: string;
  web?: string;
  contact?: string;
  /** Parameters other than Keng's own (keng:*). */
  parameters: CapValuePair[];
  resources: CapResource[];
  areas: CapArea[];
  // Keng
  content?: CapContent;
  /** How many times the message plays, 1..10. */
  repeat: number;
}

/** Where an alert applies, for the service to resolve into loudspeakers. */
export interface AreaHints {
  /** Keng area codes, each once, in order of appearance. */
  areaCodes: string[];
  polygons: Polygon[];
  circles: Circle[];
  /** The areaDesc texts (for people; an area without code or geometry is known by it only). */
  descriptions: string[];
}

export function areaHints(alert: Pick<CapAlert, 'areas'>): AreaHints {
  const codes = new Set<string>();
  const hints: AreaHints = { areaCodes: [], polygons: [], circles: [], descriptions: [] };
  for (const a of alert.areas) {
    for (const c of a.areaCodes) codes.add(c);
    hints.polygons.push(...a.polygons);
    hints.circles.push(...a.circles);
    hints.descriptions.push(a.areaDesc);
  }
  hints.areaCodes = [...codes];
  return hints;
}

/** The TTS text played when an alert names no content: headline, description, instruction, as sentences. */
export function spokenText(alert: Pick<CapAlert, 'headline' | 'description' | 'instruction' | 'event'>): string {
  const parts = [alert.headline ?? alert.event, alert.description, alert.instruction]
    .map((s) => s?.trim()).filter((s): s is string => !!s);
  // A pause between parts: espeak-ng reads "Lũ lớn Sơ tán ngay" as one run-on sentence.
  return parts.map((s, i) => (i < parts.length - 1 && !/[.!?…:;]$/.test(s) ? `${s}.` : s)).join(' ');
}

/** What plays: the alert's content, else TTS of its text. */
export function spokenContent(alert: Pick<CapAlert, 'content' | 'headline' | 'description' | 'instruction' | 'event'>): CapContent {
  return alert.content ?? { ttsText: spokenText(alert) };
}


// ---------------------------------------------------------------- JSON body

/**
 * Text lengths. headline: §3.2.2 "SHOULD be less than 160 characters" (kept
 * as a limit for new alerts: it is what SMS and screens show). description and
 * instruction are bounded so that the default TTS text (headline, description,
 * instruction) stays under the 5000 characters the TTS engine takes
 * (TTS_MAX_TEXT of src/media).
 */
export const TEXT_LIMITS = { event: 200, headline: 160, description: 3000, instruction: 1500, senderName: 200, contact: 500, note: 1000, restriction: 500, addresses: 2000, ttsText: 5000 } as const;

const text = (max: number, description: string) => Type.String({
  minLength: 1, maxLength: max, pattern: '\\S', description, 'x-message': `must be 1-${max} characters, not only spaces`,
});
const TIME_MESSAGE = 'expected ISO 8601 with offset (e.g. 2026-08-01T18:00:00+07:00) or epoch milliseconds';
const time = (description: string) => Type.Union([Type.String(), Type.Integer()], { description, 'x-message': TIME_MESSAGE });
const oneOf = (values: readonly string[]) => `must be one of: ${values.join(', ')}`;
const echoed = (description: string) => Type.Optional(Type.Unknown({ readOnly: true, description: `${description} (read-only, ignored on input)` }));

const CONTENT_SHAPE = 'exactly one of {"mediaId"} or {"ttsText"}';
export const AlertContentSchema = Type.Object({
  mediaId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'A media library item', 'x-message': 'must be a media id' })),
  ttsText: Type.Optional(Type.String({
    maxLength: TEXT_LIMITS.ttsText, pattern: '\\S', description: 'Vietnamese text read by the TTS engine', 'x-message': `must be 1-${TEXT_LIMITS.ttsText} characters`,
  })),
}, {
  additionalProperties: false, minProperties: 1, maxProperties: 1,
  description: 'What the loudspeakers play; default: TTS of headline, description and instruction',
  'x-message': { type: `required: ${CONTENT_SHAPE}`, additionalProperties: CONTENT_SHAPE, default: CONTENT_SHAPE },
});

/**
 * `POST /api/v1/alerts`: the CAP fields a commune sets. identifier, sender
 * and sent are the service's (a client echoing them from a GET is ignored).
 * Cross-field rules (times, scope) are in body.ts.
 */
export const AlertBodySchema = Type.Object({
  status: StringEnum(KENG_STATUSES, { description: 'CAP status: Actual (real), Exercise, Test', 'x-message': oneOf(KENG_STATUSES) }),
  msgType: StringEnum(KENG_MSG_TYPES, { description: 'CAP msgType; Update and Cancel name the earlier alert in references', 'x-message': oneOf(KENG_MSG_TYPES) }),
  scope: Type.Optional(StringEnum(CAP_SCOPES, { default: 'Public', description: 'CAP scope; Restricted needs restriction, Private needs addresses', 'x-message': oneOf(CAP_SCOPES) })),
  restriction: Type.Optional(text(TEXT_LIMITS.restriction, 'Who may see a Restricted alert')),
  addresses: Type.Optional(text(TEXT_LIMITS.addresses, 'Addressees of a Private alert, space-separated (CAP addresses)')),
  category: Type.Optional(Type.Array(StringEnum(CAP_CATEGORIES, { 'x-message': oneOf(CAP_CATEGORIES) }), {
    minItems: 1, maxItems: CAP_CATEGORIES.length, uniqueItems: true, default: [DEFAULT_CATEGORY],
    description: 'CAP categories, e.g. ["Met"] for a storm or flood', 'x-message': 'must be a list of distinct CAP categories',
  })),
  event: text(TEXT_LIMITS.event, 'The kind of event, e.g. "Lũ quét"'),
  responseType: Type.Optional(Type.Array(StringEnum(CAP_RESPONSE_TYPES, { 'x-message': oneOf(CAP_RESPONSE_TYPES) }), {
    maxItems: CAP_RESPONSE_TYPES.length, uniqueItems: true, description: 'What people should do, e.g. ["Evacuate"]',
    'x-message': 'must be a list of distinct CAP response types',
  })),
  urgency: StringEnum(CAP_URGENCIES, { 'x-message': oneOf(CAP_URGENCIES) }),
  severity: StringEnum(CAP_SEVERITIES, { 'x-message': oneOf(CAP_SEVERITIES) }),
  certainty: StringEnum(CAP_CERTAINTIES, { 'x-message': oneOf(CAP_CERTAINTIES) }),
  senderName: Type.Optional(text(TEXT_LIMITS.senderName, 'The issuing office, for people, e.g. "UBND xã Tân Lập"')),
  headline: text(TEXT_LIMITS.headline, 'Short title, under 160 characters'),
  description: Type.Optional(text(TEXT_LIMITS.description, 'What is happening')),
  instruction: Type.Optional(text(TEXT_LIMITS.instruction, 'What people should do')),
  web: Type.Optional(Type.String({
    maxLength: 2048, pattern: '^[Hh][Tt][Tt][Pp][Ss]?://[^\\s]+$', description: 'Page with more information (absolute URL)',
    'x-message': 'must be an absolute http:// or https:// URL',
  })),
  contact: Type.Optional(text(TEXT_LIMITS.contact, 'Who to call')),
  note: Type.Optional(text(TEXT_LIMITS.note, 'CAP note (e.g. why an alert is cancelled)')),
  areas: Type.Array(Type.String({ pattern: AREA_CODE_PATTERN, 'x-message': 'not a valid area code' }), {
    minItems: 1, maxItems: 1000, uniqueItems: true, description: 'Keng area codes; an area includes its villages',
    'x-message': 'must be a list of 1-1000 distinct area codes',
  }),
  effective: Type.Optional(time('When the alert takes effect; default: when it is sent')),
  onset: Type.Optional(time('Expected start of the hazard')),
  expires: time('When the alert ends; after now and after effective'),
  language: Type.Optional(Type.String({
    pattern: LANGUAGE_PATTERN, maxLength: 35, default: DEFAULT_LANGUAGE, description: 'Language tag of the text', 'x-message': 'must be a language tag such as vi-VN',
  })),
  content: Type.Optional(AlertContentSchema),
  repeat: Type.Optional(Type.Integer({
    minimum: MIN_REPEAT, maximum: MAX_REPEAT, default: DEFAULT_REPEAT, description: 'How many times the message plays',
    'x-message': `must be an integer ${MIN_REPEAT}-${MAX_REPEAT}`,
  })),
  references: Type.Optional(Type.Array(Type.String({ maxLength: 512, 'x-message': REFERENCE_MESSAGE }), {
    maxItems: 100, description: 'Earlier alerts this one updates or cancels, each "sender,identifier,sent"', 'x-message': 'must be a list of references',
  })),
  identifier: echoed('CAP identifier'),
  sender: echoed('CAP sender'),
  sent: echoed('When the alert was sent'),
}, {
  additionalProperties: false,
  description: 'An emergency alert (CAP 1.2 fields); played on the loudspeakers of the areas once approved',
  'x-message': { type: 'must be a JSON object' },
});
export type AlertBody = Static<typeof AlertBodySchema>;

/** Compiled once; `Type()` is the very schema object the route publishes. */
export const AlertBodyShape = Compile(AlertBodySchema);
