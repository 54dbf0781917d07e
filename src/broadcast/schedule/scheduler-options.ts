/** What the scheduler (scheduler.ts) is given, what it gives onOccurrence, and what it reports. */
import type { Transaction } from 'kysely';
import type { Clock } from '../../core/clock.js';
import type { Logger } from '../../core/logger.js';
import type { Schedule } from './model.js';
import type { ScheduleRepo } from './repo.js';

export interface OccurrenceInfo {
  /** Clock time when onOccurrence was called. */
  firedAt: number;
  /** firedAt − plannedAt, ms. */
  lateMs: number;
  /** True when fired inside the grace window for an occurrence due before the scheduler (re)started. */
  catchUp: boolean;
  /**
   * Records the occurrence `fired` with `broadcastId` inside `trx`, the caller's transaction on the repo's database
   * that creates the broadcast: both commit together, or neither. Rejects with ClaimLostError when this node no
   * longer holds the claim (its lease ended: recorded missed); the caller must then let `trx` (or its savepoint)
   * roll back. After using it, onOccurrence must settle only once `trx` has committed (resolve) or rolled back
   * (reject). Absent when the repo cannot write in a caller's transaction.
   */
  recordFired?: (trx: Transaction<unknown>, broadcastId: string) => Promise<void>;
}

/** The claim of an occurrence is no longer this node's: its lease ended and it was recorded missed. */
export class ClaimLostError extends Error {
  constructor(readonly scheduleId: string, readonly plannedAt: number) {
    super(`schedule ${scheduleId}: the claim of the occurrence planned at ${plannedAt} expired (recorded missed)`);
    this.name = 'ClaimLostError';
  }
}

/** What onOccurrence may return: the id of the broadcast it started (recorded with the claim), or nothing. */
export type OccurrenceResult = string | undefined | void;

export interface SchedulerOptions {
  repo: ScheduleRepo;
  clock: Clock;
  logger: Logger;
  /** This node's name in its claims. Default 'local'. */
  nodeId?: string;
  /** Occurrences at most this late are still played (once); older ones are missed. Default 60,000. */
  graceMs?: number;
  onOccurrence: (schedule: Schedule, plannedAt: number, info: OccurrenceInfo) => OccurrenceResult | Promise<OccurrenceResult>;
  onMissed: (schedule: Schedule, plannedAt: number) => void | Promise<void>;
  /** A claim without an outcome this long after it was made is recorded missed (its node died). Default 60,000. */
  claimLeaseMs?: number;
  /**
   * Cluster mode: re-read the schedules (changes made through other nodes) and look for expired claims this
   * often. Default 0: off (one node makes every change itself).
   */
  resyncMs?: number;
  /** Called with every schedule at start and at each re-read (the caller's caches of names). */
  onSchedules?: (schedules: Schedule[]) => void;
  /** How long settled claims are kept (each schedule's latest always is). Default 90 days. */
  keepOccurrencesMs?: number;
  /** Delay before a claim that failed to be written is tried again. Default 1,000. */
  retryMs?: number;
  /** Longest single timer delay (re-armed in chunks). Default 60,000. */
  maxTimerMs?: number;
  /** How many start-jitter values to keep. Default 10,000. */
  jitterSamples?: number;
  /** At most this many missed occurrences are reported per schedule per catch-up (the rest are logged as a count). Default 1,000. */
  maxMissedPerCatchUp?: number;
}

export interface JitterStats { count: number; p50: number; p99: number; max: number; mean: number }
