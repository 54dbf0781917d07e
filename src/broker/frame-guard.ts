/**
 * Oversized-frame guard. aedes' MQTT parser (mqtt-packet) has no size limit:
 * it buffers a whole packet of up to 256 MiB before aedes sees it. Payloads
 * above mqtt.maxPayloadBytes are refused per message (acknowledged and dropped);
 * frames so large that even buffering them is abuse are cut off here, as soon
 * as their fixed header announces the length.
 *
 * This wraps the per-connection parser's parse() and reads `packet.length`
 * (the announced remaining length of the packet being assembled): mqtt-packet
 * 9 internals, feature-detected so a changed parser only disables the guard.
 */
import type { Client } from 'aedes';

interface ParserLike { parse(buf: Buffer): number; packet?: { length?: number } }

/** Install the guard; returns false when the parser does not look as expected. */
export function installFrameGuard(client: Client, maxFrameBytes: number, onTooLarge: (announced: number) => void): boolean {
  const parser = (client as unknown as { _parser?: ParserLike })._parser;
  if (!parser || typeof parser.parse !== 'function' || typeof parser.packet !== 'object') return false;
  const parse = parser.parse;
  let tripped = false;
  parser.parse = function guardedParse(this: ParserLike, buf: Buffer): number {
    const rest = parse.call(this, buf);
    const announced = this.packet?.length ?? -1;
    if (announced > maxFrameBytes && !tripped) {
      tripped = true;
      onTooLarge(announced);
    }
    return rest;
  };
  return true;
}
