/**
 * An alert as Keng keeps it: the CAP 1.2 message (cap/model.ts) plus its
 * life in Keng (state, who raised and approved it, what plays it).
 */
import type { CapAlert } from './cap/index.js';

export const ALERT_STATES = ['pending_approval', 'active', 'ended', 'cancelled', 'expired', 'rejected'] as const;
export type AlertState = typeof ALERT_STATES[number];

/** States an alert never leaves. */
export const FINAL_ALERT_STATES: ReadonlySet<AlertState> = new Set(['ended', 'cancelled', 'expired', 'rejected']);

export interface Alert {
  /** Keng's id (URL); the CAP identifier is `cap.identifier`. */
  id: string;
  cap: CapAlert;
  state: AlertState;
  /** Area codes it covers (from geocodes, the areas of the speakers inside its polygons/circles, or `?areas=`). */
  areas: string[];
  /** Loudspeakers inside its polygons/circles: it sounds on these only; empty for an area alert. */
  devices: string[];
  /** Epoch ms of cap.expires. */
  expiresAt: number;
  /** The rendered announcement (tone, text, repeats). */
  mediaId?: string;
  /** The emergency broadcast that plays it, once it plays. */
  broadcastId?: string;
  createdBy: string;
  createdAt: number;
  approvedBy?: string;
  approvedAt?: number;
  /** Played before approval under the "play at once, confirm after" policy (approvedBy is then the later confirmation). */
  playedAtOnce: boolean;
  endedBy?: string;
  endedAt?: number;
  /** Why it ended: cancelled, replaced by an update, expired, rejected. */
  endReason?: string;
  /** The update that replaced it. */
  replacedBy?: string;
  updatedAt: number;
}

/** Admin policy: severities whose Actual + Immediate alerts play at once, approval following. */
export interface AlertPolicy {
  playAtOnce: Array<'Extreme' | 'Severe'>;
}

export const DEFAULT_ALERT_POLICY: AlertPolicy = { playAtOnce: [] };

export interface AlertServiceOptions {
  /** Loudspeaker volume of alerts (0-100). */
  volume: number;
  /** Seconds of attention tone. */
  toneSec: number;
  /** How long speakers may still start the cancellation notice. */
  cancelNoticeValiditySec: number;
}

/**
 * Where an alert sounds: the loudspeakers of `areas`, or, for an alert
 * given by polygons/circles, exactly `devices` (its `areas` are then those
 * loudspeakers' areas: who may approve it, who sees it).
 */
export interface AlertReach { areas: string[]; devices: string[] }
