/**
 * One MQTT session per device across cluster nodes (docs/cluster.md "One MQTT
 * session per device"): the broker's side of it.
 *
 * Within one node aedes already keeps one connection per client id (the second
 * takes over the first). Across nodes each aedes knows only its own clients, so
 * a device accepted here first CLAIMS its session in the cluster database; the
 * node that held it before closes its connection (cluster/session-claims.ts).
 *
 * The claim runs after authentication and before the CONNACK, bounded by a
 * timeout: a node that cannot claim refuses the CONNECT with 3 (server
 * unavailable), as it answers /readyz 503 when the database is away, so the
 * device retries, likely through another node. Nothing else waits for it:
 * PUBLISH and PUBACK never touch the claims. A node that fenced itself (its
 * lease not renewed in time, cluster/lease-fence.ts) refuses every CONNECT with
 * 3 without asking the database, until it is renewed.
 */
import type { Client } from 'aedes';
import { authError, type AuthDone, type BrokerContext } from './context.js';

export interface SessionClaims {
  /** False in embedded mode: no claim, no release, nothing asked of a database. */
  readonly active: boolean;
  /** Claims `deviceId`'s session for this node; resolves with the claim's epoch (rejects after its own timeout). */
  claim(deviceId: string): Promise<number>;
  /** The connection of that claim is gone: the session row goes if it is still this claim's (never throws, never waits). */
  release(deviceId: string, epoch: number): void;
  /** True while this node must take no device (cluster mode: fenced); the CONNECT is refused with 3. */
  refusing?(): boolean;
}

/** Embedded mode: one node, aedes alone keeps one session per device. */
export const NO_SESSION_CLAIMS: SessionClaims = {
  active: false,
  claim: async () => 0,
  release: () => { /* nothing claimed */ },
};

/**
 * Runs `admit(epoch)` once the claim is made, or answers the CONNECT with 3.
 * `newer(epoch)`: a connection of the same device with a later claim is already
 * here (two connects raced on this node), so this one is refused instead of
 * replacing it.
 */
export function claimThenAdmit(
  ctx: BrokerContext, claims: SessionClaims, client: Client, deviceId: string, done: AuthDone,
  newer: (epoch: number) => boolean, admit: (epoch: number) => void,
): void {
  if (!claims.active) { admit(0); return; }
  if (claims.refusing?.()) {
    // Logged once per fence by the fence itself; devices retrying in a loop would flood the log here.
    ctx.count('connect', 'node_fenced');
    ctx.logger.debug({ deviceId }, 'mqtt connect refused: this node is fenced (its lease was not renewed in time)');
    done(authError(3, 'node fenced'), null);
    return;
  }
  claims.claim(deviceId).then((epoch) => {
    if (ctx.stopping || client.closed) { claims.release(deviceId, epoch); done(authError(3, 'connection closed'), null); return; }
    if (newer(epoch)) { claims.release(deviceId, epoch); ctx.count('connect', 'session_claimed_later'); done(authError(3, 'session claimed later'), null); return; }
    admit(epoch);
  }, (err: unknown) => {
    ctx.count('connect', 'session_claim_unavailable');
    ctx.logger.warn({ err: (err as Error)?.message, deviceId }, 'mqtt connect refused: could not claim the device session in the cluster database');
    done(authError(3, 'session claim unavailable'), null);
  });
}
