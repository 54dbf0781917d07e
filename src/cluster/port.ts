/**
 * The cluster bus port: how one Keng node shows the readings it committed to
 * the other nodes' live views (docs/cluster.md "The live bus"), and tells them
 * which device sessions it claimed (the fast path of "one MQTT session per
 * device": a hint to close a connection, never the authority, which is the
 * device_sessions table).
 *
 * It is a best-effort view channel, never part of a correct outcome: what
 * crosses it goes to the live feed and the read-only MQTT service clients of
 * the other nodes only, never to storage, rules, alerts, presence or anything
 * else that acts on readings (those run on the node that ingested them; the
 * readings themselves are in the shared database). publish() never throws
 * and never waits for the network, so the ingest and ack paths cannot stall
 * on it.
 *
 * It also carries messages addressed to one node (sendDirect): the calls
 * between nodes of calls.ts (a Modbus write forwarded to the node polling its
 * line). Those are no exception to "best effort": a call whose message or
 * answer is lost ends, at the caller, as an answer "not sent" or "no answer
 * within the timeout", and the caller says so instead of guessing.
 *
 * Two implementations: LocalOnlyBus (embedded single-process mode, nothing to
 * share) and RedisClusterBus (redis-bus.ts, the only module that talks to
 * Redis).
 */
import type { TelemetryEvent } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';

/** Where another node's readings go on this node (the wiring gives it: live feed and service clients). */
export type RemoteReadings = (events: readonly TelemetryEvent[]) => void;

/** Another node claimed a device's MQTT session (session-claims.ts): claim `epoch`, on node `nodeId`. */
export interface SessionClaimNotice { deviceId: string; epoch: number; nodeId: string }
export type RemoteClaim = (claim: SessionClaimNotice) => void;

/** A message addressed to this node (calls.ts), as received. */
export interface DirectMessage {
  /** The sending node's id. */
  from: string;
  body: string;
  /**
   * How long ago the sender added it, on Redis's clock alone (the entry's id against Redis's TIME when it
   * was read), so no two nodes' clocks are compared; null when it could not be measured (Redis away).
   */
  ageMs: number | null;
}
export type RemoteDirect = (m: DirectMessage) => void;

export interface ClusterBus extends Component {
  /** False when there is no other node (embedded mode): then nobody collects readings for it at all. */
  readonly shares: boolean;
  /** Readings this node committed, one call per committed batch: forwarded as one entry, or counted as not forwarded. */
  publish(events: readonly TelemetryEvent[]): void;
  /**
   * This node claimed a device's session: tells the node that held it to close its connection now
   * (the fast path; reconciliation in session-claims.ts is the safe one). Best effort, never waits.
   */
  announceClaim(deviceId: string, epoch: number): void;
  /**
   * This node stored RPC commands owned by node `nodeId` (it holds their devices' sessions): a hint to pick them up
   * now rather than at its next pickup round (src/rpc/ownership.ts). Best effort, never waits.
   */
  nudgeRpc(nodeId: string): void;
  /**
   * A message for node `to` only (calls.ts). True when it was handed to Redis (it may still be lost);
   * false when it certainly was not sent (Redis away, too many calls outstanding). Never waits.
   */
  sendDirect(to: string, body: string): boolean;
  /**
   * For /readyz: always ok (without the bus a node still does all its work; its
   * live views only miss other nodes' readings), `degraded` while unconnected.
   */
  report(): { ok: true; detail: Record<string, unknown> };
}

/** The embedded single process: nobody else to tell. */
export class LocalOnlyBus implements ClusterBus {
  readonly name = 'cluster-bus';
  readonly shares = false;
  async start(): Promise<void> { /* nothing to connect */ }
  async stop(): Promise<void> { /* nothing to close */ }
  publish(): void { /* no other node */ }
  announceClaim(): void { /* no other node */ }
  nudgeRpc(): void { /* no other node */ }
  sendDirect(): boolean { return false; }
  report(): { ok: true; detail: Record<string, unknown> } { return { ok: true, detail: { mode: 'embedded' } }; }
}
