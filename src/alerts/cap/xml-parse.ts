/**
 * A CAP 1.2 XML message (namespace urn:oasis:names:tc:emergency:cap:1.2) read
 * into a CapAlert and the area hints the alert service resolves into
 * loudspeakers. The XML itself is read by xml-tree.ts, which refuses DTDs,
 * entities, processing instructions and XInclude before anything is resolved.
 *
 * Structure follows CAP-v1.2-os §3.2 and CAP-v1.2.xsd: required elements,
 * how often each may appear, the code lists, dateTime form, polygon/circle
 * forms. Element order is not checked (the schema fixes it, but a reader
 * loses nothing by taking a sloppy order; the writer keeps the schema's).
 * Every problem is listed at once in a KENG_ERR_CAP_INVALID (422) whose
 * details are `{field, message}`, `field` the element path ("info.urgency").
 *
 * Several <info> blocks (one per language, §3.2.2): the first whose language
 * is Vietnamese ("vi", "vi-VN") is kept, else the first block. Only the kept
 * block is checked; the others are not read. An <info> without <language> is
 * "en-US" (the schema's default).
 */
import { Errors, withDetails, type KengError } from '../../core/errors.js';
import type { FieldError } from '../../core/schema.js';
import { parseCapTime } from '../../core/time.js';
import { parseCircle, parsePolygon } from './geo.js';
import {
  areaHints, CAP_CATEGORIES, CAP_CERTAINTIES, CAP_DEFAULT_LANGUAGE, CAP_MSG_TYPES, CAP_NAMESPACE, CAP_RESPONSE_TYPES, CAP_SCOPES, CAP_SEVERITIES,
  CAP_STATUSES, CAP_URGENCIES, DEFAULT_REPEAT, KENG_AREA_GEOCODE, KENG_MSG_TYPES, KENG_PARAM, KENG_STATUSES, MAX_REPEAT, MIN_REPEAT, TEXT_LIMITS,
  type AreaHints, type CapAlert, type CapArea, type CapContent, type CapReference, type CapResource, type CapValuePair,
} from './model.js';
import { AREA_CODE_RE, capIdProblem, isVietnamese, LANGUAGE_RE, parseReference, REFERENCE_MESSAGE } from './rules.js';
import { readXmlTree, type XmlNode } from './xml-tree.js';

export { MAX_CAP_XML_BYTES, MAX_XML_DEPTH, type ForbiddenReason } from './xml-tree.js';

export interface ParsedCap {
  alert: CapAlert;
  hints: AreaHints;
  /** How many <info> blocks the message had, and which one was kept (0-based). */
  infoCount: number;
  infoIndex: number;
}

const XMLDSIG_NS = 'http://www.w3.org/2000/09/xmldsig#';
const TIME_MESSAGE = 'must be YYYY-MM-DDThh:mm:ss±hh:mm (CAP 1.2 §3.3.2: an explicit offset, no "Z", no fraction)';

/** How often a child may appear: once, at most once, at least once, any number. */
type Card = '1' | '?' | '+' | '*';

// Children of each CAP container (CAP-v1.2.xsd), in the schema's order.
const ALERT: Record<string, Card> = {
  identifier: '1', sender: '1', sent: '1', status: '1', msgType: '1', source: '?', scope: '1', restriction: '?', addresses: '?',
  code: '*', note: '?', references: '?', incidents: '?', info: '*',
};
const INFO: Record<string, Card> = {
  language: '?', category: '+', event: '1', responseType: '*', urgency: '1', severity: '1', certainty: '1', audience: '?', eventCode: '*',
  effective: '?', onset: '?', expires: '?', senderName: '?', headline: '?', description: '?', instruction: '?', web: '?', contact: '?',
  parameter: '*', resource: '*', area: '*',
};
const RESOURCE: Record<string, Card> = { resourceDesc: '1', mimeType: '1', size: '?', uri: '?', derefUri: '?', digest: '?' };
const AREA: Record<string, Card> = { areaDesc: '1', polygon: '*', circle: '*', geocode: '*', altitude: '?', ceiling: '?' };
const PAIR: Record<string, Card> = { valueName: '1', value: '1' };

const DECIMAL_RE = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;
const ABSOLUTE_URI_RE = /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/;

