export { IngestService, type IngestDeps } from './service.js';
export {
  decodeTelemetry, telemetryLimits, isValidFieldName, FIELD_NAME_RE,
  DEFAULT_MAX_RECORDS, DEFAULT_MAX_FIELDS, MAX_STRING_LENGTH,
  type TelemetryLimits, type DecodedRecord, type DecodeResult,
} from './codec.js';
export { parseJson, parseObject, validateTree, type RejectReason, type Failure } from './json.js';
export { GroupCommitter, countReadings, type CommitShare, type GroupCommitOptions } from './group-commit.js';
export { sessionLimits, tbRate, type SessionLimits } from './handlers/tb-rpc-request.js';
export { validatePlaybackEvent } from './handlers/events.js';
export type { SharedAttributesSource, IngestRegistry } from './handlers/context.js';
