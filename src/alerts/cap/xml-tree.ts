/**
 * Untrusted XML in, a plain element tree out, with everything dangerous in
 * XML refused before it can act. CAP messages come from outside (upstream
 * warning centres, operators' tools), so the XML reader is an attack surface:
 * external entities read files and reach hosts (XXE, SSRF), nested entities
 * exhaust memory ("billion laughs"), XInclude pulls in documents.
 *
 * saxes (the strict parser used here) resolves nothing: its source (saxes.js
 * 6.0.0) requires only the `xmlchars` character tables, never `fs`, `http` or
 * `net`; it keeps a DOCTYPE's internal subset as text for the `doctype` event
 * without interpreting any declaration in it; and it expands only the five
 * predefined entities and character references (`ENTITIES` is created from
 * XML_ENTITIES and nobody adds to it), failing with "undefined entity." on any
 * other. On top of that, refused outright (KENG_ERR_CAP_FORBIDDEN_XML,
 * `details.reason`), because CAP needs none of them:
 *   - any DOCTYPE, even without declarations (`doctype`), with an ENTITY
 *     declaration (`entity-declaration`) or a parameter entity (`parameter-entity`);
 *   - a reference to an entity other than amp, lt, gt, quot, apos (`entity-reference`);
 *   - a processing instruction other than the XML declaration (`processing-instruction`);
 *   - an element or attribute in an XInclude namespace (`xinclude`);
 *   - nesting deeper than MAX_XML_DEPTH (`too-deep`; CAP itself is 5 deep).
 * Input over MAX_CAP_XML_BYTES is refused before parsing (413), input that is
 * not UTF-8 or not well-formed is a 400 KENG_ERR_VALIDATION.
 */
import { Buffer } from 'node:buffer';
import { SaxesParser } from 'saxes';
import { Errors, withDetails, type KengError } from '../../core/errors.js';

/** Largest CAP message read: real ones are a few KiB; a polygon of 5,000 points is ~120 KiB. */
export const MAX_CAP_XML_BYTES = 256 * 1024;
/** Deepest nesting read: CAP is alert/info/area/geocode/value (5), an XML signature ~8. */
export const MAX_XML_DEPTH = 16;
/** XInclude 1.0 and the namespace of its 2003 draft (libxml2 still honours both). */
export const XINCLUDE_NAMESPACES: readonly string[] = ['http://www.w3.org/2001/XInclude', 'http://www.w3.org/2003/XInclude'];

export type ForbiddenReason = 'doctype' | 'entity-declaration' | 'parameter-entity' | 'entity-reference' | 'processing-instruction' | 'xinclude' | 'too-deep';

export interface XmlNode {
  /** Local name. */
  name: string;
  /** Namespace URI ('' for none). */
  ns: string;
  children: XmlNode[];
  /** Character data directly inside the element (entities and CDATA resolved). */
  text: string;
  line: number;
}

export function forbiddenXml(reason: ForbiddenReason, message: string): KengError {
  return withDetails(Errors.CAP_FORBIDDEN_XML(message), { reason });
}

function notWellFormed(message: string): KengError {
  return withDetails(Errors.VALIDATION(`not well-formed XML: ${message}`), [{ in: 'body', field: '', message }]);
}

/** Decode and size-check: a string as it is, bytes as strict UTF-8 (a leading BOM dropped either way). */
function decode(input: string | Uint8Array): string {
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.byteLength;
  if (size > MAX_CAP_XML_BYTES) {
    throw withDetails(Errors.PAYLOAD_TOO_LARGE(`CAP XML of ${size} bytes; the limit is ${MAX_CAP_XML_BYTES}`), { size, limit: MAX_CAP_XML_BYTES });
  }
  if (typeof input === 'string') return input.replace(/^\uFEFF/, '');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(input);
  } catch {
    throw notWellFormed('not UTF-8');
  }
}

/**
 * Parse untrusted XML into a tree, or throw: KENG_ERR_CAP_FORBIDDEN_XML (400),
 * KENG_ERR_PAYLOAD_TOO_LARGE (413), KENG_ERR_VALIDATION (400, not well-formed).
 * Handlers throw to stop the parser at the first refused construct: saxes
 * calls them synchronously from write(), so nothing after it is read.
 */
export function readXmlTree(input: string | Uint8Array): XmlNode {
  const xml = decode(input);
  const parser = new SaxesParser({ xmlns: true, position: true });
  const stack: XmlNode[] = [];
  let root: XmlNode | undefined;

  parser.on('xmldecl', (decl) => {
    // The text is already decoded as UTF-8 (or given as a string); another declared encoding would be misread.
    if (decl.encoding !== undefined && !/^utf-?8$/i.test(decl.encoding)) throw notWellFormed(`encoding "${decl.encoding}" is not supported; send UTF-8`);
  });
  parser.on('doctype', (doctype) => {
    if (/<!ENTITY\s+%/.test(doctype) || /%[A-Za-z_:][\w.:-]*;/.test(doctype)) throw forbiddenXml('parameter-entity', 'parameter entities are not accepted');
    if (/<!ENTITY/.test(doctype)) throw forbiddenXml('entity-declaration', 'entity declarations are not accepted');
    throw forbiddenXml('doctype', 'a DOCTYPE is not accepted in CAP messages');
  });
  parser.on('processinginstruction', (pi) => {
    throw forbiddenXml('processing-instruction', `processing instruction <?${pi.target.slice(0, 40)}?> is not accepted`);
  });
  parser.on('opentag', (tag) => {
    if (XINCLUDE_NAMESPACES.includes(tag.uri) || Object.values(tag.attributes).some((a) => XINCLUDE_NAMESPACES.includes(a.uri))) {
      throw forbiddenXml('xinclude', 'XInclude is not accepted');
    }
    if (stack.length >= MAX_XML_DEPTH) throw forbiddenXml('too-deep', `elements nested deeper than ${MAX_XML_DEPTH} levels`);
    const node: XmlNode = { name: tag.local, ns: tag.uri, children: [], text: '', line: parser.line };
    if (stack.length > 0) stack[stack.length - 1]!.children.push(node);
    else root = node;
    stack.push(node);
  });
  parser.on('closetag', () => { stack.pop(); });
  const addText = (t: string) => { if (stack.length > 0) stack[stack.length - 1]!.text += t; };
  parser.on('text', addText);
  parser.on('cdata', addText);
  parser.on('error', (e) => {
    // saxes' wording for a reference to an entity it does not know (parseEntity in saxes.js).
    if (/undefined entity\.$/.test(e.message)) throw forbiddenXml('entity-reference', `only the predefined entities are accepted (${e.message})`);
    throw notWellFormed(e.message);
  });

  parser.write(xml).close();
  if (!root) throw notWellFormed('no root element');
  return root;
}
