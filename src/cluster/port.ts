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
  report(): { ok: true; detail: Record<string, unknown> } { return { ok: true, detail: { mode: 'embedded' } }; }
}
