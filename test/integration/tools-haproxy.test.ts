/**
 * tools/haproxy.ts against a real HAProxy 2.6: the PROXY header reaches the
 * backend with the client's own address (v1 and v2), leastconn spreads
 * connections, a node whose /readyz answers 503 is marked down and loses its
 * sessions (on-marked-down shutdown-sessions), reload() swaps the backends.
 */
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startHaproxy, type Haproxy } from '../../tools/haproxy.js';

interface FakeNode {
  port: number;
  checkPort: number;
  /** First bytes of each connection, in arrival order. */
  heads: Buffer[];
  open: Set<net.Socket>;
  ready: boolean;
  close(): Promise<void>;
}

/** A TCP server that records what each connection starts with, plus an HTTP /readyz whose answer the test sets. */
async function fakeNode(): Promise<FakeNode> {
  const node: FakeNode = { port: 0, checkPort: 0, heads: [], open: new Set(), ready: true, close: async () => {} };
  const tcp = net.createServer((s) => {
    node.open.add(s);
    s.on('close', () => node.open.delete(s));
    s.on('error', () => {});
    // Health checks without a port directive would land here; every relayed connection writes "hello".
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.includes('hello')) { node.heads.push(buf); s.write('ok'); }
    });
  });
  const web = http.createServer((req, res) => {
    if (req.url === '/whoami') { res.end(`${node.checkPort} ${req.headers['x-forwarded-for'] ?? ''}`); return; }
    res.statusCode = req.url === '/readyz' && node.ready ? 200 : 503;
    res.end();
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', () => r()));
  node.port = (tcp.address() as net.AddressInfo).port;
  node.checkPort = (web.address() as net.AddressInfo).port;
  node.close = async () => {
    for (const s of node.open) s.destroy();
    web.closeAllConnections();
    await Promise.all([new Promise((r) => tcp.close(r)), new Promise((r) => web.close(r))]);
  };
  return node;
}

/** Connects through the proxy from `localAddress`, says hello, resolves once the backend answered. */
function dial(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    s.on('error', reject);
    s.on('connect', () => s.write('hello'));
    s.once('data', () => resolve(s));
  });
}

