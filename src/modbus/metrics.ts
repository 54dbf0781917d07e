/** The Modbus instruments (docs/metrics.md, "Modbus sensors"). */
import type { Registry } from 'prom-client';
import { counterOn, gaugeOn, histogramOn } from '../core/metrics.js';

export type RequestResult = 'ok' | 'timeout' | 'exception' | 'error' | 'not_connected';

export function modbusMetrics(registry: Registry | undefined) {
  return {
    requests: counterOn<'result'>(registry, 'keng_modbus_requests_total',
      'Modbus requests by result (ok, timeout, exception, error, not_connected)', ['result']),
    requestSeconds: histogramOn(registry, 'keng_modbus_request_seconds', 'Time from sending a Modbus request to its answer (answered requests)',
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    polls: counterOn<'result'>(registry, 'keng_modbus_polls_total', 'Polls of Modbus devices by result (ok, failed)', ['result']),
    connects: counterOn<'result'>(registry, 'keng_modbus_connects_total', 'Connections to Modbus TCP gateways and serial ports by result (ok, failed)', ['result']),
    disconnects: counterOn(registry, 'keng_modbus_disconnects_total', 'Modbus connections lost (gateway closed the connection, serial port gone, or dropped after repeated timeouts)'),
    pollLateness: histogramOn(registry, 'keng_modbus_poll_lateness_seconds',
      'Time from when a poll was due to when it got its line and sent its first request', [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]),
    devices: gaugeOn(registry, 'keng_modbus_devices', 'Modbus devices being polled'),
    writes: counterOn<'result'>(registry, 'keng_modbus_writes_total', 'Writes to Modbus devices by result (ok, timeout, exception, error, not_connected)', ['result']),
  };
}

/** Cluster mode: the leases of Modbus lines (leases.ts). */
export function modbusLeaseMetrics(registry: Registry | undefined) {
  return {
    held: gaugeOn(registry, 'keng_modbus_lines_held', 'Modbus lines (TCP gateways, serial ports) this node holds the lease of and polls'),
    claims: counterOn(registry, 'keng_modbus_line_claims_total', 'Modbus line leases this node claimed (a free line, or one whose lease expired)'),
    releases: counterOn<'reason'>(registry, 'keng_modbus_line_releases_total',
      'Modbus line leases this node gave up by reason (rebalance, unused, port_gone, stop)', ['reason']),
    lost: counterOn<'reason'>(registry, 'keng_modbus_line_leases_lost_total',
      'Modbus line leases this node lost and stopped polling by reason (taken_over: another node holds it; expired: not renewed in time, e.g. PostgreSQL unreachable)', ['reason']),
    errors: counterOn(registry, 'keng_modbus_lease_errors_total', 'Rounds of the Modbus line lease loop that failed (PostgreSQL error or unreachable)'),
  };
}

export type ModbusMetrics = ReturnType<typeof modbusMetrics>;

export type ModbusLeaseMetrics = ReturnType<typeof modbusLeaseMetrics>;