/**
 * Read a CAP 1.2 message. Throws KENG_ERR_CAP_FORBIDDEN_XML (400),
 * KENG_ERR_VALIDATION (400, not well-formed), KENG_ERR_PAYLOAD_TOO_LARGE
 * (413) or KENG_ERR_CAP_INVALID (422, every problem in details).
 */
export function parseCapXml(input: string | Uint8Array): ParsedCap {
  const root = readXmlTree(input);
  const r = new Reader();
  if (root.name !== 'alert' || root.ns !== CAP_NAMESPACE) {
    r.err('', `the root element must be <alert> in namespace ${CAP_NAMESPACE} (CAP 1.2), not <${root.name}>${root.ns ? ` in ${root.ns}` : ''}`);
    throw r.error();
  }
  const parsed = readAlert(root, r);
  if (r.errors.length > 0 || !parsed) throw r.error();
  return { ...parsed, hints: areaHints(parsed.alert) };
}

/** Collects errors; reads children and values of a container. */
class Reader {
  errors: FieldError[] = [];

  err(field: string, message: string): void {
    this.errors.push({ field, message });
  }

  error(): KengError {
    const shown = this.errors.slice(0, 5).map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join('; ');
    const more = this.errors.length > 5 ? ` (and ${this.errors.length - 5} more)` : '';
    return withDetails(Errors.CAP_INVALID(shown + more), this.errors);
  }

  /** The CAP children of `node` by name, after checking names and counts against `spec`. */
  children(node: XmlNode, path: string, spec: Record<string, Card>, foreignOk = false): Map<string, XmlNode[]> {
    const at = (name: string) => (path ? `${path}.${name}` : name);
    const byName = new Map<string, XmlNode[]>();
    for (const c of node.children) {
      if (c.ns !== CAP_NAMESPACE) {
        // The schema's only wildcard: XML signatures at the end of <alert> (§3.3.4 security note). Not verified, not kept.
        if (!(foreignOk && c.ns === XMLDSIG_NS)) this.err(at(c.name), `is not a CAP 1.2 element (namespace "${c.ns}")`);
        continue;
      }
      if (!Object.hasOwn(spec, c.name)) { this.err(at(c.name), 'is not allowed here (CAP 1.2)'); continue; }
      (byName.get(c.name) ?? byName.set(c.name, []).get(c.name)!).push(c);
    }
    for (const [name, card] of Object.entries(spec)) {
      const n = byName.get(name)?.length ?? 0;
      if (n === 0 && (card === '1' || card === '+')) this.err(at(name), 'is required');
      if (n > 1 && (card === '1' || card === '?')) this.err(at(name), 'must appear only once');
    }
    if (node.text.trim() !== '') this.err(path || node.name, 'must not contain text outside its elements');
    return byName;
  }

  /** Text of a simple element, trimmed; undefined (and an error) if it has child elements. */
  text(node: XmlNode | undefined, field: string): string | undefined {
    if (!node) return undefined;
    if (node.children.length > 0) { this.err(field, 'must hold text, not elements'); return undefined; }
    return node.text.trim();
  }

  /** Required non-empty text (the "is required" of a missing element is reported by children()). */
  required(node: XmlNode | undefined, field: string): string | undefined {
    const t = this.text(node, field);
    if (t === '') this.err(field, 'must not be empty');
    return t || undefined;
  }

  /** Optional text; empty counts as absent. */
  optional(node: XmlNode | undefined, field: string): string | undefined {
    return this.text(node, field) || undefined;
  }

  oneOf<T extends string>(node: XmlNode | undefined, field: string, values: readonly T[]): T | undefined {
    const t = this.text(node, field);
    if (t === undefined) return undefined;
    if (!(values as readonly string[]).includes(t)) { this.err(field, `"${t.slice(0, 40)}" is not one of: ${values.join(', ')}`); return undefined; }
    return t as T;
  }

  time(node: XmlNode | undefined, field: string): number | undefined {
    const t = this.text(node, field);
    if (t === undefined) return undefined;
    const ms = parseCapTime(t);
    if (Number.isNaN(ms)) { this.err(field, `"${t.slice(0, 40)}" ${TIME_MESSAGE}`); return undefined; }
    return ms;
  }

