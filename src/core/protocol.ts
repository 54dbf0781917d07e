/**
 * Words of the device protocol (firmware-protocols/device-protocol.md,
 * "Commands (RPC)" and "Playback events"), defined once for every part that
 * reads or writes them: the ingest handlers that validate what devices send,
 * the RPC service and broadcast executor that act on it, the simulator that
 * plays a speaker.
 */

/** `status` of an answer on `rpc/response/R`. */
export const RPC_STATUSES = ['accepted', 'rejected', 'ok', 'error'] as const;
export type RpcStatus = (typeof RPC_STATUSES)[number];

/** `state` of a `{"type": "playback"}` event. */
export const PLAYBACK_STATES = ['started', 'completed', 'failed', 'preempted', 'stopped'] as const;
export type PlaybackState = (typeof PLAYBACK_STATES)[number];

/** Loudspeaker RPC methods. */
export const PLAY_METHOD = 'broadcast.play';
export const STOP_METHOD = 'broadcast.stop';
export const SET_VOLUME_METHOD = 'speaker.setVolume';
/**
 * Optional (device protocol §12.7, a Keng addition): download and cache a media file by its
 * SHA-256 ahead of a `broadcast.play` that may follow (an alert awaiting its second person's
 * approval). Sent only to speakers that list it in their `capabilities` attribute; it makes no
 * sound, so it is not signed.
 */
export const PREFETCH_METHOD = 'media.prefetch';

/**
 * "Commands that make speakers sound or stop (`broadcast.play`, `broadcast.stop`) carry a
 * signature" (device protocol §11.6, version 1.1): these requests also hold `signed`, `sig`, `kid`.
 */
export const SIGNED_METHODS: readonly string[] = [PLAY_METHOD, STOP_METHOD];
/** `alg` of every command key (`GET /api/v1/command-keys`). */
export const COMMAND_KEY_ALG = 'Ed25519';
/** `detail` of the `rejected` answer of a speaker that verifies signed commands (§11.6). */
export const SIGNED_COMMAND_REFUSALS = ['unsigned', 'bad_signature', 'unknown_key', 'wrong_device', 'wrong_request_id', 'expired', 'replayed'] as const;
export type SignedCommandRefusal = (typeof SIGNED_COMMAND_REFUSALS)[number];

const rpcStatuses: ReadonlySet<string> = new Set(RPC_STATUSES);
const playbackStates: ReadonlySet<string> = new Set(PLAYBACK_STATES);

export function isRpcStatus(v: unknown): v is RpcStatus {
  return typeof v === 'string' && rpcStatuses.has(v);
}

export function isPlaybackState(v: unknown): v is PlaybackState {
  return typeof v === 'string' && playbackStates.has(v);
}

/**
 * ThingsBoard device provisioning over MQTT (firmware-protocols/provisioning.md):
 * a CONNECT with this username opens a provisioning session,
 * which may only publish the request and receive the answer on these topics.
 */
export const PROVISION_USERNAME = 'provision';
export const PROVISION_REQUEST_TOPIC = '/provision/request';
export const PROVISION_RESPONSE_TOPIC = '/provision/response';
/** `status` of a provisioning answer, with ThingsBoard's own `errorMsg` words (firmware compares them). */
export const PROVISION_STATUSES = ['SUCCESS', 'NOT_FOUND', 'FAILURE'] as const;
export type ProvisionStatus = (typeof PROVISION_STATUSES)[number];
export const PROVISION_NOT_FOUND_MSG = 'Provision data was not found!';
export const PROVISION_FAILURE_MSG = 'Failed to provision device!';
