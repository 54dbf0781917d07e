/**
 * Minimal MQTT 3.1.1 client-side framing for the lean load generator
 * (raw-device.ts): exactly what a pipelining QoS 1 telemetry device needs.
 *
 * Why not mqtt.js: on this 2-core machine the generator shares the CPU with
 * the server, and mqtt.js spends ~100% of a core at 20k msg/s (one stream
 * write, one store entry, several closures and nextTicks per packet; profile
 * in the ingest report). Pre-encoding the frames here and writing many per
 * socket write keeps the generator small, so the benchmark measures Keng.
 *
 * Encodings follow the MQTT 3.1.1 spec (sections 2.2 and 3): fixed header,
 * "Remaining Length" variable-length integer, UTF-8 strings with a 2-byte
 * length prefix. test/unit/bench-raw-mqtt.test.ts checks them against the
 * mqtt-packet parser that aedes itself uses.
 */

/** Bytes needed for the MQTT "Remaining Length" of `n` (1-4). */
export function varintSize(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/** Writes the MQTT "Remaining Length" `n` at `off`; returns the offset after it. */
export function writeVarint(buf: Buffer, off: number, n: number): number {
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    buf[off++] = b;
  } while (n > 0);
  return off;
}

function mqttString(s: string | Buffer): Buffer {
  const body = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const out = Buffer.allocUnsafe(2 + body.length);
  out.writeUInt16BE(body.length, 0);
  body.copy(out, 2);
  return out;
}

export interface ConnectOptions {
  clientId: string;
  username?: string;
  password?: string;
  keepaliveSec: number;
  /** Last Will (QoS 1), as the mqtt.js simulator sets it. */
  will?: { topic: string; payload: string; retain: boolean };
}

/** CONNECT, protocol level 4 (3.1.1), clean session. */
export function encodeConnect(o: ConnectOptions): Buffer {
  let flags = 0x02; // clean session
  const parts: Buffer[] = [mqttString('MQTT'), Buffer.from([4, 0, (o.keepaliveSec >> 8) & 0xff, o.keepaliveSec & 0xff])];
  parts.push(mqttString(o.clientId));
  if (o.will) {
    flags |= 0x04 | (1 << 3) | (o.will.retain ? 0x20 : 0); // will flag, will QoS 1, will retain
    parts.push(mqttString(o.will.topic), mqttString(Buffer.from(o.will.payload, 'utf8')));
  }
  if (o.username !== undefined) { flags |= 0x80; parts.push(mqttString(o.username)); }
  if (o.password !== undefined) { flags |= 0x40; parts.push(mqttString(Buffer.from(o.password, 'utf8'))); }
  parts[1]![1] = flags;
  const body = Buffer.concat(parts);
  const head = Buffer.allocUnsafe(1 + varintSize(body.length));
  head[0] = 0x10;
  writeVarint(head, 1, body.length);
  return Buffer.concat([head, body]);
}

export const PINGREQ = Buffer.from([0xc0, 0x00]);
export const DISCONNECT = Buffer.from([0xe0, 0x00]);

/**
 * PUBLISH frames (QoS 1, no DUP, no RETAIN) to one topic. `size(payload)`
 * gives the frame length so a caller can size one buffer for many frames;
 * `write` encodes one frame into it. Payloads must be ASCII (the generator's
 * are JSON of numbers and field names it checked once, see raw-device.ts),
 * so their string length is their byte length.
 */
export class PublishEncoder {
  private readonly topic: Buffer;

  constructor(topic: string) {
    this.topic = mqttString(topic);
  }

  size(payload: string): number {
    const rem = this.topic.length + 2 + payload.length;
    return 1 + varintSize(rem) + rem;
  }

  write(buf: Buffer, off: number, packetId: number, payload: string): number {
    const rem = this.topic.length + 2 + payload.length;
    buf[off++] = 0x32; // PUBLISH, QoS 1
    off = writeVarint(buf, off, rem);
    off += this.topic.copy(buf, off);
    buf[off++] = packetId >> 8;
    buf[off++] = packetId & 0xff;
    return off + buf.write(payload, off, 'latin1');
  }
}

export function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** What the broker sends a telemetry device, as far as the generator cares. */
export interface ServerPacketSink {
  connack(returnCode: number): void;
  puback(packetId: number): void;
  /** Any other packet (PINGRESP, SUBACK, PUBLISH...): type nibble; counted, otherwise ignored. */
  other(type: number): void;
  /** Malformed stream: the connection should be dropped. */
  error(err: Error): void;
}

/**
 * Incremental parser of the server → client byte stream: frames may arrive
 * split across or packed into TCP reads. Keeps at most one partial frame.
 */
export class ServerPacketReader {
  private rest: Buffer | null = null;

  constructor(private readonly sink: ServerPacketSink) {}

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.rest) { buf = Buffer.concat([this.rest, chunk]); this.rest = null; }
    const n = buf.length;
    let off = 0;
    while (off < n) {
      // Fast path: PUBACK is 0x40 0x02 id id (the bulk of the stream).
      if (buf[off] === 0x40 && off + 4 <= n && buf[off + 1] === 0x02) {
        this.sink.puback((buf[off + 2]! << 8) | buf[off + 3]!);
        off += 4;
        continue;
      }
      // Generic frame: fixed header byte, Remaining Length (1-4 bytes), body.
      let len = 0;
      let mul = 1;
      let p = off + 1;
      let complete = false;
      for (let i = 0; i < 4 && p < n; i++) {
        const b = buf[p++]!;
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) { complete = true; break; }
        if (i === 3) { this.sink.error(new Error('malformed Remaining Length from server')); return; }
      }
      if (!complete || p + len > n) break; // wait for the rest of this frame
      const type = buf[off]! >> 4;
      if (type === 2) this.sink.connack(len >= 2 ? buf[p + 1]! : 255);
      else if (type === 4) {
        if (len !== 2) { this.sink.error(new Error(`PUBACK with remaining length ${len}`)); return; }
        this.sink.puback((buf[p]! << 8) | buf[p + 1]!);
      } else this.sink.other(type);
      off = p + len;
    }
    if (off < n) this.rest = Buffer.from(buf.subarray(off)); // copy: `chunk` may be reused by the caller
  }
}
