/**
 * Every route plugin of the API, registered in one place. The API serves the
 * route groups of the services it is given (`ApiServices`): the app gives all
 * of them; a test that builds an API over fakes gives what it exercises.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { Accounts } from '../../auth/accounts.js';
import type { BroadcastService } from '../../broadcast/service.js';
import type { BroadcastExecutor } from '../../broadcast/execution/index.js';
import type { MediaLibrary } from '../../media/index.js';
import type { CommandKeys, RpcService } from '../../rpc/index.js';
import type { RouteContext } from '../context.js';
import { NOT_RATE_LIMITED } from '../rate-limit.js';
import type { AlertService } from '../../alerts/index.js';
import type { AlertRules } from '../../alerts/rules/index.js';
import type { AuditAnchor } from '../../audit/index.js';
import type { SharedAttributes } from '../../attributes/index.js';
import type { Firmware } from '../../firmware/index.js';
import { alertFeedRoute, alertRoutes } from './alerts.js';
import { alertRuleRoutes } from './alert-rules.js';
import { areaRoutes } from './areas.js';
import { auditRoutes } from './audit.js';
import { loginRoutes, sessionRoutes } from './auth.js';
import { broadcastRoutes } from './broadcasts.js';
import { clusterRoutes } from './cluster.js';
import type { ClusterNodes } from '../../cluster/index.js';
import { commandKeyRoutes } from './command-keys.js';
import { deviceCommandRoutes } from './device-commands.js';
import { deviceRoutes } from './devices.js';
import { firmwareFileRoute, firmwareRoutes } from './firmware.js';
import { healthRoutes } from './health.js';
import { latestRoutes } from './latest.js';
import { mediaFileRoutes, mediaRoutes } from './media.js';
import { metricsRoutes } from './metrics.js';
import { modbusRoutes, type ModbusApi } from './modbus.js';
import { provisioningKeyRoutes } from './provisioning-keys.js';
import type { ProvisioningService } from '../../devices/provisioning.js';
import type { GatewayApi } from './devices.js';
import { scheduleRoutes } from './schedules.js';
import { sharedAttributeRoutes } from './shared-attributes.js';
import { telemetryRoutes } from './telemetry.js';
import { tokenRoutes } from './tokens.js';
import { userRoutes } from './users.js';

/** The domain services whose routes the API serves, besides areas, devices, telemetry and latest values. */
export interface ApiServices {
  /** Users, sessions, API tokens, login and the audit log's reader. */
  accounts?: Accounts;
  /** Media library (uploads, TTS) and the signed media links speakers fetch. */
  media?: MediaLibrary;
  /**
   * Base of the signed links in media replies (media.publicBaseUrl, else the server's own address,
   * as for speakers); without it, media.publicBaseUrl or no link. Never the request's Host header.
   */
  mediaLinkBase?: () => string;
  /** Schedules, broadcasts and their log. */
  broadcasts?: { service: BroadcastService; executor: BroadcastExecutor };
  /** Commands to single devices (a speaker's volume) and their state. */
  rpc?: RpcService;
  /** The public keys speakers verify signed commands with; rotation (device protocol §11.6). */
  commandKeys?: CommandKeys;
  /** Emergency alerts (CAP 1.2) and their public Atom feed. */
  alerts?: AlertService;
  /** Sensor rules that raise alerts. */
  alertRules?: AlertRules;
  /** The audit chain's head, signed with the audit key (GET /api/v1/audit/head; docs/audit.md). */
  auditHead?: () => Promise<AuditAnchor>;
  /** Modbus devices (transport, register map, poll interval), the shipped register maps, writes. */
  modbus?: ModbusApi;
  /** Provisioning keys (ThingsBoard firmware registering itself in an area). */
  provisioning?: ProvisioningService;
  /** Shared attributes of devices and areas (settings pushed to devices). */
  sharedAttributes?: SharedAttributes;
  /** Firmware updates (OTA): packages, rollouts, device states, signed downloads. */
  firmware?: Firmware;
  /** ThingsBoard-style gateways: their creation setting, refused names, sub-devices' gateways. */
  gateways?: GatewayApi;
  /** The cluster's nodes and their leases (embedded mode: the one node). */
  clusterNodes?: ClusterNodes;
  /** The web app at `/` (src/web's plugin, given by the wiring: the API does not import another edge). */
  web?: FastifyPluginAsync;
}

/** Routes outside the bearer-token hook: health, metrics, login, signed media links, the web app's files. */
export async function registerPublicRoutes(app: FastifyInstance, ctx: RouteContext, s: ApiServices, apiPrefix: string): Promise<void> {
  await app.register(healthRoutes, { ctx });
  await app.register(metricsRoutes, { ctx });
  const { accounts, media } = s;
  if (accounts) await app.register(loginRoutes, { ctx, accounts, prefix: apiPrefix });
  if (media) {
    // Loudspeakers fetch these signed links all at once (a village behind one NAT, an alert): not rate-limited.
    await app.register(async (scope) => {
      scope.addHook('onRoute', (route) => { route.config = { ...route.config, ...NOT_RATE_LIMITED }; });
      await scope.register(mediaFileRoutes, { ctx, media });
    });
  }
  if (s.alerts && ctx.config.alerts.publicFeed) await app.register(alertFeedRoute, { ctx, alerts: s.alerts });
  if (s.firmware) await app.register(firmwareFileRoute, { firmware: s.firmware });
  if (s.web) await app.register(s.web);
}

/** Routes behind the bearer-token hook (`req.principal` is set), under the API prefix. */
export async function registerSecuredRoutes(v1: FastifyInstance, ctx: RouteContext, s: ApiServices): Promise<void> {
  await v1.register(areaRoutes, { ctx });
  await v1.register(deviceRoutes, { ctx, modbus: s.modbus?.devices, gateways: s.gateways });
  if (s.modbus) await v1.register(modbusRoutes, { ctx, modbus: s.modbus });
  if (s.provisioning) await v1.register(provisioningKeyRoutes, { ctx, provisioning: s.provisioning });
  await v1.register(telemetryRoutes, { ctx });
  await v1.register(latestRoutes, { ctx });
  if (s.sharedAttributes) await v1.register(sharedAttributeRoutes, { ctx, attributes: s.sharedAttributes });
  if (s.firmware) await v1.register(firmwareRoutes, { ctx, firmware: s.firmware, linkBase: s.mediaLinkBase });
  const { accounts, media, broadcasts, rpc } = s;
  if (rpc) await v1.register(deviceCommandRoutes, { ctx, rpc });
  if (s.commandKeys) await v1.register(commandKeyRoutes, { ctx, keys: s.commandKeys });
  if (s.alerts) await v1.register(alertRoutes, { ctx, alerts: s.alerts });
  if (s.alertRules) await v1.register(alertRuleRoutes, { ctx, rules: s.alertRules });
  if (accounts) {
    await v1.register(sessionRoutes, { ctx, accounts });
    await v1.register(userRoutes, { ctx, accounts });
    await v1.register(tokenRoutes, { ctx, accounts });
    await v1.register(auditRoutes, { ctx, accounts, head: s.auditHead });
  }
  if (media) await v1.register(mediaRoutes, { ctx, media, linkBase: s.mediaLinkBase });
  if (s.clusterNodes) await v1.register(clusterRoutes, { ctx, nodes: s.clusterNodes });
  if (broadcasts) {
    await v1.register(scheduleRoutes, { ctx, service: broadcasts.service });
    await v1.register(broadcastRoutes, { ctx, service: broadcasts.service, executor: broadcasts.executor });
  }
}
