/**
 * Modbus: the register maps Keng ships (GET /api/v1/modbus/maps). Modbus
 * devices themselves are registered, listed and changed with the other
 * devices (routes/devices.ts).
 */
import { Type } from 'typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ModbusDevices } from '../../modbus/index.js';
import { ShippedMapFile } from '../../modbus/index.js';
import { principalOf, type RouteContext } from '../context.js';
import { AUTH_ERRORS, errorResponses } from '../schemas.js';

export interface ModbusRouteOptions { ctx: RouteContext; modbus: ModbusDevices }

export const modbusRoutes: FastifyPluginAsyncTypebox<ModbusRouteOptions> = async (app, { ctx, modbus }) => {
  app.get('/modbus/maps', {
    schema: {
      tags: ['modbus'], summary: 'The register maps Keng ships', security: [{ bearer: [] }],
      description: 'Each map names the published register table it follows (`source`) and the sensor\'s factory serial settings '
        + '(`defaults`). Give a map\'s `name` as `registerMap` when registering a Modbus device (POST /api/v1/devices). '
        + 'How to add one: firmware-protocols/modbus/README.md.',
      response: { 200: Type.Array(ShippedMapFile, { description: 'The shipped maps, by name' }), ...errorResponses(...AUTH_ERRORS) },
    },
  }, async (req) => {
    ctx.policy.assert(principalOf(req), 'devices.read');
    return modbus.catalog.list().sort((a, b) => (a.name < b.name ? -1 : 1));
  });
};
