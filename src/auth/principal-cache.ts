/**
 * A short-lived cache of bearer-token lookups (sessions, API tokens), for the
 * cluster: every HTTP request and socket.io handshake checks its token, and on
 * PostgreSQL that is a round trip. Only successful lookups are cached (a token
 * created on another node must work at once here); an entry lives at most
 * `ttlMs`, and never past the token's own expiry.
 *
 * Changes made on this node (logout, revoke, a user disabled, deleted, given a
 * new password, role or areas) drop the entries concerned at once. A change made
 * on ANOTHER node reaches this node when the entry ends: that is the bound
 * stated in docs/cluster.md (AUTH_CACHE_CLUSTER_MS). `ttlMs` 0 = no cache (the
 * embedded store: a lookup there is a local read, and `keng users` run by hand
 * must take effect at the next request).
 */
import type { Clock } from '../core/clock.js';

/** How long a node may keep accepting a token revoked (or a user changed) on another node. */
export const AUTH_CACHE_CLUSTER_MS = 5_000;
/** Entries at most; beyond, the cache starts afresh (a flood of distinct valid tokens is no normal load). */
const MAX_ENTRIES = 10_000;

interface Entry<V> { value: V; owner: string; until: number }

export class LookupCache<V> {
  private readonly map = new Map<string, Entry<V>>();
  /** Bumped by every drop: a lookup that started before a drop must not store what it read. */
  private gen = 0;

  constructor(private readonly ttlMs: number, private readonly clock: Clock) {}

  get(key: string): V | undefined {
    if (this.ttlMs <= 0) return undefined;
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.until > this.clock.now()) return e.value;
    this.map.delete(key);
    return undefined;
  }

  /** Take before the database read; pass to set(). */
  generation(): number { return this.gen; }

  /** Keep `value` for `key` (owned by `owner`: a username or token id), at most until `expiresAt`. */
  set(key: string, value: V, owner: string, expiresAt: number | null, generation: number): void {
    if (this.ttlMs <= 0 || generation !== this.gen) return;
    if (this.map.size >= MAX_ENTRIES) this.map.clear();
    const until = Math.min(this.clock.now() + this.ttlMs, expiresAt ?? Number.POSITIVE_INFINITY);
    this.map.set(key, { value, owner, until });
  }

  /** Drop the entries of an owner (a change on this node). */
  dropOwner(owner: string): void {
    this.gen++;
    for (const [k, e] of this.map) if (e.owner === owner) this.map.delete(k);
  }

  dropKey(key: string): void {
    this.gen++;
    this.map.delete(key);
  }
}
