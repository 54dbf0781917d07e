/**
 * Rules on single CAP values that the JSON body (body.ts) and the XML reader
 * (xml-parse.ts) both apply, so that an alert is judged the same way whichever
 * way it came in. References: CAP-v1.2-os §3.2.
 */
import { parseCapTime } from '../../core/time.js';
import type { CapReference } from './model.js';

/** §3.2.1 identifier and sender: "MUST NOT include spaces, commas or restricted characters (< and &)". */
const CAP_ID_RE = /^[^\s,<&]+$/;
export function capIdProblem(s: string): string | undefined {
  return CAP_ID_RE.test(s) ? undefined : 'must not be empty or contain spaces, commas, "<" or "&" (CAP 1.2 §3.2.1)';
}

/** xs:language, the type of §3.2.2 language (RFC 3066 tags): "vi-VN", "en", "es-US". */
export const LANGUAGE_PATTERN = '^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$';
export const LANGUAGE_RE = new RegExp(LANGUAGE_PATTERN);

/** True for a Vietnamese language tag ("vi", "vi-VN"), judged by its primary subtag. */
export function isVietnamese(language: string): boolean {
  return /^vi(?:-|$)/i.test(language);
}

/**
 * Keng area codes: the area registry's form (AREA_CODE_RE of src/devices, a
 * domain part this one does not import; the alert service checks that each
 * code exists in the registry anyway).
 */
export const AREA_CODE_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';
export const AREA_CODE_RE = new RegExp(AREA_CODE_PATTERN);

/**
 * Characters XML 1.0 cannot carry (XML 1.0 §2.2 Char): C0 controls other
 * than tab, newline and carriage return, U+FFFE/U+FFFF and lone surrogates.
 * A JSON string may hold them; an alert holding them could not be written as CAP.
 */
// eslint-disable-next-line no-control-regex
const NON_XML_CHAR_RE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
export function hasNonXmlChar(s: string): boolean {
  return NON_XML_CHAR_RE.test(s);
}

/**
 * One §3.2.1 references entry, "sender,identifier,sent" (entries are
 * space-separated), with sent in CAP's dateTime form; undefined if not.
 */
export function parseReference(s: string): CapReference | undefined {
  const parts = s.split(',');
  if (parts.length !== 3 || capIdProblem(parts[0]!) || capIdProblem(parts[1]!) || Number.isNaN(parseCapTime(parts[2]!))) return undefined;
  return { sender: parts[0]!, identifier: parts[1]!, sent: parts[2]! };
}

export function formatReference(r: CapReference): string {
  return `${r.sender},${r.identifier},${r.sent}`;
}

export const REFERENCE_MESSAGE = 'must be "sender,identifier,sent" with sent as YYYY-MM-DDThh:mm:ss±hh:mm (CAP 1.2 §3.2.1 references)';
