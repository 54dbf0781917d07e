/**
 * The lean benchmark generator (bench/lib/raw-mqtt.ts, raw-device.ts): its
 * frames are valid MQTT 3.1.1 for aedes, and only real PUBACKs, once per
 * packet id, count as acknowledgements.
 */
import net from 'node:net';
import { Aedes } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import { PublishEncoder, ServerPacketReader, encodeConnect, varintSize, writeVarint } from '../../bench/lib/raw-mqtt.js';
import { RawFleet } from '../../bench/lib/raw-device.js';

describe('raw MQTT framing', () => {
  it('encodes Remaining Length per MQTT 3.1.1 §2.2.3', () => {
    for (const [n, bytes] of [[0, [0]], [127, [0x7f]], [128, [0x80, 0x01]], [16_383, [0xff, 0x7f]], [16_384, [0x80, 0x80, 0x01]], [2_097_152, [0x80, 0x80, 0x80, 0x01]]] as const) {
      const b = Buffer.alloc(4);
      expect(writeVarint(b, 0, n)).toBe(bytes.length);
      expect([...b.subarray(0, bytes.length)]).toEqual(bytes);
      expect(varintSize(n)).toBe(bytes.length);
    }
  });

  it('parses PUBACKs split across and packed into reads, and other packets', () => {
    const acks: number[] = [];
    const other: number[] = [];
    const r = new ServerPacketReader({ connack: (rc) => other.push(100 + rc), puback: (id) => acks.push(id), other: (t) => other.push(t), error: (e) => { throw e; } });
    const stream = Buffer.from([0x20, 0x02, 0x00, 0x00, 0x40, 0x02, 0x00, 0x01, 0xd0, 0x00, 0x40, 0x02, 0x01, 0x02, 0x40, 0x02, 0xff, 0xff]);
    for (let i = 0; i < stream.length; i += 3) r.push(stream.subarray(i, i + 3));
    expect(acks).toEqual([1, 0x0102, 0xffff]);
    expect(other).toEqual([100, 13]);
  });

  it('PUBLISH frames carry topic, packet id and payload', () => {
    const enc = new PublishEncoder('v1/devices/d1/telemetry');
    const payload = '{"ts":1,"values":{"a":1.5}}';
    const buf = Buffer.alloc(enc.size(payload) + 3);
    const end = enc.write(buf, 0, 0x1234, payload);
    expect(end).toBe(enc.size(payload));
    expect(buf[0]).toBe(0x32);
    const topicLen = buf.readUInt16BE(2);
    expect(buf.subarray(4, 4 + topicLen).toString()).toBe('v1/devices/d1/telemetry');
    expect(buf.readUInt16BE(4 + topicLen)).toBe(0x1234);
    expect(buf.subarray(6 + topicLen, end).toString()).toBe(payload);
  });
});

