/**
 * The node holding a device's MQTT session in cluster mode (PostgreSQL, docs/cluster.md "One MQTT session per
 * device"): its own `device_sessions` row, or for a gateway's sub-device (src/gateway: reached only through its
 * gateway's connection) the row of its gateway. NULL when no node holds it.
 */
import { sql, type RawBuilder } from 'kysely';

export function sessionHolder(deviceId: RawBuilder<unknown>): RawBuilder<string | null> {
  return sql<string | null>`COALESCE((SELECT ds.node_id FROM device_sessions ds WHERE ds.device_id = ${deviceId}),
    (SELECT gs.node_id FROM gateway_sub_devices g JOIN device_sessions gs ON gs.device_id = g.gateway_id WHERE g.device_id = ${deviceId}))`;
}
