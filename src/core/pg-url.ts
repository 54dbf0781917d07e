/**
 * PostgreSQL URLs with several hosts, as libpq writes them (`postgres://u:pw@db1:5432,db2:5432/keng`);
 * the WHATWG URL parser (and so the `pg` driver) reads only one host. Shared by the settings check and the
 * database layer (src/storage/sql/pg-hosts.ts).
 */

/** One single-host URL per host of `url` (one element for an ordinary URL). Throws on an unreadable list. */
export function splitPgUrl(url: string): string[] {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/i.exec(url);
  if (!m || !m[3]!.includes(',')) return [url];
  const [, scheme, auth = '', hosts, rest] = m;
  const list = hosts!.split(',');
  if (list.some((h) => h.trim() === '')) throw new Error('an empty host in the host list');
  return list.map((h) => `${scheme}${auth}${h.trim()}${rest}`);
}
