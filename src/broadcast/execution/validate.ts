/** Shape checks of a BroadcastInput (400 KENG_ERR_VALIDATION with the field in details). */
import { Errors, withDetails } from '../../core/errors.js';
import { PRIORITIES, type BroadcastInput } from './types.js';

export const BROADCAST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
export const MAX_TARGETS = 10_000;

function invalid(field: string, message: string): Error {
  return withDetails(Errors.VALIDATION(message), { field });
}

export function validateBroadcastInput(b: BroadcastInput, now: number): void {
  if (typeof b !== 'object' || b === null) throw invalid('', 'broadcast must be an object');
  if (b.id !== undefined && (typeof b.id !== 'string' || !BROADCAST_ID_RE.test(b.id))) throw invalid('id', `id must match ${BROADCAST_ID_RE.source}`);
  if (b.scheduleId !== undefined && (typeof b.scheduleId !== 'string' || b.scheduleId.length === 0 || b.scheduleId.length > 128)) {
    throw invalid('scheduleId', 'scheduleId must be 1-128 characters');
  }
  if (!PRIORITIES.includes(b.priority)) throw invalid('priority', `priority must be one of ${PRIORITIES.join(', ')}`);
  if (!Number.isInteger(b.volume) || b.volume < 0 || b.volume > 100) throw invalid('volume', 'volume must be an integer 0-100');
  if ((b.media === undefined) === (b.stream === undefined)) throw invalid('content', 'exactly one of media or stream is required');
  if (b.media !== undefined) {
    const m = b.media;
    if (typeof m.mediaId !== 'string' || m.mediaId.length === 0) throw invalid('media.mediaId', 'media.mediaId is required');
    if (typeof m.sha256 !== 'string' || !SHA256_RE.test(m.sha256)) throw invalid('media.sha256', 'media.sha256 must be 64 lower-case hex digits');
    if (typeof m.durationSec !== 'number' || !Number.isFinite(m.durationSec) || m.durationSec <= 0) throw invalid('media.durationSec', 'media.durationSec must be > 0');
    if (typeof m.mime !== 'string' || !/^audio\/[a-z0-9.+-]+$/.test(m.mime)) throw invalid('media.mime', 'media.mime must be an audio/* type');
  }
  if (b.stream !== undefined && (typeof b.stream.url !== 'string' || !/^https?:\/\/\S+$/.test(b.stream.url))) {
    throw invalid('stream.url', 'stream.url must be an http(s) URL');
  }
  if (b.durationSec !== undefined && (typeof b.durationSec !== 'number' || !Number.isFinite(b.durationSec) || b.durationSec <= 0)) {
    throw invalid('durationSec', 'durationSec must be > 0');
  }
  if (!Number.isFinite(b.notAfter) || b.notAfter <= now) throw invalid('notAfter', 'notAfter must be in the future');
  if (b.plannedAt !== undefined && !Number.isFinite(b.plannedAt)) throw invalid('plannedAt', 'plannedAt must be epoch milliseconds');
  if (!Array.isArray(b.targets) || b.targets.length === 0) throw invalid('targets', 'at least one target speaker is required');
  if (b.targets.length > MAX_TARGETS) throw invalid('targets', `at most ${MAX_TARGETS} targets`);
}

/** The speakers of `ids` with their areas, each once (404 unknown device, 400 not a speaker). */
export function speakerTargets(reg: { getDevice(id: string): { kind: string; area: string } | undefined }, ids: readonly string[]): Array<{ deviceId: string; area: string }> {
  const targets: Array<{ deviceId: string; area: string }> = [];
  const seen = new Set<string>();
  for (const deviceId of ids) {
    if (seen.has(deviceId)) continue;
    seen.add(deviceId);
    const d = reg.getDevice(deviceId);
    if (!d) throw withDetails(Errors.NOT_FOUND(`Device "${String(deviceId)}"`), { field: 'targets' });
    if (d.kind !== 'speaker') throw withDetails(Errors.VALIDATION(`device "${deviceId}" is not a speaker`), { field: 'targets' });
    targets.push({ deviceId, area: d.area });
  }
  return targets;
}
