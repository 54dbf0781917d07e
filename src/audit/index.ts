/**
 * The audit log: `AuditLog.record(...)` for every change, `verifyAuditChain(db)`
 * for `keng audit verify`. Whoever records is given the recorder explicitly
 * (the app passes its AuditLog to the API and the broadcast service).
 */

export { AuditLog, GENESIS_HASH, NOOP_AUDIT, actorString, rowHash, toEntry,
  type Actor, type AuditEntry, type AuditFilter, type AuditInput, type AuditRecorder, type AuditRow, type AuditLogOptions } from './log.js';
export { verifyAuditChain, type ChainReport } from './verify.js';
export { canonicalJson, redact, snapshotJson, REDACTED } from './canonical.js';
