/**
 * Which nodes are alive, for the fair share of Modbus lines (leases.ts): a port the wiring fills in
 * (src/app.ts) with the cluster's node leases (src/cluster/node-leases.ts), so the Modbus module does
 * not depend on the cluster module.
 */
export interface LiveNodes {
  /** The ids of the nodes alive now (this node may be missing: the caller counts itself anyway). */
  liveNodeIds(): Promise<string[]>;
}
