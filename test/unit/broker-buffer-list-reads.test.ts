/** Direct header reads of the MQTT parser's buffer list (src/broker/buffer-list-reads.ts). */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { installBufferListReads, parserBufferListPrototypes } from '../../src/broker/buffer-list-reads.js';

const parserRequire = createRequire(createRequire(import.meta.url).resolve('mqtt-packet'));
type Bl = { append(b: Buffer): Bl; consume(n: number): Bl; length: number; readUInt8(o?: number): number; readUInt16BE(o?: number): number;
  readUInt32BE(o?: number): number; toString(enc?: string, s?: number, e?: number): string };
const bl = parserRequire('bl') as () => Bl;
const mqtt = parserRequire('mqtt-packet') as {
  generate(p: Record<string, unknown>): Buffer;
  parser(): { on(ev: 'packet', f: (p: Record<string, unknown>) => void): void; on(ev: 'error', f: (e: Error) => void): void; parse(b: Buffer): number };
};

/** Deterministic pseudo-random numbers (the same cases on every run). */
function rng(seed: number): () => number {
  let x = seed;
  return () => { x = (x * 1_103_515_245 + 12_345) % 2_147_483_648; return x / 2_147_483_648; };
}

function outcome(f: () => unknown): unknown {
  try { return f(); } catch (err) { return `throws ${(err as Error).name}`; }
}

describe('MQTT parser buffer list reads', () => {
  it('installs on the bl mqtt-packet uses, once', () => {
    expect(installBufferListReads()).toBe(true);
    const protos = parserBufferListPrototypes()!;
    const before = protos.map((p) => p.readUInt16BE);
    expect(installBufferListReads()).toBe(true);
    expect(protos.map((p) => p.readUInt16BE)).toEqual(before);
  });

  it('reads what bl read, within the first buffer, across buffers and out of range', () => {
    installBufferListReads();
    const rand = rng(7);
    for (let round = 0; round < 300; round++) {
      const list = bl();
      const parts: Buffer[] = [];
      for (let i = 0, n = 1 + Math.floor(rand() * 4); i < n; i++) {
        const b = Buffer.alloc(Math.floor(rand() * 9));
        for (let j = 0; j < b.length; j++) b[j] = Math.floor(rand() * 256);
        parts.push(b); list.append(b);
      }
      const all = Buffer.concat(parts);
      const drop = Math.floor(rand() * 3);
      list.consume(drop);
      const rest = all.subarray(Math.min(drop, all.length));
      for (let o = -1; o <= rest.length + 1; o++) {
        expect(outcome(() => list.readUInt8(o))).toEqual(outcome(() => rest.readUInt8(o)));
        expect(outcome(() => list.readUInt16BE(o))).toEqual(outcome(() => rest.readUInt16BE(o)));
        expect(outcome(() => list.readUInt32BE(o))).toEqual(outcome(() => rest.readUInt32BE(o)));
        for (let e = Math.max(0, o); e <= rest.length; e++) {
          if (o < 0) continue;
          expect(list.toString('latin1', o, e)).toBe(rest.toString('latin1', o, e));
          expect(list.toString('hex', o, e)).toBe(rest.toString('hex', o, e));
        }
      }
      expect(outcome(() => list.readUInt8())).toEqual(outcome(() => rest.readUInt8()));
    }
  });

  it('mqtt-packet still parses every packet it generates, however the bytes are split', () => {
    installBufferListReads();
    const rand = rng(11);
    const packets: Record<string, unknown>[] = [
      { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, clientId: 'dev-ä1', keepalive: 30, username: 'u', password: Buffer.from('p') },
      { cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'v1/devices/me/rpc/request/+', qos: 1 }] },
      { cmd: 'pingreq' },
    ];
    for (let i = 0; i < 200; i++) {
      const payload = Buffer.from(`{"ts":${1_765_080_000_000 + i},"values":{"t":${i / 10},"note":"thôn ${i}"}}`.repeat(1 + (i % 3) * 60));
      packets.push({ cmd: 'publish', topic: `v1/devices/dev-${i}/telemetry`, qos: (i % 2) as 0 | 1, messageId: i % 2 ? 1 + i : undefined, retain: false, dup: false, payload });
      packets.push({ cmd: 'puback', messageId: 1 + i });
    }
    const bytes = Buffer.concat(packets.map((p) => mqtt.generate(p)));
    const parser = mqtt.parser();
    const got: Record<string, unknown>[] = [];
    parser.on('packet', (p) => got.push(p));
    parser.on('error', (e) => { throw e; });
    for (let at = 0; at < bytes.length;) {
      const n = 1 + Math.floor(rand() * 300);
      parser.parse(bytes.subarray(at, at + n));
      at += n;
    }
    expect(got.length).toBe(packets.length);
    for (let i = 0; i < packets.length; i++) {
      const want = packets[i]!; const p = got[i]!;
      expect(p.cmd).toBe(want.cmd);
      if (want.cmd === 'publish') {
        expect(p.topic).toBe(want.topic);
        expect(Buffer.compare(p.payload as Buffer, want.payload as Buffer)).toBe(0);
        if (want.qos === 1) expect(p.messageId).toBe(want.messageId);
      }
      if (want.cmd === 'puback') expect(p.messageId).toBe(want.messageId);
      if (want.cmd === 'connect') { expect(p.clientId).toBe('dev-ä1'); expect(p.keepalive).toBe(30); expect(p.clean).toBe(false); }
      if (want.cmd === 'subscribe') expect(p.subscriptions).toEqual([{ topic: 'v1/devices/me/rpc/request/+', qos: 1 }]);
    }
  });
});
