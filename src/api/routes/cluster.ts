/**
 * GET /api/v1/cluster/nodes (OpenAPI at /docs, tag cluster; docs/cluster.md "Node leases"): the nodes of
 * the cluster with their lease state and how many device sessions each holds. Admin only (cluster.read):
 * an installation-wide view. In embedded mode it lists the one node (mode `embedded`, no lease), so a
 * monitoring script works on both.
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ClusterNodeInfo, ClusterNodes } from '../../cluster/index.js';
import { formatTime, formatTimeOrNull } from '../../core/time.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, Described, StringEnum, Time, errorResponses } from '../schemas.js';

const NullableTime = Type.Union([Time, Type.Null()]);

const ClusterNode = Type.Object({
  nodeId: Type.String({ description: 'KENG_NODE_ID (cluster.nodeId), or the host name' }),
  state: StringEnum(['alive', 'expired', 'stopped'] as const, {
    description: 'alive: its lease has not run out; expired: it ran out (the node died, hangs, or lost the database), and its devices are '
      + 'written offline by the live nodes; stopped: it stopped cleanly',
  }),
  self: Type.Boolean({ description: 'The node that answers this request' }),
  startedAt: Time,
  renewedAt: Described(NullableTime, 'Last renewal of its lease (database clock); null in embedded mode'),
  leaseUntil: Described(NullableTime, 'When its lease runs out unless renewed (database clock); null in embedded mode'),
  sweptAt: Described(NullableTime, 'When another node removed its device sessions because its lease had run out'),
  stoppedAt: Described(NullableTime, 'When it stopped cleanly'),
  devices: Type.Integer({ minimum: 0, description: 'Device MQTT sessions it holds (cluster: device_sessions rows; embedded: connected devices)' }),
});

const ClusterNodesReply = Type.Object({
  mode: StringEnum(['cluster', 'embedded'] as const, { description: 'embedded: one process without a cluster database (one node, no lease)' }),
  nodes: Type.Array(ClusterNode, { description: 'Sorted by node id' }),
});

export const clusterRoutes: FastifyPluginAsyncTypebox<{ ctx: RouteContext; nodes: ClusterNodes }> = async (app, { ctx, nodes }) => {
  const dto = (n: ClusterNodeInfo) => ({
    nodeId: n.nodeId, state: n.state, self: n.self, startedAt: formatTime(n.startedAt, ctx.tz),
    renewedAt: formatTimeOrNull(n.renewedAt, ctx.tz), leaseUntil: formatTimeOrNull(n.leaseUntil, ctx.tz),
    sweptAt: formatTimeOrNull(n.sweptAt, ctx.tz), stoppedAt: formatTimeOrNull(n.stoppedAt, ctx.tz), devices: n.devices,
  });

  app.get('/cluster/nodes', {
    schema: {
      tags: ['cluster'], summary: 'The cluster\'s nodes and their leases (admin)', security: [{ bearer: [] }],
      description: 'Every node known to the cluster database with its lease (docs/cluster.md "Node leases"). A node whose lease ran out '
        + 'is `expired`: the live nodes have written its devices offline and removed its sessions. Rows of nodes dead for a day are '
        + 'forgotten. In embedded mode: the one node, `mode: "embedded"`, without lease times.',
      response: { 200: Described(ClusterNodesReply, 'The nodes'), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    ctx.policy.assert(principalOf(req), 'cluster.read');
    return { mode: nodes.mode, nodes: (await nodes.list()).map(dto) };
  });
};
