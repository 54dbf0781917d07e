/**
 * A CapAlert written as a CAP 1.2 message, valid against the OASIS schema
 * CAP-v1.2.xsd: its elements are a sequence, so they are written in the
 * schema's order (§3.4), whatever order the alert was read in.
 *
 * One <info> block (the alert's), one <area> per CapArea with its polygons,
 * circles, then geocodes: the Keng area codes as valueName "keng:area", then
 * the others as they came. Keng's repeat and content go in <parameter>s
 * (model.ts KENG_PARAM). Times are written in `tz` in CAP's form (core/time
 * formatCapTime: whole seconds, UTC as "-00:00", §3.3.2).
 */
import { create } from 'xmlbuilder2';
import { DEFAULT_TIME_ZONE, formatCapTime } from '../../core/time.js';
import { formatCircle, formatDecimal, formatPolygon } from './geo.js';
import { CAP_NAMESPACE, KENG_AREA_GEOCODE, KENG_PARAM, type CapAlert, type CapArea, type CapValuePair } from './model.js';
import { formatReference, hasNonXmlChar } from './rules.js';

/** xmlbuilder2's node type (its index does not export the name). */
type XMLBuilder = ReturnType<typeof create>;

export interface WriteOptions {
  /** Zone the times are written in; default Asia/Ho_Chi_Minh (config.tz). */
  tz?: string;
  /** Indent the output (default true: people read these files). */
  pretty?: boolean;
}

/** CAP 1.2 XML of an alert (UTF-8, with XML declaration). */
export function writeCapXml(alert: CapAlert, opts: WriteOptions = {}): string {
  const tz = opts.tz ?? DEFAULT_TIME_ZONE;
  const doc = create({ version: '1.0', encoding: 'UTF-8' });
  // Children take the parent's default namespace (xmlbuilder2 inherits it), so every element is a CAP element.
  const root = doc.ele(CAP_NAMESPACE, 'alert');
  const put = (parent: XMLBuilder, name: string, value: string | number | undefined): void => {
    if (value === undefined || value === '') return;
    const s = String(value);
    // JSON and XML input are both checked for these; an alert built otherwise must not yield broken XML.
    if (hasNonXmlChar(s)) throw new Error(`CAP ${name} holds a character XML 1.0 cannot carry`);
    parent.ele(name).txt(s);
  };
  const pair = (parent: XMLBuilder, name: string, p: CapValuePair): void => {
    const el = parent.ele(name);
    put(el, 'valueName', p.valueName);
    // <value> is required even when empty.
    if (p.value === '') el.ele('value'); else put(el, 'value', p.value);
  };

  put(root, 'identifier', alert.identifier);
  put(root, 'sender', alert.sender);
  put(root, 'sent', formatCapTime(alert.sent, tz));
  put(root, 'status', alert.status);
  put(root, 'msgType', alert.msgType);
  put(root, 'source', alert.source);
  put(root, 'scope', alert.scope);
  put(root, 'restriction', alert.restriction);
  put(root, 'addresses', alert.addresses);
  for (const c of alert.codes) put(root, 'code', c);
  put(root, 'note', alert.note);
  if (alert.references.length > 0) put(root, 'references', alert.references.map(formatReference).join(' '));
  put(root, 'incidents', alert.incidents);

  const info = root.ele('info');
  put(info, 'language', alert.language);
  for (const c of alert.categories) put(info, 'category', c);
  put(info, 'event', alert.event);
  for (const r of alert.responseTypes) put(info, 'responseType', r);
  put(info, 'urgency', alert.urgency);
  put(info, 'severity', alert.severity);
  put(info, 'certainty', alert.certainty);
  put(info, 'audience', alert.audience);
  for (const e of alert.eventCodes) pair(info, 'eventCode', e);
  for (const k of ['effective', 'onset', 'expires'] as const) {
    const ms = alert[k];
    if (ms !== undefined) put(info, k, formatCapTime(ms, tz));
  }
  for (const k of ['senderName', 'headline', 'description', 'instruction', 'web', 'contact'] as const) put(info, k, alert[k]);
  for (const p of alert.parameters) pair(info, 'parameter', p);
  pair(info, 'parameter', { valueName: KENG_PARAM.repeat, value: String(alert.repeat) });
  if (alert.content) {
    pair(info, 'parameter', 'mediaId' in alert.content
      ? { valueName: KENG_PARAM.mediaId, value: alert.content.mediaId }
      : { valueName: KENG_PARAM.ttsText, value: alert.content.ttsText });
  }
  for (const r of alert.resources) {
    const el = info.ele('resource');
    put(el, 'resourceDesc', r.resourceDesc);
    put(el, 'mimeType', r.mimeType);
    if (r.size !== undefined) put(el, 'size', String(Math.trunc(r.size)));
    put(el, 'uri', r.uri);
    put(el, 'digest', r.digest);
  }
  for (const a of alert.areas) writeArea(info.ele('area'), a, put, pair);

  return doc.end({ prettyPrint: opts.pretty ?? true });
}

function writeArea(
  el: XMLBuilder, a: CapArea,
  put: (parent: XMLBuilder, name: string, value: string | undefined) => void,
  pair: (parent: XMLBuilder, name: string, p: CapValuePair) => void,
): void {
  put(el, 'areaDesc', a.areaDesc);
  for (const p of a.polygons) put(el, 'polygon', formatPolygon(p));
  for (const c of a.circles) put(el, 'circle', formatCircle(c));
  for (const code of a.areaCodes) pair(el, 'geocode', { valueName: KENG_AREA_GEOCODE, value: code });
  for (const g of a.geocodes) pair(el, 'geocode', g);
  if (a.altitude !== undefined) put(el, 'altitude', formatDecimal(a.altitude));
  if (a.ceiling !== undefined) put(el, 'ceiling', formatDecimal(a.ceiling));
}
