import type { Authenticator, Principal } from './types.js';

/** Longest bearer token considered at all (longer ones are refused without hashing). */
export const MAX_TOKEN_LENGTH = 1024;

/** Tries each authenticator in order; the first that recognises the token wins. */
export class AuthenticatorChain implements Authenticator {
  private readonly list: Authenticator[];
  constructor(list: Authenticator[] = []) { this.list = [...list]; }

  /** Add an authenticator (e.g. user sessions, API tokens) at the end of the chain. */
  add(a: Authenticator): void { this.list.push(a); }

  async authenticate(bearer: string): Promise<Principal | null> {
    if (!bearer || bearer.length > MAX_TOKEN_LENGTH) return null;
    for (const a of this.list) {
      const p = await a.authenticate(bearer);
      if (p) return p;
    }
    return null;
  }
}

/**
 * The token of an `Authorization: Bearer <token>` header, or null when the
 * header is missing or uses another scheme. The scheme is case-insensitive.
 */
export function parseBearer(header: string | string[] | undefined): string | null {
  if (typeof header !== 'string') return null;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return m ? m[1]! : null;
}
