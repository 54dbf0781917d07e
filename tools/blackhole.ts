/**
 * A TCP proxy in front of any server (PostgreSQL, Redis, a Keng node) that
 * imitates network faults for partition tests:
 * - pause(): a partition. Nothing is forwarded either way and no new
 *   connection reaches the target, but every socket stays open, so the client
 *   sees silence (no RST, no FIN) until its own timeouts fire, as when a
 *   switch or a link dies.
 * - drop(): every connection is reset (RST) at once, as when the peer's
 *   host reboots; new ones keep working unless paused.
 * - heal(): the partition ends; data held while paused flows on.
 * Bytes are never reordered or lost while paused: they wait in the proxy
 * (like packets a TCP stack retransmits), bounded by the sockets' buffers
 * because reading stops.
 */
import net from 'node:net';
import { onCleanup } from './cleanup.js';

export interface Blackhole {
  readonly host: string;
  readonly port: number;
  /** Connections open through the proxy now. */
  connections(): number;
  pause(): void;
  drop(): void;
  heal(): void;
  close(): Promise<void>;
}

interface Pair { client: net.Socket; upstream: net.Socket | null; held: Array<() => void> }

export async function startBlackhole(target: { host: string; port: number }, o: { port?: number } = {}): Promise<Blackhole> {
  const pairs = new Set<Pair>();
  let paused = false;
  /** Connections accepted while paused: they connect upstream on heal(). */
  const waiting: Pair[] = [];

  const wire = (p: Pair): void => {
    const up = net.connect({ host: target.host, port: target.port });
    p.upstream = up;
    up.setNoDelay(true);
    const pump = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (d: Buffer) => {
        if (!paused) { if (!to.write(d)) from.pause(); return; }
        // Partition: keep the bytes for heal() and stop reading, so they back up in the kernel.
        from.pause();
        p.held.push(() => { if (!to.destroyed && !to.write(d)) from.pause(); });
      });
      to.on('drain', () => { if (!paused) from.resume(); });
      from.on('end', () => { if (paused) p.held.push(() => to.end()); else to.end(); });
    };
    pump(p.client, up);
    pump(up, p.client);
    up.on('error', () => p.client.destroy());
    up.on('close', () => { if (!paused) p.client.destroy(); else p.held.push(() => p.client.destroy()); });
  };

  const server = net.createServer((client) => {
    const p: Pair = { client, upstream: null, held: [] };
    pairs.add(p);
    client.setNoDelay(true);
    client.on('error', () => p.upstream?.destroy());
    client.on('close', () => {
      pairs.delete(p);
      if (!paused) p.upstream?.destroy();
      else p.held.push(() => p.upstream?.destroy());
    });
    if (paused) { client.pause(); waiting.push(p); return; }
    wire(p);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, '127.0.0.1', () => resolve());
  });
  const addr = server.address() as net.AddressInfo;

  const drop = (): void => {
    for (const p of pairs) {
      p.client.resetAndDestroy();
      if (p.upstream && !p.upstream.destroyed) p.upstream.resetAndDestroy();
    }
    pairs.clear();
    waiting.length = 0;
  };
  const close = async (): Promise<void> => {
    drop();
    await new Promise<void>((r) => server.close(() => r()));
  };
  onCleanup(`blackhole :${addr.port}`, close);
  return {
    host: '127.0.0.1',
    port: addr.port,
    connections: () => pairs.size,
    pause: () => { paused = true; },
    drop,
    heal: () => {
      if (!paused) return;
      paused = false;
      for (const p of pairs) {
        for (const f of p.held.splice(0)) f();
        if (!p.client.destroyed) p.client.resume();
        if (p.upstream && !p.upstream.destroyed) p.upstream.resume();
      }
      for (const p of waiting.splice(0)) if (!p.client.destroyed) { p.client.resume(); wire(p); }
    },
    close,
  };
}
