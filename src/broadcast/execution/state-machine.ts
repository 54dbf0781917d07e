/**
 * The target state machine of broadcast execution:
 *
 *   pending → sent → accepted → playing → completed
 *      │        │        │          ├────→ failed | preempted | stopped
 *      │        │        └─────────────→ failed | preempted | stopped | completed
 *      │        └→ rejected | failed (RPC `error`) | expired (no answer) | stopped
 *      │           (and straight to playing/completed/… if the response was lost)
 *      └→ offline → sent (on reconnect before notAfter) | expired | stopped
 *   accepted | playing (media) → unconfirmed, once the content must have ended
 *      (notAfter + the content's length + a grace) with no end reported
 *
 * Terminal: completed, failed, rejected, expired, preempted, stopped,
 * unconfirmed. There is no way back from a terminal state: a late `accepted`
 * after `completed` (responses and events travel on different topics) is
 * ignored and logged. One exception: `unconfirmed` was an inference, so a late
 * report of how the playback ended (completed, failed, preempted, stopped)
 * replaces it.
 */
import type { TargetState } from './types.js';

export const TERMINAL_STATES: ReadonlySet<TargetState> = new Set(['completed', 'failed', 'rejected', 'expired', 'preempted', 'stopped', 'unconfirmed']);

/** What may still replace `unconfirmed`: the speaker's own (late) report of the end. */
const AFTER_UNCONFIRMED: ReadonlySet<TargetState> = new Set(['completed', 'failed', 'preempted', 'stopped']);

/** Non-terminal states, in their forward order (a transition never goes back in this order). */
const NEXT: Readonly<Record<TargetState, readonly TargetState[]>> = {
  pending: ['sent', 'offline', 'expired', 'stopped'],
  offline: ['sent', 'expired', 'stopped'],
  sent: ['accepted', 'playing', 'completed', 'failed', 'rejected', 'preempted', 'stopped', 'expired'],
  accepted: ['playing', 'completed', 'failed', 'preempted', 'stopped', 'unconfirmed'],
  playing: ['completed', 'failed', 'preempted', 'stopped', 'unconfirmed'],
  completed: [], failed: [], rejected: [], expired: [], preempted: [], stopped: [], unconfirmed: [],
};

export type TransitionCheck = 'ok' | 'same' | 'from_terminal' | 'backwards';

export function checkTransition(from: TargetState, to: TargetState): TransitionCheck {
  if (from === to) return 'same';
  if (from === 'unconfirmed' && AFTER_UNCONFIRMED.has(to)) return 'ok';
  if (TERMINAL_STATES.has(from)) return 'from_terminal';
  return NEXT[from].includes(to) ? 'ok' : 'backwards';
}

export function isTerminal(s: TargetState): boolean {
  return TERMINAL_STATES.has(s);
}

/** Spec "Playback events" state → target state. */
export const PLAYBACK_TO_STATE: Readonly<Record<string, TargetState>> = {
  started: 'playing', completed: 'completed', failed: 'failed', preempted: 'preempted', stopped: 'stopped',
};

/** `broadcast.play` response status → target state (Keng convention, guide §11.2). `ok` is taken as accepted (ThingsBoard firmware). */
export const PLAY_RESPONSE_TO_STATE: Readonly<Record<string, TargetState>> = {
  accepted: 'accepted', ok: 'accepted', rejected: 'rejected', error: 'failed',
};
