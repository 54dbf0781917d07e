/** One connected live-feed client: who it is, what it watches, how backed up it is. */
import type { Socket } from 'socket.io';
import type { Principal } from '../auth/types.js';
import type { BatchGroup, BatchMember } from './batch.js';
import { type Pending } from './pending.js';
import type { RequestLimit } from './request-limit.js';
import { areaRoom, deviceRoom } from './rooms.js';

/** What the feed reads of engine.io's connection (not in its public types). */
interface EngineConn {
  writeBuffer?: unknown[];
  transport?: { writable?: boolean; socket?: { bufferedAmount?: number; terminate?: () => void } };
}

export class LiveClient implements BatchMember {
  readonly devices = new Set<string>();
  readonly areas = new Set<string>();
  /** Set while backed up: the client is out of its rooms and gets coalesced updates. */
  pending: Pending | null = null;
  slowSince = 0;
  /** Batched delivery (batch.ts): the group this client's subscriptions put it in. */
  batchGroup: BatchGroup | null = null;
  /** A single-event client over live.maxEventRate: delivered through a throttled group (throttle.ts), since throttledSince (ms). */
  throttled = false;
  throttledSince = 0;

  constructor(
    readonly socket: Socket, public principal: Principal, readonly token: string, public canBroadcast: boolean,
    /** Asked for `auth: {batch: true}` at the handshake: telemetry comes as `telemetry.batch` arrays. */
    readonly batch = false,
    /** Its subscribe/unsubscribe budget (request-limit.ts); none: unlimited (tests of other parts). */
    readonly requests: RequestLimit | null = null,
  ) {}

  get id(): string { return this.socket.id; }
  /** Delivered through a group room (batched or throttled) rather than its device and area rooms. */
  get grouped(): boolean { return this.batch || this.throttled; }
  get slow(): boolean { return this.pending !== null; }
  get subscriptionCount(): number { return this.devices.size + this.areas.size; }

  /** Device and area rooms of the subscriptions. */
  subscriptionRooms(): string[] {
    return [...[...this.devices].map(deviceRoom), ...[...this.areas].map(areaRoom)];
  }

  /** The socket.io rooms the client is in while not backed up: its group's room when batched or throttled. */
  rooms(): string[] {
    if (this.grouped) return this.batchGroup ? [this.batchGroup.room] : [];
    return this.subscriptionRooms();
  }

  /** Does an event of `deviceId` whose area chain (area and ancestors) is `areaCodes` concern this client? */
  matches(deviceId: string, areaCodes: readonly string[]): boolean {
    if (this.devices.has(deviceId)) return true;
    if (this.areas.size === 0) return false;
    for (const a of areaCodes) if (this.areas.has(a)) return true;
    return false;
  }

  /** Packets waiting in engine.io's buffer and bytes waiting in the socket's outgoing buffer. */
  backlog(): { packets: number; bytes: number; writable: boolean } {
    const conn = this.socket.conn as unknown as EngineConn;
    return {
      packets: conn.writeBuffer?.length ?? 0,
      bytes: conn.transport?.socket?.bufferedAmount ?? 0,
      writable: conn.transport?.writable ?? false,
    };
  }

  /** Cut the connection now (after disconnect): a stalled peer would hold its buffers for the close handshake. */
  terminate(): void {
    const conn = this.socket.conn as unknown as EngineConn;
    try { conn.transport?.socket?.terminate?.(); } catch { /* already gone */ }
  }
}
