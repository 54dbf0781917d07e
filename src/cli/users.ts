/**
 * `keng users ...`: accounts straight on the state store, with the same rules
 * and audit log as the API (actor `cli:<os user>`). This is also the way back
 * in for whoever has a shell on the server when no admin can log in (locked,
 * forgotten password): `keng users unlock <name>`, `keng users passwd <name>`,
 * or `keng users add --role admin`. The CLI never goes through the login
 * guard, so nothing an attacker does over HTTP can lock it out.
 */
import type { Command } from 'commander';
import { Errors, systemClock } from '../core/index.js';
import { stateSqlitePort, type StateDb } from '../storage/state/index.js';
import { createAccounts, guardOptions, ROLES, type Accounts, type Role, type User } from '../auth/index.js';
import { cliAuditKey } from './audit.js';
import { action, cliActor, json, out, table, withRegistry } from './common.js';
import { formatTimeOrNull } from '../core/time.js';

/** Account services on the CLI's state store (same rules, settings and audit log as the API). */
/** `tz`: the configured zone: times are shown in it, as the API shows them. */
function withAccounts<T>(fn: (acc: Accounts, db: StateDb, tz: string) => T | Promise<T>): Promise<T> {
  return withRegistry((reg, db, config) => {
    const acc = createAccounts({ db: stateSqlitePort(db), clock: systemClock, areas: reg, guard: guardOptions(config.auth) });
    // The server's audit key: without it (or with another) a keyed chain refuses the change.
    const key = cliAuditKey(config);
    if (key) acc.audit.useKey(key);
    return fn(acc, db, config.tz);
  });
}

/** A password from stdin: the first line when piped, typed without echo on a terminal. Never from argv (ps would show it). */
async function readPassword(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    let text = '';
    for await (const chunk of stdin) text += String(chunk);
    return text.split(/\r?\n/)[0] ?? '';
  }
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  stdin.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    let value = '';
    const done = (fn: () => void): void => { stdin.setRawMode(false); stdin.pause(); stdin.off('data', onData); process.stderr.write('\n'); fn(); };
    const onData = (s: string): void => {
      for (const ch of s) {
        if (ch === '\r' || ch === '\n') return done(() => resolve(value));
        if (ch === '\u0003') return done(() => reject(Errors.VALIDATION('cancelled')));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

function userJson(u: User, tz: string): Record<string, unknown> {
  return { ...u, createdAt: formatTimeOrNull(u.createdAt, tz), updatedAt: formatTimeOrNull(u.updatedAt, tz), lockedAt: formatTimeOrNull(u.lockedAt, tz), lockedUntil: formatTimeOrNull(u.lockedUntil, tz) };
}

function state(u: User, tz: string): string {
  if (u.disabled) return 'disabled';
  return u.lockedUntil !== null ? `locked until ${formatTimeOrNull(u.lockedUntil, tz)}` : 'active';
}

export function registerUsers(program: Command): void {
  const users = program.command('users').description('user accounts (login with POST /api/v1/auth/login)');
  users.command('add')
    .description('add a user; the password is read from stdin (piped: first line; terminal: typed without echo)')
    .requiredOption('--username <name>', 'login name: ^[a-z0-9._-]{3,64}$')
    .requiredOption('--role <role>', ROLES.join(' | '))
    .option('--areas <codes>', 'comma-separated area codes (ignored for admin)', '')
    .option('--json', 'print JSON')
    .action(action(async (o: { username: string; role: string; areas: string; json?: boolean }) => {
      if (!ROLES.includes(o.role as Role)) throw Errors.VALIDATION(`--role must be one of ${ROLES.join(', ')}`);
      const areas = o.areas.split(',').map((a) => a.trim()).filter(Boolean);
      // The password is asked for once the state is open: a wrong KENG_DATA_DIR is reported before anyone types it.
      const { user, tz } = await withAccounts(async (acc, _db, tz) => {
        const password = await readPassword(`Password for ${o.username}: `);
        return { user: await acc.users.create({ username: o.username, password, role: o.role as Role, areas }, { actor: cliActor() }), tz };
      });
      if (o.json) return json(userJson(user, tz));
      out(`User ${user.username} added: ${user.role} in ${user.areas.join(', ')}`);
    }));
  users.command('list')
    .description('list users')
    .option('--json', 'print JSON')
    .action(action(async (o: { json?: boolean }) => {
      const { list, tz } = await withAccounts(async (acc, _db, tz) => ({ list: await acc.users.list(), tz }));
      if (o.json) return json(list.map((u) => userJson(u, tz)));
      table(['USERNAME', 'ROLE', 'STATE', 'AREAS'], list.map((u) => [u.username, u.role, state(u, tz), u.areas.join(',')]));
    }));
  users.command('unlock')
    .description('end a lock after failed logins now (for everyone and for single addresses) and clear the failure counts')
    .argument('<username>', 'login name')
    .action(action(async (username: string) => {
      const was = await withAccounts((acc) => acc.users.unlock(username, { actor: cliActor() }));
      out(was ? `User ${username} unlocked` : `User ${username} was not locked (failure count cleared)`);
    }));
  users.command('passwd')
    .description('set a new password (read from stdin like "users add"); ends the user\'s sessions')
    .argument('<username>', 'login name')
    .action(action(async (username: string) => {
      await withAccounts(async (acc) => {
        if (!(await acc.users.get(username))) throw Errors.NOT_FOUND(`User "${username}"`);
        const password = await readPassword(`New password for ${username}: `);
        await acc.users.update(username, { password }, { actor: cliActor() });
      });
      out(`Password of ${username} changed; its sessions ended`);
    }));
}
