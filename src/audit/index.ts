/**
 * The audit log: `AuditLog.record(...)` for every change, `verifyAuditChain(db, {key, anchors})`
 * for `keng audit verify`, `AuditChain` (the server's component) for the key and the anchors.
 * Whoever records is given the recorder explicitly (the app passes its AuditLog to the API and
 * the broadcast service). docs/audit.md: the chain, the key, the anchors, what each catches.
 */

export { AuditLog, NOOP_AUDIT, actorString, chainHead, toEntry,
  type Actor, type AuditEntry, type AuditFilter, type AuditInput, type AuditRecorder, type AuditLogOptions } from './log.js';
export { CHAIN_KEYED_ACTION, GENESIS_HASH, keyedRowHash, rowHash, type AuditRow } from './chain.js';
export { verifyAuditChain, verifyAuditChainIn, type ChainReport, type ChainSummary, type FailureKind, type VerifyOptions } from './verify.js';
export { canonicalJson, redact, snapshotJson, REDACTED } from './canonical.js';
export { AUDIT_KEY_FILE, auditKeyId, auditKeyLocation, createAuditKey, decodeAuditKey, makeAuditKey, readAuditKey,
  type AuditKey, type AuditKeySettings } from './key.js';
export { AUDIT_ANCHORS_FILE, AUDIT_CLUSTER_ANCHORS_FILE, anchorFiles, anchorSignatureOk, appendAnchor, parseAnchorLine, readAnchorFile, readAnchorFiles, signAnchor,
  type AuditAnchor, type ChainHead, type LocatedAnchor } from './anchor.js';
export { AuditChain, type AuditChainOptions, type AuditChainSettings } from './keeper.js';
export { AUDIT_PG_MIGRATIONS } from './pg-schema.js';
