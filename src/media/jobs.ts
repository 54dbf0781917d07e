/**
 * Bounds the audio work running at once. Checking an upload (ffprobe and a
 * full ffmpeg decode) or rendering speech (espeak-ng, ffmpeg) takes a core
 * for seconds; without a bound, a few clients sending long files at once ran
 * one ffmpeg each and starved the controller (ingest, the scheduler).
 *
 * At most `maxRunning` jobs run; up to `maxWaiting` more wait, first come
 * first served; beyond that a job is refused at once with 503
 * KENG_ERR_MEDIA_BUSY (`retryAfterSec` for the Retry-After header) rather
 * than holding a request and its upload open for long. Urgent jobs (alert
 * announcements) are never refused and go to the front of the queue.
 */
import { Errors, type KengError } from '../core/errors.js';

/** A refused job: the route turns retryAfterSec into Retry-After. */
export type BusyError = KengError & { retryAfterSec: number };

/** Seconds a refused client is told to wait: about one short job. */
const RETRY_AFTER_SEC = 5;

export class JobLimiter {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly o: { maxRunning: number; maxWaiting: number }) {}

  /** Jobs running and waiting now (for tests and logs). */
  get load(): { running: number; waiting: number } { return { running: this.running, waiting: this.waiting.length }; }

  async run<T>(job: () => Promise<T>, opts: { urgent?: boolean } = {}): Promise<T> {
    if (this.running < Math.max(1, this.o.maxRunning)) {
      this.running++;
    } else {
      if (!opts.urgent && this.waiting.length >= this.o.maxWaiting) throw busy(this.running, this.waiting.length);
      // The finishing job hands its slot over (running stays the same), so no newcomer can overtake.
      await new Promise<void>((resolve) => { if (opts.urgent) this.waiting.unshift(resolve); else this.waiting.push(resolve); });
    }
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); else this.running--;
    }
  }
}

function busy(running: number, waiting: number): BusyError {
  const e = Errors.MEDIA_BUSY(`${running} audio jobs are running and ${waiting} waiting (media.maxConcurrentJobs, media.maxQueuedJobs); try again in ${RETRY_AFTER_SEC} s`) as BusyError;
  e.retryAfterSec = RETRY_AFTER_SEC;
  return e;
}