  pair(node: XmlNode, field: string): CapValuePair | undefined {
    const kids = this.children(node, field, PAIR);
    const valueName = this.text(kids.get('valueName')?.[0], `${field}.valueName`);
    const value = this.text(kids.get('value')?.[0], `${field}.value`);
    return valueName === undefined || value === undefined ? undefined : { valueName, value };
  }

  decimal(node: XmlNode | undefined, field: string): number | undefined {
    const t = this.text(node, field);
    if (t === undefined) return undefined;
    if (!DECIMAL_RE.test(t)) { this.err(field, 'must be a decimal number'); return undefined; }
    return Number(t);
  }
}

const all = (m: Map<string, XmlNode[]>, name: string): XmlNode[] => m.get(name) ?? [];
const one = (m: Map<string, XmlNode[]>, name: string): XmlNode | undefined => m.get(name)?.[0];

function readAlert(root: XmlNode, r: Reader): Omit<ParsedCap, 'hints'> | undefined {
  const a = r.children(root, '', ALERT, true);
  const identifier = r.required(one(a, 'identifier'), 'identifier');
  const sender = r.required(one(a, 'sender'), 'sender');
  for (const [field, v] of [['identifier', identifier], ['sender', sender]] as const) {
    const problem = v === undefined ? undefined : capIdProblem(v);
    if (problem) r.err(field, problem);
  }
  const sent = r.time(one(a, 'sent'), 'sent');
  const status = kengSubset(r, r.oneOf(one(a, 'status'), 'status', CAP_STATUSES), 'status', KENG_STATUSES);
  const msgType = kengSubset(r, r.oneOf(one(a, 'msgType'), 'msgType', CAP_MSG_TYPES), 'msgType', KENG_MSG_TYPES);
  const scope = r.oneOf(one(a, 'scope'), 'scope', CAP_SCOPES);
  const restriction = r.optional(one(a, 'restriction'), 'restriction');
  const addresses = r.optional(one(a, 'addresses'), 'addresses');
  // §3.2.1: restriction is "Used when <scope> value is "Restricted"", addresses "Required when <scope> is "Private"".
  if (scope === 'Restricted' && restriction === undefined) r.err('restriction', 'is required when scope is Restricted');
  if (scope === 'Private' && addresses === undefined) r.err('addresses', 'is required when scope is Private');
  const codes = all(a, 'code').map((n, i) => r.text(n, `code[${i}]`)).filter((c): c is string => !!c);
  const references: CapReference[] = [];
  for (const [i, entry] of (r.optional(one(a, 'references'), 'references') ?? '').split(/\s+/).filter(Boolean).entries()) {
    const ref = parseReference(entry);
    if (ref) references.push(ref); else r.err(`references[${i}]`, `"${entry.slice(0, 80)}" ${REFERENCE_MESSAGE}`);
  }

  const infos = all(a, 'info');
  if (infos.length === 0) {
    r.err('info', 'is required: Keng broadcasts the event, urgency, severity, certainty and areas of an <info> block');
    return undefined;
  }
  // Only the kept block is checked, so the others' languages are peeked at without reporting anything.
  const languageOf = (n: XmlNode) => n.children.find((c) => c.ns === CAP_NAMESPACE && c.name === 'language')?.text.trim() || CAP_DEFAULT_LANGUAGE;
  const vi = infos.findIndex((n) => isVietnamese(languageOf(n)));
  const infoIndex = vi >= 0 ? vi : 0;
  const info = readInfo(infos[infoIndex]!, infos.length > 1 ? `info[${infoIndex}]` : 'info', r);

  const source = r.optional(one(a, 'source'), 'source');
  const note = r.optional(one(a, 'note'), 'note');
  const incidents = r.optional(one(a, 'incidents'), 'incidents');
  if (!identifier || !sender || sent === undefined || !status || !msgType || !scope || !info) return undefined;
  const alert: CapAlert = { identifier, sender, sent, status, msgType, scope, codes, references, ...info };
  if (source !== undefined) alert.source = source;
  if (restriction !== undefined) alert.restriction = restriction;
  if (addresses !== undefined) alert.addresses = addresses;
  if (note !== undefined) alert.note = note;
  if (incidents !== undefined) alert.incidents = incidents;
  return { alert, infoCount: infos.length, infoIndex };
}

