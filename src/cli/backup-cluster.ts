/**
 * `keng backup` in cluster mode: the cluster database is where the state and the readings are, so the backup
 * holds a `pg_dump` of it (custom format, restored with `pg_restore`), not only the node's files.
 *
 * One snapshot for everything read from PostgreSQL: a REPEATABLE READ transaction exports its snapshot
 * (`pg_export_snapshot()`), the media and firmware lists are read in it, and `pg_dump --snapshot` dumps that
 * same snapshot. The files copied next to the dump are then exactly the ones the dumped rows name (the
 * embedded backup gets the same from one SQLite read transaction). pg_dump is PostgreSQL's own tool: it
 * knows every type, sequence and trigger of the schema, which a copy written here would have to follow by hand.
 *
 * The dump is taken on the primary (the first host of a multi-host URL that is not in recovery): a standby
 * may lag behind what the nodes acknowledged. The password goes to pg_dump in its environment (PGPASSWORD),
 * not on its command line, which other users of the machine can read.
 */
import { spawn } from 'node:child_process';
import pg from 'pg';
import { Errors } from '../core/errors.js';
import { splitPgUrl } from '../core/pg-url.js';
import { redactUrl } from '../storage/sql/index.js';

export const CLUSTER_DUMP_FILE = 'cluster.pgdump';

export interface ClusterDump {
  /** What the dumped rows name: copied next to the dump. */
  media: Array<{ id: string; ext: string }>;
  firmware: string[];
  serverVersion: string;
  pgDumpVersion: string;
}

/** The primary among the URL's hosts, connected. */
async function connectPrimary(url: string): Promise<{ client: pg.Client; url: string }> {
  const errors: string[] = [];
  for (const one of splitPgUrl(url)) {
    const client = new pg.Client({ connectionString: one, connectionTimeoutMillis: 10_000 });
    try {
      await client.connect();
      const r = await client.query<{ standby: boolean }>('SELECT pg_is_in_recovery() AS standby');
      if (!r.rows[0]?.standby) return { client, url: one };
      errors.push(`${redactUrl(one)} is a standby`);
    } catch (err) {
      errors.push(`${redactUrl(one)}: ${(err as Error).message}`);
    }
    await client.end().catch(() => undefined);
  }
  throw Errors.BACKUP_DATABASE(`no primary PostgreSQL at KENG_DATABASE_URL (${errors.join('; ')})`);
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ENOENT'
        ? Errors.BACKUP_DATABASE(`${cmd} not found: cluster mode backs up the database with PostgreSQL's pg_dump (Debian: apt-get install postgresql-client; it is looked up on PATH)`)
        : err);
    });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The URL without its password, and the password for pg_dump's environment. */
function splitPassword(url: string): { url: string; password: string | undefined } {
  const u = new URL(url);
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  u.password = '';
  return { url: u.toString(), password };
}

/**
 * Dumps the cluster database into `file` (custom format) and returns what the dump names.
 * `pgDump`: the pg_dump program (default `pg_dump`, looked up on PATH).
 */
export async function dumpClusterDb(o: { url: string; file: string; pgDump?: string }): Promise<ClusterDump> {
  const pgDump = o.pgDump ?? 'pg_dump';
  const version = await run(pgDump, ['--version'], process.env);
  const { client, url } = await connectPrimary(o.url);
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = (await client.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0]!.s;
    const serverVersion = (await client.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
    const has = async (t: string): Promise<boolean> => (await client.query<{ r: string | null }>('SELECT to_regclass($1) AS r', [t])).rows[0]!.r !== null;
    const media = (await has('media')) ? (await client.query<{ id: string; ext: string }>('SELECT id, ext FROM media ORDER BY id')).rows : [];
    const firmware = (await has('firmware_packages')) ? (await client.query<{ id: string }>('SELECT id FROM firmware_packages ORDER BY id')).rows.map((r) => r.id) : [];
    const conn = splitPassword(url);
    const env: NodeJS.ProcessEnv = { ...process.env, ...(conn.password !== undefined ? { PGPASSWORD: conn.password } : {}) };
    const r = await run(pgDump, ['--format=custom', '--no-owner', '--no-privileges', `--snapshot=${snapshot}`, `--file=${o.file}`, `--dbname=${conn.url}`], env);
    if (r.code !== 0) throw Errors.BACKUP_DATABASE(`pg_dump of ${redactUrl(url)} failed (exit ${String(r.code)}): ${r.stderr.trim()}`);
    await client.query('COMMIT');
    return { media, firmware, serverVersion, pgDumpVersion: version.stdout.trim() };
  } finally {
    await client.end().catch(() => undefined);
  }
}
