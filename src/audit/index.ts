/**
 * The audit log: `AuditLog.record(...)` for every change, `verifyAuditChain(db)`
 * for `keng audit verify`. Route plugins that only see the RouteContext find
 * the recorder with `auditFor(ctx.registry)` (bound by installAccounts).
 */
import { NOOP_AUDIT, type AuditRecorder } from './log.js';

export { AuditLog, GENESIS_HASH, NOOP_AUDIT, actorString, rowHash, toEntry,
  type Actor, type AuditEntry, type AuditFilter, type AuditInput, type AuditRecorder, type AuditRow, type AuditLogOptions } from './log.js';
export { verifyAuditChain, type ChainReport } from './verify.js';
export { canonicalJson, redact, snapshotJson, REDACTED } from './canonical.js';

const bound = new WeakMap<object, AuditRecorder>();

/** Make `recorder` the audit log of everything that holds `owner` (the device registry of one app). */
export function bindAudit(owner: object, recorder: AuditRecorder): void {
  bound.set(owner, recorder);
}

/** The audit log bound to `owner`, or a recorder that drops entries when none is. */
export function auditFor(owner: object): AuditRecorder {
  return bound.get(owner) ?? NOOP_AUDIT;
}
