/**
 * CAP 1.2 (OASIS Common Alerting Protocol) for Keng's emergency alerts: the
 * alert model and its JSON body, CAP XML in (safely) and out, the Atom feed
 * aggregators poll, and the geometry of alert areas.
 */
export * from './model.js';
export * from './rules.js';
export * from './body.js';
export * from './geo.js';
export { parseCapXml, MAX_CAP_XML_BYTES, MAX_XML_DEPTH, type ForbiddenReason, type ParsedCap } from './xml-parse.js';
export { XINCLUDE_NAMESPACES } from './xml-tree.js';
export { writeCapXml, type WriteOptions } from './xml-write.js';
export * from './atom.js';
