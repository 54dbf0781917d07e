/**
 * SUBACK must tell the QoS actually granted (MQTT 3.1.1 §3.9.3). aedes 1.2
 * answers with the QoS the client asked for: lib/handlers/subscribe.js takes
 * SubState.granted from the request *before* authorizeSubscribe runs, and a
 * hook that lowers `sub.qos` changes only the stored subscription. A device
 * that asked for QoS 2 was told "2" and then got QoS 1 deliveries; a client
 * library that trusts SUBACK (and expects PUBREC/PUBREL) misbehaves.
 *
 * So the request itself is capped before aedes reads it: a listener put in
 * front of aedes' own on the connection's parser (mqtt-packet emits each
 * decoded packet to its 'packet' listeners in order) lowers each requested
 * QoS to what this connection may get. The cap depends on who connects, read
 * from the CONNECT packet, which always comes first through the same parser.
 * The authorizeSubscribe hooks keep their own caps for subscriptions restored
 * from a persistent session (they never pass the parser).
 *
 * Uses aedes' `_parser` (the frame guard does too); when it is not there,
 * nothing is installed and SUBACK is as aedes makes it.
 */
import type { Client, ConnectPacket } from 'aedes';

export type Qos = 0 | 1 | 2;

interface PacketLike { cmd?: string; subscriptions?: Array<{ qos: number }> }
interface ParserLike { prependListener?(event: 'packet', fn: (p: PacketLike) => void): unknown }

/** Cap every SUBSCRIBE of `client` at `maxQos(connect packet)`; false when the parser is not as expected. */
export function capGrantedQos(client: Client, maxQos: (connect: ConnectPacket) => Qos): boolean {
  const parser = (client as unknown as { _parser?: ParserLike })._parser;
  if (!parser || typeof parser.prependListener !== 'function') return false;
  // Until a CONNECT is seen (aedes refuses anything else first) the strictest device rule applies.
  let cap: Qos = 1;
  parser.prependListener('packet', (p) => {
    if (p.cmd === 'connect') cap = maxQos(p as ConnectPacket);
    else if (p.cmd === 'subscribe' && Array.isArray(p.subscriptions)) {
      for (const s of p.subscriptions) if (s.qos > cap) s.qos = cap;
    }
  });
  return true;
}
