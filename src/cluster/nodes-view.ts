/**
 * What operators see of the cluster's nodes (GET /api/v1/cluster/nodes):
 * NodeLeases in cluster mode, EmbeddedNode (this one process) otherwise.
 * Times are ms (PostgreSQL's clock in cluster mode); the route formats them.
 */
export interface ClusterNodeInfo {
  nodeId: string;
  /** alive: its lease has not run out; expired: it ran out (the node died or lost the database); stopped: it stopped cleanly. */
  state: 'alive' | 'expired' | 'stopped';
  /** The node that answers. */
  self: boolean;
  startedAt: number;
  /** Cluster mode only (null in embedded mode). */
  renewedAt: number | null;
  leaseUntil: number | null;
  /** When another node swept its device sessions (its lease had run out). */
  sweptAt: number | null;
  stoppedAt: number | null;
  /** Device MQTT sessions it holds (cluster: rows in device_sessions; embedded: connected devices). */
  devices: number;
}

export interface ClusterNodes {
  readonly mode: 'cluster' | 'embedded';
  list(): Promise<ClusterNodeInfo[]>;
}

/** Embedded mode: one node, this process, without a lease. */
export class EmbeddedNode implements ClusterNodes {
  readonly mode = 'embedded' as const;
  constructor(private readonly o: { nodeId: string; startedAt: number; connectedDevices: () => number }) {}

  async list(): Promise<ClusterNodeInfo[]> {
    return [{
      nodeId: this.o.nodeId, state: 'alive', self: true, startedAt: this.o.startedAt,
      renewedAt: null, leaseUntil: null, sweptAt: null, stoppedAt: null, devices: this.o.connectedDevices(),
    }];
  }
}
