/**
 * `media.prefetch` (device protocol §12.7): asking speakers to download and cache a media file ahead of a
 * broadcast.play of it that may follow (an alert awaiting approval), and withdrawing what is still held.
 * Not part of any broadcast: no target rows, no log lines. The executor's prefetch()/withdrawPrefetch().
 */
import type { Logger } from '../../core/logger.js';
import { PREFETCH_METHOD } from '../../core/protocol.js';
import type { DeviceRegistryApi } from '../../devices/registry-types.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { MediaContent } from './types.js';

export interface PrefetchDeps {
  rpc: Pick<RpcService, 'sendMany' | 'cancelQueuedByParam'>;
  registry: Pick<DeviceRegistryApi, 'getDevice' | 'attributes'>;
  logger: Logger;
}

/** The media fields a command carries (the stored params keep mediaId; the send-time hook adds the signed URL). */
export function pickMedia(m: MediaContent): MediaContent {
  return { mediaId: m.mediaId, sha256: m.sha256, durationSec: m.durationSec, mime: m.mime };
}

/**
 * Send-time params of broadcast.play and media.prefetch (the executor's playParams, the RPC service's params
 * hook for them): a fresh signed URL for the media (device protocol §12.1, §12.7).
 */
export function withSignedUrl(params: Record<string, unknown>, mediaUrl: (mediaId: string) => string): Record<string, unknown> {
  const media = params.media as MediaContent | undefined;
  if (!media) return params;
  const { mediaId, ...rest } = media;
  return { ...params, media: { url: mediaUrl(mediaId), ...rest } };
}

/**
 * Sends `media.prefetch` to the speakers among `deviceIds` that list it in their capabilities (the others'
 * firmware would answer `rejected` "unknown method"); held for an offline speaker until `until` like any
 * command. Resolves with how many speakers were asked, after the commit of their commands.
 */
export function prefetch(d: PrefetchDeps, deviceIds: readonly string[], media: MediaContent, until: number): Promise<number> {
  const able = deviceIds.filter((id) => {
    if (d.registry.getDevice(id)?.kind !== 'speaker') return false;
    const caps = d.registry.attributes(id).capabilities;
    return Array.isArray(caps) && caps.includes(PREFETCH_METHOD);
  });
  if (able.length === 0) return Promise.resolve(0);
  const p = d.rpc.sendMany(able, PREFETCH_METHOD, { media: pickMedia(media) }, { expiresAt: until });
  d.logger.info({ mediaId: media.mediaId, speakers: able.length, of: deviceIds.length }, 'media prefetch sent');
  return p.then(() => able.length);
}

/** Withdraws the prefetches of `mediaId` still queued; resolves with how many once committed (0, logged, on failure). */
export function withdrawPrefetch(d: PrefetchDeps, mediaId: string): Promise<number> {
  return d.rpc.cancelQueuedByParam(PREFETCH_METHOD, '$.media.mediaId', mediaId).then((n) => {
    if (n > 0) d.logger.info({ mediaId, withdrawn: n }, 'media prefetch withdrawn');
    return n;
  }, (err: unknown) => {
    d.logger.error({ err, mediaId }, 'media prefetch withdrawal could not be stored');
    return 0;
  });
}
