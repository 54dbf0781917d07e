/**
 * Per-device token bucket (config mqtt.rateLimitPerSec sustained,
 * mqtt.rateLimitBurst burst) used as MQTT flow control: a message over the
 * rate is not refused but *reserved*, the bucket going into debt, and the
 * broker holds that message's callback (so aedes reads no more from the
 * device's socket and the PUBACK waits) until the debt is paid back by time.
 * Allocation-free: one object per device, two numbers updated per message.
 * Time comes from the caller (injectable clock).
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(private readonly ratePerSec: number, private readonly burst: number, now: number) {
    this.tokens = burst;
    this.last = now;
  }

  /**
   * Take one token, borrowing it when the bucket is empty. Returns how long
   * (ms) the message must wait before it is within the rate: 0 while the
   * burst lasts, then 1000/rate ms per message already waiting. Messages
   * reserved one after another wait in that order.
   */
  reserve(now: number): number {
    this.refill(now);
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.ratePerSec);
  }

  /** Take one token if there is one (no debt); false when the rate is exceeded (the caller refuses the request). */
  tryTake(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** True when the bucket has refilled completely (the device's state can be forgotten). */
  isFull(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.burst;
  }

  private refill(now: number): void {
    const elapsed = now - this.last;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSec) / 1000);
      this.last = now;
    }
  }
}
