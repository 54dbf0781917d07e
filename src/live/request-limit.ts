/**
 * `subscribe` and `unsubscribe` per client (docs/live-feed.md "Limits"). Each
 * request checks the caller's scope and may count the devices of whole areas:
 * a client that sends them in a loop (69,000 in 2 s were accepted before)
 * keeps the main thread from every other client and device. A token bucket
 * per client (`requestRatePerSec`, burst `requestBurst`): a request over it is
 * answered at once with KENG_ERR_RATE_LIMITED and not processed; more than
 * `requestFloodDisconnectAfter` refusals within 10 s disconnect the client.
 */
import { AbuseCounter } from '../broker/abuse.js';
import { TokenBucket } from '../broker/rate-limit.js';

export const REQUEST_FLOOD_WINDOW_MS = 10_000;

export interface RequestLimitSettings {
  requestRatePerSec: number;
  requestBurst: number;
  requestFloodDisconnectAfter: number;
}

export type RequestVerdict = 'ok' | 'refused' | 'flood';

export class RequestLimit {
  private readonly bucket: TokenBucket;
  private readonly refusals: AbuseCounter;

  constructor(s: RequestLimitSettings, now: number) {
    this.bucket = new TokenBucket(s.requestRatePerSec, s.requestBurst, now);
    this.refusals = new AbuseCounter(s.requestFloodDisconnectAfter, REQUEST_FLOOD_WINDOW_MS);
  }

  /** 'ok': process the request; 'refused': answer KENG_ERR_RATE_LIMITED; 'flood': that, and disconnect the client. */
  take(now: number): RequestVerdict {
    if (this.bucket.tryTake(now)) return 'ok';
    return this.refusals.hit(now) ? 'flood' : 'refused';
  }
}
