/** GET /api/v1/audit (OpenAPI at /docs, tag accounts): the audit log, admins only, newest first. No write routes exist. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Accounts } from '../../auth/accounts.js';
import type { AuditEntry } from '../../audit/index.js';
import { Errors } from '../../core/errors.js';
import { principalOf, type RouteContext } from '../context.js';
import { formatTime, parseTime } from '../../core/time.js';
import { AUTH_ERRORS, Described, errorResponses } from '../schemas.js';
import { AuditPage, AuditQuery } from './account-schemas.js';

export function auditDto(e: AuditEntry, tz: string) {
  return { ...e, at: formatTime(e.at, tz) };
}

export const auditRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext; accounts: Accounts }> = async (app, { ctx, accounts }) => {
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
    const entries = accounts.audit.query({ from, to, actor: q.actor, action: q.action, beforeSeq: q.before, limit });
    return {
      entries: entries.map((e) => auditDto(e, ctx.tz)),
      nextBefore: entries.length === limit ? entries[entries.length - 1]!.seq : null,
    };
  });
};
