/**
 * Header reads of the MQTT parser without a new Buffer per read.
 *
 * aedes parses MQTT with mqtt-packet, which keeps a connection's unparsed
 * bytes in a `bl` buffer list and reads every header field through it:
 * `readUInt8(offset)`, `readUInt16BE(offset)`, `toString(encoding, start,
 * end)`. bl answers each by slicing a new Buffer view of those bytes (plus an
 * array for the position) and reading that: about six views for every
 * PUBLISH, on the broker thread that every device message crosses. Measured
 * with mqtt-packet alone, 20 QoS 1 PUBLISHes per socket read: ~1,000 ns per
 * packet, ~600 ns with this.
 *
 * When the bytes lie in the list's first buffer (nearly always: a socket read
 * holds whole packets, and bl drops consumed bytes from the front), they are
 * read from that buffer directly, with the same result; anything else (bytes
 * across buffers, out of range, unusual arguments) goes to bl's own method,
 * so results and errors stay bl's. Installed on the bl instance mqtt-packet
 * itself loads; a bl whose internals differ is left alone.
 */
import { createRequire } from 'node:module';

type Method = (this: BufferListLike, ...args: unknown[]) => unknown;
interface BufferListLike { _bufs: Buffer[] }
type Proto = Record<string | symbol, unknown>;

const PATCHED = Symbol.for('keng.bufferListReads');
const NUMBER_READS: readonly (readonly [name: 'readUInt8' | 'readUInt16BE' | 'readUInt32BE', bytes: number])[] = [
  ['readUInt8', 1], ['readUInt16BE', 2], ['readUInt32BE', 4],
];

/** The prototypes of the bl that mqtt-packet uses, or null when it cannot be found or looks different. */
export function parserBufferListPrototypes(): Proto[] | null {
  let bl: { (): unknown; BufferList?: new () => unknown };
  try {
    const fromHere = createRequire(import.meta.url);
    bl = createRequire(fromHere.resolve('mqtt-packet'))('bl') as typeof bl;
  } catch {
    return null;
  }
  const protos: Proto[] = [];
  for (const C of [bl, bl.BufferList]) {
    if (typeof C !== 'function' || typeof C.prototype !== 'object') continue;
    protos.push(C.prototype as Proto);
  }
  // The shape this relies on: `_bufs`, an array of Buffers, the first holding offset 0.
  const probe = (bl as () => { _bufs?: unknown; append(b: Buffer): unknown; readUInt8(o: number): number })();
  probe.append(Buffer.from([7, 8]));
  const ok = Array.isArray(probe._bufs) && Buffer.isBuffer(probe._bufs[0]) && probe.readUInt8(1) === 8;
  return ok && protos.length > 0 ? protos : null;
}

/** Installs the direct reads (once); false when mqtt-packet's bl is not as expected (nothing changed then). */
export function installBufferListReads(): boolean {
  const protos = parserBufferListPrototypes();
  if (!protos) return false;
  for (const proto of protos) {
    if (proto[PATCHED] === true) continue;
    for (const [name, bytes] of NUMBER_READS) {
      const original = proto[name];
      if (!Object.hasOwn(proto, name) || typeof original !== 'function') continue;
      proto[name] = directRead(name, bytes, original as Method);
    }
    const toString: unknown = Reflect.get(proto, 'toString');
    if (Object.hasOwn(proto, 'toString') && typeof toString === 'function') Reflect.set(proto, 'toString', directToString(toString as Method));
    proto[PATCHED] = true;
  }
  return true;
}

// Fixed parameters (no rest arrays): these run several times per packet. bl's own methods take exactly these.
function directRead(name: 'readUInt8' | 'readUInt16BE' | 'readUInt32BE', bytes: number, original: Method): Method {
  return function (this: BufferListLike, offset?: unknown): unknown {
    const at = offset === undefined ? 0 : offset;
    const first = this._bufs[0];
    if (typeof at === 'number' && Number.isInteger(at) && at >= 0 && first !== undefined && at + bytes <= first.length) return first[name](at);
    return original.call(this, offset);
  };
}

function directToString(original: Method): Method {
  return function (this: BufferListLike, encoding?: unknown, start?: unknown, end?: unknown): unknown {
    const first = this._bufs[0];
    if (typeof encoding === 'string' && typeof start === 'number' && typeof end === 'number' && Number.isInteger(start) && Number.isInteger(end)
      && start >= 0 && start <= end && first !== undefined && end <= first.length) {
      return first.toString(encoding as BufferEncoding, start, end);
    }
    return original.call(this, encoding, start, end);
  };
}
