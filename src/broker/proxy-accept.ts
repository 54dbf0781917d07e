/**
 * mqtt.proxyProtocol "required": every accepted connection must come from a
 * trusted proxy (mqtt.trustedProxies) and start with a PROXY protocol header
 * (proxy-protocol.ts) within a short time; otherwise it is closed and counted
 * (keng_mqtt_proxy_refused_total{reason}). The spec (doc/proxy-protocol.txt
 * §2) forbids guessing whether a header is there, and asks the receiver to
 * accept it only from trusted proxies, else anyone could claim any address.
 *
 * Nothing after the header is lost: a device's CONNECT often arrives in the
 * same segment, and the bytes read past the header are put back (unshift)
 * before aedes starts reading the socket.
 *
 * The address the header names is remembered per socket (peerAddress()), for
 * the per-address connection limit, the provisioning limit and the logs.
 */
import type net from 'node:net';
import type { PerIpConnections } from '../core/connection-limit.js';
import { AddressSet } from '../core/net-ranges.js';
import type { BrokerContext } from './context.js';
import { parseProxyHeader, type ProxyHeader } from './proxy-protocol.js';

export type ProxyRefusal = 'untrusted_peer' | 'invalid_header' | 'timeout' | 'closed';

export interface ProxyAcceptOptions {
  trusted: AddressSet;
  /** Time allowed for the whole header (the spec suggests a few seconds, at least 3 to cover a TCP retransmit). */
  timeoutMs: number;
  /** The connection is closed: why, the proxy's address, details for the log. */
  refused(reason: ProxyRefusal, proxy: string, why?: string): void;
}

/** Addresses learnt from headers, per socket (a WeakMap: gone with the socket). */
const peers = new WeakMap<object, string>();

/**
 * The client's address: the one its PROXY header named, else the socket's own.
 * A TLS socket is looked up by the TCP socket under it, which carried the header.
 */
export function peerAddress(conn: unknown): string | undefined {
  if (conn === null || typeof conn !== 'object') return undefined;
  const known = peers.get(conn) ?? peers.get((conn as { _parent?: object })._parent ?? {});
  return known ?? (conn as Partial<net.Socket>).remoteAddress;
}

/** Reads the header, then calls `admitted` with the socket positioned at the first byte after it. */
export function acceptProxied(sock: net.Socket, o: ProxyAcceptOptions, admitted: (sock: net.Socket, peer: string, header: ProxyHeader) => void): void {
  const proxy = sock.remoteAddress ?? 'unknown';
  if (sock.remoteAddress === undefined || !o.trusted.has(sock.remoteAddress)) {
    o.refused('untrusted_peer', proxy);
    sock.destroy();
    return;
  }
  let buf: Buffer = Buffer.alloc(0);
  let over = false;
  const finish = (): void => {
    over = true;
    clearTimeout(timer);
    sock.off('readable', onReadable);
    sock.off('close', onClose);
    sock.off('error', onError);
  };
  const fail = (reason: ProxyRefusal, why?: string): void => {
    if (over) return;
    finish();
    o.refused(reason, proxy, why);
    sock.destroy();
  };
  const onClose = (): void => fail('closed');
  const onError = (): void => { /* 'close' follows and is counted */ };
  const onReadable = (): void => {
    let chunk: Buffer | null;
    while (!over && (chunk = sock.read() as Buffer | null) !== null) {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const r = parseProxyHeader(buf);
      if (r.state === 'more') continue;
      if (r.state === 'invalid') { fail('invalid_header', r.why); return; }
      finish();
      const rest = buf.subarray(r.length);
      if (rest.length) sock.unshift(rest);
      const peer = r.header.command === 'proxy' ? r.header.source.address : proxy;
      peers.set(sock, peer);
      admitted(sock, peer, r.header);
      return;
    }
  };
  const timer = setTimeout(() => fail('timeout'), o.timeoutMs);
  sock.on('readable', onReadable);
  sock.once('close', onClose);
  sock.on('error', onError);
}

/**
 * The listener's connection handler with mqtt.proxyProtocol "required": trusted proxy, header, then the
 * per-address limit on the address the header names (mqtt_refused_total{reason="per_ip_limit"}), then `next`.
 */
export function proxyGate(ctx: BrokerContext, perIp: PerIpConnections, timeoutMs: number, next: (sock: net.Socket) => void): (sock: net.Socket) => void {
  const trusted = new AddressSet();
  for (const p of ctx.config.trustedProxies) trusted.add(p); // each entry checked at config load
  const counter = ctx.metrics.mqttProxyRefusedTotal;
  const opts: ProxyAcceptOptions = {
    trusted,
    timeoutMs,
    refused: (reason, proxy, why) => {
      counter.labels({ reason }).inc();
      ctx.logger.debug({ proxy, reason, why }, 'mqtt connection refused: no valid PROXY header from a trusted proxy');
    },
  };
  return (sock) => {
    if (ctx.stopping) { sock.destroy(); return; }
    acceptProxied(sock, opts, (s, peer) => {
      if (!perIp.admit(s, peer)) {
        ctx.count('connect', 'per_ip_limit');
        s.destroy();
        return;
      }
      next(s);
    });
  };
}
