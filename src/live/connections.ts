/**
 * Clients coming and going: the handshake (token, connection limit, batched
 * or not), the client's requests, the bookkeeping on disconnect, and the
 * periodic re-check of every client's token (a token revoked or expired since
 * the handshake must not keep a connection open).
 */
import type { Socket } from 'socket.io';
import type { Policy } from '../auth/policy.js';
import type { Authenticator, Principal } from '../auth/types.js';
import { LiveClient } from './client.js';
import { authenticateHandshake, refusal } from './handshake.js';
import type { Membership } from './membership.js';
import { RequestLimit } from './request-limit.js';
import type { LiveMetrics } from './metrics.js';
import type { LiveFeedSettings } from './options.js';
import { NO_BROADCAST_ROOM, type AncestorCache } from './rooms.js';
import type { SlowClients } from './slow.js';
import type { SubscribeAck } from './subscriptions.js';

/** What the handshake leaves on `socket.data` for the connection. */
interface HandshakeData { principal: Principal; token: string; batch: boolean }

export class Connections {
  /** Set when the feed stops: no handshake succeeds any more. */
  private closed = false;
  private reauthenticating = false;

  constructor(
    /** Every connected client, by socket id (the feed's). */
    private readonly clients: Map<string, LiveClient>,
    private readonly settings: LiveFeedSettings,
    private readonly authenticator: Authenticator,
    private readonly policy: Policy,
    private readonly ancestors: AncestorCache,
    private readonly membership: Membership,
    private readonly slow: SlowClients,
    private readonly metrics: LiveMetrics | null,
  ) {}

  close(): void { this.closed = true; }

  /** socket.io middleware: authenticate the token (a database read: sessions, API tokens), enforce maxClients. */
  async handshake(socket: Socket, next: (err?: Error) => void): Promise<void> {
    const r = await authenticateHandshake(socket, this.authenticator);
    if (!r.ok) {
      this.metrics?.refused.inc({ reason: r.reason });
      next(r.error);
      return;
    }
    if (this.closed || this.clients.size >= this.settings.maxClients) {
      this.metrics?.refused.inc({ reason: 'too_many_clients' });
      next(refusal('KENG_ERR_RATE_LIMITED', 'Too many requests: live-feed connection limit reached'));
      return;
    }
    const data = socket.data as Partial<HandshakeData>;
    data.principal = r.principal;
    data.token = r.token;
    data.batch = (socket.handshake.auth as { batch?: unknown } | undefined)?.batch === true;
    next();
  }

  connect(socket: Socket): void {
    const data = socket.data as HandshakeData;
    const c = new LiveClient(socket, data.principal, data.token, this.policy.can(data.principal, 'broadcasts.read'), data.batch,
      new RequestLimit(this.settings, Date.now()));
    this.clients.set(socket.id, c);
    if (!c.canBroadcast) void socket.join(NO_BROADCAST_ROOM);
    this.metrics?.connects.inc();
    this.metrics?.clients.set(this.clients.size);
    socket.on('subscribe', (raw: unknown, ack?: unknown) => this.request(c, 'subscribe', ack, () => this.membership.subscribe(c, raw)));
    socket.on('unsubscribe', (raw: unknown, ack?: unknown) => this.request(c, 'unsubscribe', ack, () => this.membership.unsubscribe(c, raw)));
    socket.once('disconnect', () => {
      this.clients.delete(socket.id);
      this.membership.release(c);
      this.slow.forget(c);
      this.metrics?.clients.set(this.clients.size);
    });
  }

  /**
   * Runs a request within the client's rate (request-limit.ts); over it the answer is KENG_ERR_RATE_LIMITED,
   * unprocessed. A flood disconnects the client at once, after that answer: socket.io then drops the
   * requests still queued on the connection (it has left the namespace), so a flood costs a bounded amount.
   */
  private request(c: LiveClient, request: 'subscribe' | 'unsubscribe', ack: unknown, run: () => SubscribeAck): void {
    const verdict = c.requests?.take(Date.now()) ?? 'ok';
    if (verdict === 'ok') { reply(ack, run()); return; }
    this.metrics?.requestsRefused.inc({ request, reason: 'rate_limited' });
    const s = this.settings;
    reply(ack, { error: { code: 'KENG_ERR_RATE_LIMITED', message: `Too many requests: at most ${s.requestRatePerSec} subscribe/unsubscribe per second (burst ${s.requestBurst})` } });
    if (verdict === 'flood') this.slow.drop(c, 'request_flood');
  }

  /**
   * Tokens revoked or expired since the handshake disconnect their clients; changed scopes prune subscriptions.
   * One pass at a time (each token is a database read); a client gone meanwhile is skipped.
   */
  async reauthenticate(): Promise<void> {
    if (this.reauthenticating) return;
    this.reauthenticating = true;
    try {
      this.ancestors.clear();
      for (const c of [...this.clients.values()]) await this.recheck(c);
    } finally {
      this.reauthenticating = false;
    }
  }

  private async recheck(c: LiveClient): Promise<void> {
    let p: Principal | null;
    // The store unreachable for a moment (cluster mode: PostgreSQL) is no reason to drop everyone: the next pass decides.
    try { p = await this.authenticator.authenticate(c.token); } catch { return; }
    if (this.clients.get(c.id) !== c) return;
    if (!p) { this.slow.drop(c, 'unauthenticated'); return; }
    if (p.role === c.principal.role && p.areas.join('\u0000') === c.principal.areas.join('\u0000')) return;
    this.membership.rescope(c, p);
  }
}

function reply(ack: unknown, answer: SubscribeAck): void {
  if (typeof ack === 'function') (ack as (a: SubscribeAck) => void)(answer);
}
