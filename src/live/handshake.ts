/**
 * Handshake authentication: the token comes as `auth: {token}`
 * (docs/live-feed.md); an `Authorization: Bearer` header is accepted as
 * well (clients that cannot set `auth`). Missing or bad → the connection is
 * refused with `err.data = {code: 'KENG_ERR_UNAUTHENTICATED'}`.
 */
import type { Socket } from 'socket.io';
import { parseBearer } from '../auth/chain.js';
import type { Authenticator, Principal } from '../auth/types.js';

export interface RefusalError extends Error { data: { code: string } }

export function refusal(code: string, message: string): RefusalError {
  const err = new Error(message) as RefusalError;
  err.data = { code };
  return err;
}

export type HandshakeResult =
  | { ok: true; principal: Principal; token: string }
  | { ok: false; reason: 'missing_token' | 'bad_token'; error: RefusalError };

export function tokenOf(socket: Socket): string | null {
  const auth = socket.handshake.auth as { token?: unknown } | undefined;
  if (auth && typeof auth.token === 'string' && auth.token.length > 0) return auth.token;
  return parseBearer(socket.handshake.headers.authorization);
}

export async function authenticateHandshake(socket: Socket, authenticator: Authenticator): Promise<HandshakeResult> {
  const token = tokenOf(socket);
  const unauth = refusal('KENG_ERR_UNAUTHENTICATED', 'Missing or invalid bearer token');
  if (token === null) return { ok: false, reason: 'missing_token', error: unauth };
  let principal: Principal | null;
  try { principal = await authenticator.authenticate(token); } catch { principal = null; }
  if (!principal) return { ok: false, reason: 'bad_token', error: unauth };
  return { ok: true, principal, token };
}