describe('raw generator against aedes', () => {
  let server: net.Server | null = null;
  let broker: Aedes | null = null;
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    await new Promise<void>((r) => (broker ? broker.close(() => r()) : r()));
    server = null; broker = null;
  });

  async function start(opts: Parameters<typeof Aedes.createBroker>[0] = {}): Promise<number> {
    broker = await Aedes.createBroker(opts);
    const b = broker;
    server = net.createServer((s) => b.handle(s));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    return (server.address() as net.AddressInfo).port;
  }

  it('every message is published once and acknowledged once, with its ts', async () => {
    const seen = new Map<string, number[]>();
    const logins: string[] = [];
    const port = await start({
      authenticate: (client, username, password, done) => { logins.push(`${client.id}:${username}:${password?.toString()}`); done(null, true); },
      authorizePublish: (client, packet, cb) => {
        if (packet.topic.endsWith('/telemetry')) {
          expect(packet.qos).toBe(1);
          const body = JSON.parse(packet.payload.toString()) as { ts: number; values: Record<string, number> };
          expect(Object.keys(body.values)).toHaveLength(4);
          const list = seen.get(client!.id) ?? [];
          list.push(body.ts);
          seen.set(client!.id, list);
        }
        setTimeout(() => cb(null), Math.random() * 5); // acks out of order across ids
      },
    });
    const acked = new Map<number, number[]>();
    const fleet = new RawFleet({
      host: '127.0.0.1', port, window: 16, rampPerSec: 1000, maxPendingConnects: 10, keepaliveSec: 30, connectTimeoutMs: 5000,
      devices: [{ id: 'dev-a', secret: 's1', profile: 'soil' }, { id: 'dev-b', secret: 's2', profile: 'soil' }],
      onAck: (i, ts, latency, readings) => {
        expect(readings).toBe(4);
        expect(latency).toBeGreaterThanOrEqual(0);
        const l = acked.get(i) ?? [];
        l.push(ts);
        acked.set(i, l);
      },
    });
    const ramp = await fleet.connectAll();
    expect(ramp.ok).toBe(2);
    expect(logins.sort()).toEqual(['dev-a:dev-a:s1', 'dev-b:dev-b:s2']);
    fleet.startTelemetry();
    await new Promise((r) => setTimeout(r, 300));
    fleet.stopTelemetry();
    expect(await fleet.drain(5000)).toBe(true);
    await fleet.stop();
    expect(fleet.counters.errors).toBe(0);
    expect(fleet.counters.acked).toBe(fleet.counters.sent);
    expect(fleet.counters.sent).toBeGreaterThan(100);
    for (const [i, id] of ['dev-a', 'dev-b'].entries()) {
      const sent = seen.get(id)!;
      const ack = acked.get(i)!;
      expect([...ack].sort((a, b) => a - b)).toEqual(sent); // same ts set, sent in increasing order
      expect(new Set(sent).size).toBe(sent.length); // unique per device
    }
  });

  it('a refused CONNECT fails the connect', async () => {
    const port = await start({ authenticate: (_c, _u, _p, done) => done(Object.assign(new Error('no'), { returnCode: 4 }) as never, false) });
    const fleet = new RawFleet({
      host: '127.0.0.1', port, window: 1, rampPerSec: 1000, maxPendingConnects: 1, keepaliveSec: 30, connectTimeoutMs: 2000,
      devices: [{ id: 'dev-x', secret: 'bad', profile: 'soil' }], onAck: () => { throw new Error('no ack expected'); },
    });
    const ramp = await fleet.connectAll();
    expect(ramp.ok).toBe(0);
    expect(ramp.errors[0]?.message).toMatch(/return code 4|closed/);
    await fleet.stop();
  });

  it('a PUBACK for an id not in flight is an error, not an acknowledgement', async () => {
    // A fake server: CONNACK, then a PUBACK for id 777 that was never sent, then the real ones.
    server = net.createServer((s) => {
      let connected = false;
      s.on('data', (d: Buffer) => {
        if (!connected) { connected = true; s.write(Buffer.from([0x20, 0x02, 0x00, 0x00, 0x40, 0x02, 0x03, 0x09])); return; }
        // Acknowledge each PUBLISH frame (0x32) twice: the duplicate must not count.
        for (let off = 0; off < d.length;) {
          let len = 0;
          let p = off + 1;
          for (let mul = 1; ; mul *= 128) { const b = d[p++]!; len += (b & 0x7f) * mul; if (b < 0x80) break; }
          if (d[off] === 0x32) { // PUBLISH (window 1: whole frames, one at a time); others: DISCONNECT
            const id = d.readUInt16BE(p + 2 + d.readUInt16BE(p));
            s.write(Buffer.from([0x40, 0x02, id >> 8, id & 0xff, 0x40, 0x02, id >> 8, id & 0xff]));
          }
          off = p + len;
        }
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    let acks = 0;
    const fleet = new RawFleet({
      host: '127.0.0.1', port, window: 1, rampPerSec: 1000, maxPendingConnects: 1, keepaliveSec: 30, connectTimeoutMs: 2000,
      devices: [{ id: 'd1', secret: 'x', profile: 'soil' }], onAck: () => { acks++; },
    });
    await fleet.connectAll();
    fleet.startTelemetry();
    await new Promise((r) => setTimeout(r, 100));
    fleet.stopTelemetry();
    await fleet.drain(2000);
    await fleet.stop();
    expect(acks).toBe(fleet.counters.acked);
    expect(fleet.counters.acked).toBe(fleet.counters.sent);
    expect(fleet.counters.errors).toBe(fleet.counters.acked + 1); // every duplicate + the unknown id 777
  });

  it('CONNECT frame is what aedes expects (clean session, keep-alive, will)', () => {
    const f = encodeConnect({ clientId: 'd', username: 'u', password: 'p', keepaliveSec: 60, will: { topic: 't', payload: 'x', retain: true } });
    expect(f[0]).toBe(0x10);
    expect(f.subarray(2, 8).toString('latin1')).toBe('\u0000\u0004MQTT');
    expect(f[8]).toBe(4);
    expect(f[9]).toBe(0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02);
    expect(f.readUInt16BE(10)).toBe(60);
  });
});
