/**
 * GET /api/v1/audit (OpenAPI at /docs, tag accounts): the audit log, admins only, newest first. No write routes exist.
 * GET /api/v1/audit/head: the chain's head signed with the audit key, for an admin to keep elsewhere (docs/audit.md).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Accounts } from '../../auth/accounts.js';
import type { AuditAnchor, AuditEntry } from '../../audit/index.js';
import { Errors } from '../../core/errors.js';
import { principalOf, type RouteContext } from '../context.js';
import { formatTime, parseTime } from '../../core/time.js';
import { AUTH_ERRORS, Described, errorResponses } from '../schemas.js';
import { AuditHead, AuditPage, AuditQuery } from './account-schemas.js';

export function auditDto(e: AuditEntry, tz: string) {
  return { ...e, at: formatTime(e.at, tz) };
}

export const auditRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext; accounts: Accounts; head?: () => Promise<AuditAnchor> }> = async (app, { ctx, accounts, head }) => {
  app.get('/audit', {
    schema: {
      tags: ['accounts'], summary: 'The audit log (admin)', security: [{ bearer: [] }],
      description: 'Every change with who (actor), what (action, target), when (at), from where (ip), before and after '
        + '(secrets stripped). Hash-chained: verify with `keng audit verify`. `from` inclusive, `to` exclusive.',
      querystring: AuditQuery,
      response: { 200: Described(AuditPage, 'Entries, newest first'), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    ctx.policy.assert(principalOf(req), 'audit.read');
    const q = req.query;
    const from = q.from === undefined ? undefined : parseTime(q.from, 'from');
    const to = q.to === undefined ? undefined : parseTime(q.to, 'to');
    if (from !== undefined && to !== undefined && from > to) throw Errors.VALIDATION('"from" is after "to"');
    const limit = q.limit ?? 100;
    const entries = await accounts.audit.query({ from, to, actor: q.actor, action: q.action, beforeSeq: q.before, limit });
    return {
      entries: entries.map((e) => auditDto(e, ctx.tz)),
      nextBefore: entries.length === limit ? entries[entries.length - 1]!.seq : null,
    };
  });
  if (!head) return;
  app.get('/audit/head', {
    schema: {
      tags: ['accounts'], summary: 'The audit chain\'s signed head (admin)', security: [{ bearer: [] }],
      description: 'The newest seq and hash, and where the keyed part starts, signed with the audit key (HMAC-SHA256). '
        + 'Keep it outside Keng (paste it into a ticket, a mail, a log): `keng audit verify --anchors <file>` then shows whether '
        + 'the log still holds that entry unchanged. The same object the server logs and appends to its anchor files.',
      response: { 200: Described(AuditHead, 'The signed head'), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    ctx.policy.assert(principalOf(req), 'audit.read');
    return head();
  });
};