/** A CAP value Keng does not broadcast (System, Draft, Ack, Error) is named as such, not as a bad value. */
function kengSubset<T extends string>(r: Reader, v: string | undefined, field: string, keng: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!(keng as readonly string[]).includes(v)) { r.err(field, `"${v}" is valid CAP but Keng takes only ${keng.join(', ')}`); return undefined; }
  return v as T;
}

type InfoPart = Omit<CapAlert, 'identifier' | 'sender' | 'sent' | 'status' | 'msgType' | 'scope' | 'codes' | 'references' | 'source' | 'restriction' | 'addresses' | 'note' | 'incidents'>;

function readInfo(node: XmlNode, path: string, r: Reader): InfoPart | undefined {
  const f = (name: string) => `${path}.${name}`;
  const m = r.children(node, path, INFO);
  const language = r.optional(one(m, 'language'), f('language')) ?? CAP_DEFAULT_LANGUAGE;
  if (!LANGUAGE_RE.test(language)) r.err(f('language'), 'must be a language tag such as vi-VN (xs:language)');
  const categories = all(m, 'category').map((n, i) => r.oneOf(n, `${f('category')}[${i}]`, CAP_CATEGORIES));
  const responseTypes = all(m, 'responseType').map((n, i) => r.oneOf(n, `${f('responseType')}[${i}]`, CAP_RESPONSE_TYPES));
  const event = r.required(one(m, 'event'), f('event'));
  const urgency = r.oneOf(one(m, 'urgency'), f('urgency'), CAP_URGENCIES);
  const severity = r.oneOf(one(m, 'severity'), f('severity'), CAP_SEVERITIES);
  const certainty = r.oneOf(one(m, 'certainty'), f('certainty'), CAP_CERTAINTIES);
  const eventCodes = all(m, 'eventCode').map((n, i) => r.pair(n, `${f('eventCode')}[${i}]`));
  const web = r.optional(one(m, 'web'), f('web'));
  // §3.2.2 web: "A full, absolute URI for an HTML page or other text resource".
  if (web !== undefined && !ABSOLUTE_URI_RE.test(web)) r.err(f('web'), 'must be an absolute URI');

  const parameters: CapValuePair[] = [];
  const keng = readKengParameters(all(m, 'parameter'), f('parameter'), r, parameters);
  const resources = all(m, 'resource').map((n, i) => readResource(n, `${f('resource')}[${i}]`, r));
  const areas = all(m, 'area').map((n, i) => readArea(n, `${f('area')}[${i}]`, r));

  const out: InfoPart = {
    language, categories: categories.filter((c) => c !== undefined), event: event ?? '',
    responseTypes: responseTypes.filter((c) => c !== undefined),
    urgency: urgency!, severity: severity!, certainty: certainty!,
    eventCodes: eventCodes.filter((p) => p !== undefined), parameters,
    resources: resources.filter((x) => x !== undefined), areas: areas.filter((x) => x !== undefined),
    repeat: keng.repeat,
  };
  if (keng.content) out.content = keng.content;
  if (web !== undefined) out.web = web;
  for (const k of ['effective', 'onset', 'expires'] as const) {
    const t = r.time(one(m, k), f(k));
    if (t !== undefined) out[k] = t;
  }
  for (const k of ['audience', 'senderName', 'headline', 'description', 'instruction', 'contact'] as const) {
    const t = r.optional(one(m, k), f(k));
    if (t !== undefined) out[k] = t;
  }
  if (!event || !urgency || !severity || !certainty) return undefined;
  return out;
}

