/**
 * Exit statuses of `keng` (server and CLI), from sysexits.h so that service
 * managers and scripts can tell a refusal that needs a person (wrong setting,
 * wrong directory, directory in use) from a crash. Listed in docs/errors.md.
 */
export const EXIT = {
  /** Anything else: an error or a crash. */
  FAILURE: 1,
  /** EX_NOINPUT: the data directory holds no state (CLI). */
  NO_STATE: 66,
  /** EX_CANTCREAT: `keng backup` refuses a target directory that is not empty; `keng cluster import` a database in use. */
  BACKUP_TARGET_NOT_EMPTY: 73,
  /** EX_TEMPFAIL: another Keng server holds the data directory; it works once that one stops. */
  DATA_DIR_IN_USE: 75,
  /** EX_CONFIG: a setting is missing or wrong (the audit key included: missing, or not the chain's, or not the one the cluster's secrets are sealed with). */
  CONFIG: 78,
} as const;

const BY_CODE: Readonly<Record<string, number>> = {
  KENG_ERR_NO_STATE: EXIT.NO_STATE,
  KENG_ERR_DATA_DIR_IN_USE: EXIT.DATA_DIR_IN_USE,
  KENG_ERR_BACKUP_TARGET_NOT_EMPTY: EXIT.BACKUP_TARGET_NOT_EMPTY,
  KENG_ERR_CLUSTER_NOT_EMPTY: EXIT.BACKUP_TARGET_NOT_EMPTY,
  KENG_ERR_CONFIG: EXIT.CONFIG,
  KENG_ERR_AUDIT_KEY: EXIT.CONFIG,
  KENG_ERR_SECRETS_KEY: EXIT.CONFIG,
};

/** The exit status for an error with this KENG_ERR_* code (1 for any other). */
export function exitStatusFor(code: string | undefined): number {
  return (code !== undefined && BY_CODE[code]) || EXIT.FAILURE;
}
