/**
 * Which usernames a new account may take (docs/roles.md, "Usernames").
 *
 * A username is unique in the whole installation (the login form asks for
 * nothing else). An operator creating a viewer must not learn which names
 * exist in other communes: for a name taken outside what the caller manages
 * the refusal is KENG_ERR_USERNAME_UNAVAILABLE, the very reply a reserved
 * name gets, instead of KENG_ERR_USER_EXISTS (kept for names the caller can
 * see anyway). The reply then says "not this one", never "this one exists".
 */
import { Errors } from '../core/errors.js';

/**
 * Names nobody may create: the ones an attacker tries first, and ones that
 * would read like the system in the audit log or the admin screens ("admin"
 * is the admin token's id). Existing accounts with such a name keep working.
 */
export const RESERVED_USERNAMES: ReadonlySet<string> = new Set([
  'admin', 'administrator', 'root', 'superuser', 'system', 'keng', 'anonymous', 'support', 'cli',
]);

/** The refusal for a reserved name, or for a taken one the caller may not see. */
export function usernameUnavailable(username: string): Error {
  return Errors.USERNAME_UNAVAILABLE(username);
}