/** Keng's own parameters (keng:repeat, keng:mediaId, keng:ttsText) taken out; the others kept in `rest`. */
function readKengParameters(nodes: XmlNode[], path: string, r: Reader, rest: CapValuePair[]): { repeat: number; content?: CapContent } {
  let repeat: number | undefined;
  let content: CapContent | undefined;
  nodes.forEach((n, i) => {
    const field = `${path}[${i}]`;
    const p = r.pair(n, field);
    if (!p) return;
    if (p.valueName === KENG_PARAM.repeat) {
      const v = Number(p.value);
      if (repeat !== undefined) r.err(field, `${KENG_PARAM.repeat} must appear only once`);
      else if (!/^\d+$/.test(p.value) || v < MIN_REPEAT || v > MAX_REPEAT) r.err(field, `${KENG_PARAM.repeat} must be an integer ${MIN_REPEAT}-${MAX_REPEAT}`);
      else repeat = v;
    } else if (p.valueName === KENG_PARAM.mediaId || p.valueName === KENG_PARAM.ttsText) {
      const isMedia = p.valueName === KENG_PARAM.mediaId;
      const max = isMedia ? 128 : TEXT_LIMITS.ttsText;
      if (content !== undefined) r.err(field, `only one of ${KENG_PARAM.mediaId} and ${KENG_PARAM.ttsText} may be given, once`);
      else if (p.value === '' || p.value.length > max) r.err(field, `${p.valueName} must be 1-${max} characters`);
      else content = isMedia ? { mediaId: p.value } : { ttsText: p.value };
    } else {
      rest.push(p);
    }
  });
  return content ? { repeat: repeat ?? DEFAULT_REPEAT, content } : { repeat: repeat ?? DEFAULT_REPEAT };
}

function readResource(node: XmlNode, path: string, r: Reader): CapResource | undefined {
  const m = r.children(node, path, RESOURCE);
  const resourceDesc = r.required(one(m, 'resourceDesc'), `${path}.resourceDesc`);
  const mimeType = r.required(one(m, 'mimeType'), `${path}.mimeType`);
  const size = r.text(one(m, 'size'), `${path}.size`);
  if (size !== undefined && !/^[+-]?\d+$/.test(size)) r.err(`${path}.size`, 'must be an integer (bytes)');
  if (!resourceDesc || !mimeType) return undefined;
  const res: CapResource = { resourceDesc, mimeType };
  if (size !== undefined && /^[+-]?\d+$/.test(size)) res.size = Number(size);
  const uri = r.optional(one(m, 'uri'), `${path}.uri`);
  const digest = r.optional(one(m, 'digest'), `${path}.digest`);
  if (uri !== undefined) res.uri = uri;
  if (digest !== undefined) res.digest = digest;
  return res;
}

function readArea(node: XmlNode, path: string, r: Reader): CapArea | undefined {
  const m = r.children(node, path, AREA);
  const areaDesc = r.required(one(m, 'areaDesc'), `${path}.areaDesc`);
  const area: CapArea = { areaDesc: areaDesc ?? '', areaCodes: [], polygons: [], circles: [], geocodes: [] };
  all(m, 'polygon').forEach((n, i) => {
    const p = parsePolygon(r.text(n, `${path}.polygon[${i}]`) ?? '');
    if (p.ok) area.polygons.push(p.value); else r.err(`${path}.polygon[${i}]`, `${p.message} (CAP 1.2 §3.2.4)`);
  });
  all(m, 'circle').forEach((n, i) => {
    const c = parseCircle(r.text(n, `${path}.circle[${i}]`) ?? '');
    if (c.ok) area.circles.push(c.value); else r.err(`${path}.circle[${i}]`, `${c.message} (CAP 1.2 §3.2.4)`);
  });
  all(m, 'geocode').forEach((n, i) => {
    const g = r.pair(n, `${path}.geocode[${i}]`);
    if (!g) return;
    if (g.valueName !== KENG_AREA_GEOCODE) { area.geocodes.push(g); return; }
    if (!AREA_CODE_RE.test(g.value)) r.err(`${path}.geocode[${i}].value`, `"${g.value.slice(0, 70)}" is not a Keng area code`);
    else if (!area.areaCodes.includes(g.value)) area.areaCodes.push(g.value);
  });
  const altitude = r.decimal(one(m, 'altitude'), `${path}.altitude`);
  const ceiling = r.decimal(one(m, 'ceiling'), `${path}.ceiling`);
  // §3.2.4 ceiling: "MUST NOT be used except in combination with the altitude element".
  if (ceiling !== undefined && altitude === undefined) r.err(`${path}.ceiling`, 'is only allowed together with altitude');
  if (altitude !== undefined) area.altitude = altitude;
  if (ceiling !== undefined) area.ceiling = ceiling;
  return areaDesc ? area : undefined;
}