/** `n` answers in a row once the first one succeeds (the HTTP servers may need a first check to be UP). */
async function waitForAnswers(f: () => Promise<string>, n: number): Promise<string[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const first = await f().catch(() => '');
    if (/^\d+ /.test(first)) {
      const rest: string[] = [];
      for (let i = 1; i < n; i++) rest.push(await f());
      return [first, ...rest];
    }
    if (Date.now() > deadline) throw new Error(`no answer through the HTTP frontend (last: ${first})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const closed = (s: net.Socket): Promise<void> => new Promise((r) => { if (s.destroyed || s.readableEnded) r(); else s.once('close', () => r()); });

let proxy: Haproxy | null = null;
let nodes: FakeNode[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await proxy?.destroy();
  proxy = null;
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
});

const backends = (): Array<{ host: string; port: number; checkPort: number }> => nodes.map((n) => ({ host: '127.0.0.1', port: n.port, checkPort: n.checkPort }));

describe('tools/haproxy', () => {
  it('v2: the backend gets a binary PROXY header with the client\'s own source address, and leastconn spreads connections', async () => {
    nodes = [await fakeNode(), await fakeNode()];
    proxy = await startHaproxy({ mqttBackends: backends(), sendProxy: 'v2' });
    await proxy.waitForServer('n1', 'UP');
    await proxy.waitForServer('n2', 'UP');
    sockets.push(await dial(proxy.mqttPort, '127.0.0.2'), await dial(proxy.mqttPort, '127.0.0.3'));
    const heads = nodes.flatMap((n) => n.heads);
    expect(nodes.map((n) => n.heads.length)).toEqual([1, 1]); // leastconn: one each
    for (const h of heads) {
      expect(h.subarray(0, 12).toString('hex')).toBe('0d0a0d0a000d0a515549540a');
      expect(h[12]).toBe(0x21); // version 2, PROXY
      expect(h[13]).toBe(0x11); // TCP over IPv4
      expect(h.subarray(-5).toString()).toBe('hello'); // nothing after the header lost
    }
    const sources = heads.map((h) => [...h.subarray(16, 20)].join('.')).sort();
    expect(sources).toEqual(['127.0.0.2', '127.0.0.3']);
  });

  it('v1: a text PROXY line', async () => {
    nodes = [await fakeNode()];
    proxy = await startHaproxy({ mqttBackends: backends(), sendProxy: 'v1' });
    await proxy.waitForServer('n1', 'UP');
    sockets.push(await dial(proxy.mqttPort, '127.0.0.2'));
    expect(nodes[0]!.heads[0]!.toString()).toMatch(new RegExp(`^PROXY TCP4 127\\.0\\.0\\.2 127\\.0\\.0\\.1 \\d+ ${proxy.mqttPort}\\r\\nhello$`));
  });

  it('a node whose /readyz fails is marked down, loses its sessions, and new connections go to the other', async () => {
    nodes = [await fakeNode(), await fakeNode()];
    proxy = await startHaproxy({ mqttBackends: backends(), sendProxy: 'v2' });
    await proxy.waitForServer('n1', 'UP');
    await proxy.waitForServer('n2', 'UP');
    const a = await dial(proxy.mqttPort, '127.0.0.2');
    const b = await dial(proxy.mqttPort, '127.0.0.3');
    sockets.push(a, b);
    // The node that got 127.0.0.2 (from its header) is the one to take out.
    const victimIndex = nodes.findIndex((n) => n.heads.some((h) => [...h.subarray(16, 20)].join('.') === '127.0.0.2'));
    const victim = nodes[victimIndex]!;
    const survivor = nodes[1 - victimIndex]!;
    const victimName = `n${victimIndex + 1}`;
    const clientOfVictim = a;
    victim.ready = false;
    await proxy.waitForServer(victimName, 'DOWN');
    await closed(clientOfVictim); // shutdown-sessions
    const before = survivor.heads.length;
    for (let i = 0; i < 3; i++) sockets.push(await dial(proxy.mqttPort, '127.0.0.4'));
    expect(survivor.heads.length).toBe(before + 3);
    expect(victim.open.size).toBe(0);
  });

  it('httpBackends: an HTTP frontend with X-Forwarded-For, sticky by source address', async () => {
    nodes = [await fakeNode(), await fakeNode()];
    const web = nodes.map((n) => ({ host: '127.0.0.1', port: n.checkPort }));
    proxy = await startHaproxy({ mqttBackends: backends(), httpBackends: web, sendProxy: 'v2' });
    await proxy.waitForServer('n1', 'UP');
    const get = (localAddress: string): Promise<string> => new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: proxy!.httpPort, path: '/whoami', localAddress, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => { body += d.toString(); });
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });
    const answers = await waitForAnswers(() => get('127.0.0.2'), 4);
    expect(new Set(answers).size).toBe(1); // the same node every time (balance source)
    expect(answers[0]).toMatch(/ 127\.0\.0\.2$/);
  });

  it('reload() swaps the backends: new connections go to the new list', async () => {
    nodes = [await fakeNode(), await fakeNode()];
    const [n1, n2] = backends();
    proxy = await startHaproxy({ mqttBackends: [n1!], sendProxy: 'v2' });
    await proxy.waitForServer('n1', 'UP');
    sockets.push(await dial(proxy.mqttPort, '127.0.0.2'));
    expect(nodes[0]!.heads).toHaveLength(1);
    await proxy.reload([{ ...n2!, name: 'm2' }]);
    await proxy.waitForServer('m2', 'UP');
    sockets.push(await dial(proxy.mqttPort, '127.0.0.2'));
    expect(nodes[1]!.heads).toHaveLength(1);
    expect(nodes[0]!.heads).toHaveLength(1);
    expect((await proxy.servers()).map((s) => `${s.backend}/${s.name}`)).toEqual(['keng_mqtt/m2']);
  });
});
