/**
 * Which connected devices are not yet known to be subscribed to `rpc/request/+`
 * (firmware-protocols/device-protocol.md §1.4): after a connect a device "warms up" until its
 * first message (the connect sequence of §1.5 subscribes before publishing anything) or until
 * `readyDelayMs`, whichever comes first; then `onReady` sends what it holds.
 *
 * Separate from RpcService because BrokerPort has no subscribe signal: this guess, with its
 * per-device timers, is a concern of its own, and the service only asks isWarming().
 */
export class DeviceWarmup {
  private readonly warming = new Map<string, NodeJS.Timeout>();

  constructor(private readonly readyDelayMs: number, private readonly onReady: (deviceId: string) => void) {}

  /** A connect starts (or restarts) the wait; a disconnect ends it without sending. */
  status(deviceId: string, online: boolean): void {
    const old = this.warming.get(deviceId);
    if (old) clearTimeout(old);
    this.warming.delete(deviceId);
    if (!online) return;
    const t = setTimeout(() => this.signal(deviceId), this.readyDelayMs);
    t.unref();
    this.warming.set(deviceId, t);
  }

  /** The device is (now known to be) subscribed: send what it holds. */
  signal(deviceId: string): void {
    const t = this.warming.get(deviceId);
    if (!t) return;
    clearTimeout(t);
    this.warming.delete(deviceId);
    this.onReady(deviceId);
  }

  isWarming(deviceId: string): boolean {
    return this.warming.has(deviceId);
  }

  clear(): void {
    for (const t of this.warming.values()) clearTimeout(t);
    this.warming.clear();
  }
}
