/**
 * Broadcast execution types. A broadcast is one occurrence of playing content
 * on a set of speakers (OpenAPI at /docs, tag broadcasts); each speaker is a
 * target whose state is reported in `GET /api/v1/broadcasts/{id}`.
 */

/** Spec device-protocol.md "Loudspeaker methods": thông thường / ưu tiên / khẩn cấp. */
export type Priority = 'normal' | 'priority' | 'emergency';
export const PRIORITIES: readonly Priority[] = ['normal', 'priority', 'emergency'];

/**
 * A target's state (OpenAPI at /docs, tag broadcasts: `pending`, `sent`, `accepted`,
 * `playing`, `completed`, `failed`, `rejected`, `offline`, `expired`,
 * `preempted`, `stopped`, `unconfirmed`). See state-machine.ts for the allowed transitions.
 * `unconfirmed`: the speaker accepted (or reported `started`) but never reported the end, and
 * the content must have ended by now; firmware without playback events (ThingsBoard SDKs) ends
 * there. Not proof of play: counted apart from `completed`.
 */
export const TARGET_STATES = [
  'pending', 'sent', 'accepted', 'playing', 'completed', 'failed', 'rejected', 'offline', 'expired', 'preempted', 'stopped', 'unconfirmed',
] as const;
export type TargetState = (typeof TARGET_STATES)[number];

/**
 * A media file from the media library. The URL sent to speakers is made at
 * send time by the executor's `mediaUrl(mediaId)` (a fresh short-lived signed
 * URL, device protocol §12.1), so it is not stored.
 */
export interface MediaContent { mediaId: string; sha256: string; durationSec: number; mime: string }
/** A relayed live stream (Icecast/HTTP), passed to speakers as it is. */
export interface StreamContent { url: string }

export interface BroadcastInput {
  /** Optional caller-chosen id (1-128 chars, [A-Za-z0-9_.:-]); default `bc_<time><random>`. */
  id?: string;
  scheduleId?: string;
  /** The schedule occurrence this broadcast plays (epoch ms); default: now. */
  plannedAt?: number;
  priority: Priority;
  /** 0-100. */
  volume: number;
  /** Exactly one of media / stream. */
  media?: MediaContent;
  stream?: StreamContent;
  /** Stream only: the controller sends broadcast.stop this long after the speaker reports `started`. */
  durationSec?: number;
  /** Device ids of speakers. */
  targets: string[];
  /** Epoch ms: speakers must not start after this (`notAfter` of broadcast.play, device protocol §12.1); also the command's expiresAt. */
  notAfter: number;
}

export interface BroadcastTarget {
  deviceId: string;
  /** The device's area when the broadcast started (kept for the log even if the device moves). */
  area: string;
  state: TargetState;
  updatedAt: number;
  detail?: string;
}

export interface Broadcast {
  id: string;
  scheduleId?: string;
  plannedAt: number;
  priority: Priority;
  volume: number;
  media?: MediaContent;
  stream?: StreamContent;
  durationSec?: number;
  notAfter: number;
  /** When the executor started it (epoch ms). */
  startedAt: number;
  stopRequestedAt?: number;
  targets: BroadcastTarget[];
}

/** Who caused a log entry. */
export type LogSource = 'controller' | 'rpc' | 'event' | 'scheduler';

/** One line of the broadcast log (nhật ký phát thanh): a transition, or a missed occurrence. */
export interface LogEntry {
  /** Server time of the transition (epoch ms). */
  at: number;
  /** The speaker's own clock for playback events (`at` of the event, device protocol §12.5). */
  deviceAt?: number;
  /** Absent for a missed occurrence (no broadcast was made). */
  broadcastId?: string;
  scheduleId?: string;
  /** The schedule's name as it is now (absent once the schedule is deleted). */
  scheduleName?: string;
  /** The media file the broadcast played (absent for a stream, and for a missed occurrence). */
  mediaId?: string;
  /** The media file's name as it is now (absent once the file is deleted). */
  mediaName?: string;
  deviceId: string;
  area: string;
  /** A target state, or 'missed' for a schedule occurrence missed while Keng was down. */
  state: TargetState | 'missed';
  prevState?: TargetState;
  detail?: string;
  source: LogSource;
}

/**
 * Names of the schedules and media files the log refers to by id, so that
 * staff reading the proof of play see "Bản tin sáng", not an id. Looked up
 * when the log is read: the schedules and the media library own the names.
 */
export interface LogNames {
  schedule(id: string): string | undefined;
  media(id: string): string | undefined;
}

export interface TimeRange { from?: number; to?: number }
export interface ListQuery extends TimeRange { scheduleId?: string; area?: string; limit?: number }
export interface LogQuery extends TimeRange { scheduleId?: string; area?: string; deviceId?: string; broadcastId?: string; limit?: number }
export interface TotalsQuery extends TimeRange { area?: string }

/** Totals of one area (see totals.ts for the exact definitions). */
export interface AreaTotals {
  area: string;
  areaName?: string;
  planned: number;
  played: number;
  failed: number;
  missed: number;
  stopped: number;
  preempted: number;
  /** Accepted but the end never reported (no playback events): may have played, not proven. */
  unconfirmed: number;
  inProgress: number;
}

export interface TotalsResult { from?: number; to?: number; areas: AreaTotals[]; total: Omit<AreaTotals, 'area' | 'areaName'> }
