import type { FastifyRequest } from 'fastify';
import { Errors } from '../core/errors.js';
import { parseBearer } from '../auth/chain.js';
import type { Authenticator } from '../auth/types.js';

/** onRequest hook: `Authorization: Bearer <token>` → req.principal, else 401 KENG_ERR_UNAUTHENTICATED. */
export function bearerAuth(authenticator: Authenticator) {
  return async function authenticate(req: FastifyRequest): Promise<void> {
    const token = parseBearer(req.headers.authorization);
    const principal = token ? await authenticator.authenticate(token) : null;
    if (!principal) throw Errors.UNAUTHENTICATED();
    req.principal = principal;
  };
}
