/**
 * Connections per client address on a listener (config `http.maxConnectionsPerIp`,
 * `mqtt.maxConnectionsPerIp`): one machine must not be able to take every file
 * descriptor and socket buffer of the controller by opening connections it
 * never uses. A connection over the limit is closed at once, before anything
 * is read from it (for TLS: before the handshake, which costs CPU).
 *
 * Loopback is exempt unless configured otherwise: what connects from the same
 * machine (the simulator, the benchmarks, `keng` CLI tools, a reverse proxy)
 * is the operator's own, and behind a local reverse proxy every client would
 * otherwise share the proxy's one address.
 */
import type { Server, Socket } from 'node:net';
import { isLoopback, normalizeIp } from './net-ranges.js';

export interface ConnectionLimitOptions {
  /** Most connections open at once from one address; 0 = no limit. */
  maxPerIp: number;
  /** Connections from 127.0.0.0/8 and ::1 are not counted. */
  exemptLoopback: boolean;
}

export class PerIpConnections {
  private readonly open = new Map<string, number>();

  constructor(private readonly o: ConnectionLimitOptions) {}

  /**
   * Counts the socket against its address until it closes; false when that would exceed the limit.
   * `address`: the client's address when it is not the socket's own (behind a proxy: the PROXY header's).
   */
  admit(sock: Socket, address: string | undefined = sock.remoteAddress): boolean {
    if (this.o.maxPerIp <= 0) return true;
    const raw = address;
    if (raw === undefined) return false; // already gone
    if (this.o.exemptLoopback && isLoopback(raw)) return true;
    const ip = normalizeIp(raw);
    const n = this.open.get(ip) ?? 0;
    if (n >= this.o.maxPerIp) return false;
    this.open.set(ip, n + 1);
    sock.once('close', () => {
      const left = (this.open.get(ip) ?? 1) - 1;
      if (left > 0) this.open.set(ip, left);
      else this.open.delete(ip);
    });
    return true;
  }

  /** Connections counted for an address now (tests, diagnostics). */
  count(ip: string): number {
    return this.open.get(normalizeIp(ip)) ?? 0;
  }
}

/**
 * Enforce the limit on a listener (net, tls, http or https server): runs
 * before the server's own connection handling, and destroys a connection over
 * the limit. Listeners that run after it must ignore a destroyed socket.
 */
export function limitConnectionsPerIp(server: Server, limit: PerIpConnections, onRefused: (ip: string) => void): void {
  server.prependListener('connection', (sock: Socket) => {
    if (limit.admit(sock)) return;
    onRefused(sock.remoteAddress ?? 'unknown');
    sock.destroy();
  });
}
