export * from './types.js';
export { MapCatalog, loadMaps, shippedMapsDir } from './maps.js';
export {
  InlineMap, Register, RegisterMapRef, ShippedMapFile, TcpTransport, RtuTransport, Transport, PollIntervalSec,
  MAX_MAP_REGISTERS, MAP_NAME_RE, checkMap, inlineMapErrors, transportErrors, validationError,
} from './map-schema.js';
export { decodeRegister, encodeRegister, rawValue, readingProblem, scaled } from './codec.js';
export { planReads, blockReadings, MAX_READ_REGISTERS, MAX_READ_BITS, type ReadBlock } from './plan.js';
export { ModbusDevices, DEFAULT_POLL_INTERVAL_SEC, describeLine, type ModbusInput, type ModbusChanges } from './devices.js';
export { MODBUS_MIGRATION } from './migrations.js';
export { MODBUS_PG_MIGRATIONS } from './pg-schema.js';
export { ModbusPoller, type PollerDeps, type PollerOptions } from './poller.js';
export type { PollRecord, ReadingSink } from './poll.js';
export { ModbusLine, ModbusError, EXCEPTION_NAMES, worstRequestMs, type LineIo, type ReadOp, type WriteOp } from './line.js';
export { prepareWrite, writeField, writableRegister, type PreparedWrite, type WriteResult } from './write.js';
export { ModbusWrites, FORWARD_KIND, forwardTimeoutMs, type ForwardAnswer, type ForwardContext, type ForwardOutcome, type ModbusWritesDeps, type NodeCalls, type WriteRequest } from './writes.js';
export { ModbusLineLeases, LEASE_MS, CLAIM_PERIOD_MS, SAFETY_MARGIN_MS, type LineGate, type LineHooks, type LineLeasesOptions } from './leases.js';
export { LineLeaseRepo, lineHolders, type HeldLease, type LeaseRow } from './lease-repo.js';
export type { LiveNodes } from './live-nodes.js';
