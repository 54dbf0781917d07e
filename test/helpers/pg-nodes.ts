/**
 * Several in-process cluster nodes on ONE real PostgreSQL 15 database, for the RPC and broadcast tests across
 * nodes: each node is an RpcService with command ownership over its own pool, state window, event bus and a
 * recording broker. The `device_sessions` and `cluster_nodes` rows that session claims and node leases would
 * write are written by the rig (admin connection), so a test decides who holds which device and who is dead.
 */
import { sql, type RawBuilder } from 'kysely';
import { EventBus, createLogger } from '../../src/core/index.js';
import { SESSION_MIGRATIONS } from '../../src/cluster/index.js';
import { RpcService, type RpcServiceOptions } from '../../src/rpc/index.js';
import { migrate, openPgDb, type Db } from '../../src/storage/sql/index.js';
import { StateWindow } from '../../src/storage/state/index.js';
import { freshStateDatabase } from './state-dialects.js';

export const silentLogger = createLogger('silent');

export interface Published { deviceId: string; requestId: string; method: string; at: number }

export interface RpcNode {
  readonly id: string;
  readonly db: Db<unknown>;
  readonly window: StateWindow;
  readonly bus: EventBus;
  readonly rpc: RpcService;
  /** Devices whose MQTT connection this node holds. */
  readonly connected: Set<string>;
  /** What the node's broker published, in order. */
  readonly published: Published[];
  stopped: boolean;
}

export interface RpcNodeOptions {
  connected?: readonly string[];
  readyDelayMs?: number;
  answerGraceMs?: number;
  sweepMs?: number;
  pickupMs?: number;
  /** The device logs in with an access token (ThingsBoard integer ids) while connected here. */
  token?: boolean;
  /** The live bus's hint to another node; default: none. */
  nudge?: (node: string) => void;
  paramsHooks?: RpcServiceOptions['paramsHooks'];
}

export class PgNodesRig {
  url = '';
  admin!: Db<unknown>;
  private readonly stops: Array<() => Promise<void>> = [];

  /** A fresh database with the cluster's session tables. */
  async open(): Promise<void> {
    this.url = await freshStateDatabase();
    this.admin = openPgDb(this.url);
    await migrate(this.admin, 'sessions', SESSION_MIGRATIONS);
  }

  /** Stops every node (last started first), then the admin connection. */
  async close(): Promise<void> {
    for (const stop of this.stops.splice(0).reverse()) await stop();
    await this.admin.close();
  }

  async rows<T>(q: RawBuilder<T>): Promise<T[]> {
    return (await q.execute(this.admin.kysely)).rows;
  }

  /** A live lease for `id` (on PostgreSQL's clock); `started` is the process's lease start. */
  async lease(id: string, o: { started?: number; ms?: number } = {}): Promise<void> {
    await sql`INSERT INTO cluster_nodes (node_id, instance, started_at, renewed_at, lease_until)
      VALUES (${id}, ${`i-${id}`}, ${o.started ?? 1}, 0, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + ${o.ms ?? 60_000})
      ON CONFLICT (node_id) DO UPDATE SET lease_until = EXCLUDED.lease_until`.execute(this.admin.kysely);
  }

  /** The node's lease ran out (it died). */
  async expire(id: string): Promise<void> {
    await sql`UPDATE cluster_nodes SET lease_until = (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 1 WHERE node_id = ${id}`.execute(this.admin.kysely);
  }

  /** Each device's session claimed by its node (as PgSessionClaims.claim does). */
  async sessions(rows: ReadonlyArray<readonly [deviceId: string, node: string]>): Promise<void> {
    if (rows.length === 0) return;
    await sql`INSERT INTO device_sessions (device_id, node_id, epoch, connected_at)
      SELECT d, n, nextval('device_session_epochs'), 0 FROM unnest(${rows.map((r) => r[0])}::text[], ${rows.map((r) => r[1])}::text[]) AS v(d, n)
      ON CONFLICT (device_id) DO UPDATE SET node_id = EXCLUDED.node_id, epoch = nextval('device_session_epochs')`.execute(this.admin.kysely);
  }

  session(deviceId: string, node: string): Promise<void> {
    return this.sessions([[deviceId, node]]);
  }

  /**
   * A node: pool, window and RpcService started. `extra` builds what the test adds on top (an executor): its
   * start runs after the RpcService's, its stop before.
   */
  async startRpcNode<N extends RpcNode = RpcNode>(id: string, o: RpcNodeOptions = {}, extra?: (n: RpcNode) => OnTop<N>): Promise<N> {
    const db = openPgDb(this.url);
    const window = new StateWindow({ db, logger: silentLogger });
    await window.start();
    const bus = new EventBus();
    const connected = new Set(o.connected ?? []);
    const published: Published[] = [];
    const rpc = new RpcService({
      db, window, bus, logger: silentLogger, readyDelayMs: o.readyDelayMs ?? 50, answerGraceMs: o.answerGraceMs ?? 1000, sweepIntervalMs: o.sweepMs ?? 100,
      ...(o.paramsHooks ? { paramsHooks: o.paramsHooks } : {}),
      broker: {
        isConnected: (d) => connected.has(d),
        ...(o.token ? { credentialOf: (d: string) => (connected.has(d) ? 'token' as const : null) } : {}),
        publish: async (topic, payload) => {
          const [, , deviceId, , , requestId] = topic.split('/');
          const body = JSON.parse(String(payload)) as { method: string };
          published.push({ deviceId: deviceId!, requestId: requestId!, method: body.method, at: Date.now() });
        },
      },
      ownership: { nodeId: id, pickupMs: o.pickupMs ?? 200, adoptMs: 300, ...(o.nudge ? { nudge: o.nudge } : {}) },
    });
    const base: RpcNode = { id, db, window, bus, rpc, connected, published, stopped: false };
    const added = extra ? extra(base) : null;
    const n = (added?.node ?? base) as N;
    await rpc.start();
    await added?.start();
    const stop = async (): Promise<void> => {
      if (n.stopped) return;
      n.stopped = true;
      await added?.stop();
      await rpc.stop();
      await window.stop();
      await db.close();
    };
    this.stops.push(stop);
    stopFns.set(n, stop);
    return n;
  }
}

/** What a test builds on top of a node's RpcService. */
export interface OnTop<N extends RpcNode> { node: N; start(): Promise<void>; stop(): Promise<void> }

const stopFns = new WeakMap<RpcNode, () => Promise<void>>();

/** Stops a node started by a rig (a clean stop; idempotent). */
export async function stopRpcNode(n: RpcNode): Promise<void> {
  await stopFns.get(n)?.();
}

/** The device connects to this node (the caller makes its session claim): the `status` online event. */
export function connectOn(n: RpcNode, deviceId: string): void {
  n.connected.add(deviceId);
  n.bus.emit('status', { deviceId, area: 'p', online: true, at: Date.now() });
}

export function disconnectFrom(n: RpcNode, deviceId: string): void {
  n.connected.delete(deviceId);
  n.bus.emit('status', { deviceId, area: 'p', online: false, at: Date.now() });
}
