/**
 * Validation of `broadcast.play` params as a speaker does it
 * (firmware-protocols/device-protocol.md §12.1, "Reasons to answer rejected").
 */
import type { PlayItem, SpeakerPriority } from './playout.js';

export const SUPPORTED_MIMES: ReadonlySet<string> = new Set(['audio/mpeg', 'audio/mp3', 'audio/ogg', 'audio/wav', 'audio/x-wav', 'audio/wave']);
const PRIORITIES: ReadonlySet<string> = new Set(['normal', 'priority', 'emergency']);

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parsePlayParams(p: unknown, now: number): { ok: true; item: PlayItem } | { ok: false; detail: string } {
  const bad = (detail: string) => ({ ok: false as const, detail });
  if (!isObj(p)) return bad('params must be an object');
  const { broadcastId, priority, volume, media, stream, notAfter } = p;
  if (typeof broadcastId !== 'string' || broadcastId.length === 0 || broadcastId.length > 128) return bad('bad broadcastId');
  if (typeof priority !== 'string' || !PRIORITIES.has(priority)) return bad('bad priority');
  if (typeof volume !== 'number' || !Number.isFinite(volume) || volume < 0 || volume > 100) return bad('volume out of range');
  if (typeof notAfter !== 'number' || !Number.isFinite(notAfter)) return bad('bad notAfter');
  if (notAfter < now) return bad('notAfter passed');
  if ((media === undefined) === (stream === undefined)) return bad('exactly one of media or stream is required');
  const item: PlayItem = { broadcastId, priority: priority as SpeakerPriority, volume, notAfter };
  if (media !== undefined) {
    if (!isObj(media)) return bad('bad media');
    const { url, sha256, durationSec, mime } = media;
    if (typeof url !== 'string' || !/^https?:\/\//.test(url)) return bad('bad media.url');
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(sha256)) return bad('bad media.sha256');
    if (typeof durationSec !== 'number' || !Number.isFinite(durationSec) || durationSec <= 0) return bad('bad media.durationSec');
    if (typeof mime !== 'string' || !SUPPORTED_MIMES.has(mime)) return bad(`unsupported mime ${String(mime).slice(0, 64)}`);
    item.media = { url, sha256: sha256.toLowerCase(), durationSec, mime };
  } else {
    if (!isObj(stream) || typeof stream.url !== 'string' || !/^https?:\/\//.test(stream.url)) return bad('bad stream.url');
    item.stream = { url: stream.url };
  }
  return { ok: true, item };
}
