/** Load shapes of bench:ingest: devices × QoS 1 messages in flight per device. */
export interface Shape { devices: number; window: number }

/** Most firmware: one message in flight; a few devices with deep queues; a large fleet with deep queues. */
export const DEFAULT_SHAPES: Shape[] = [{ devices: 200, window: 1 }, { devices: 20, window: 20 }, { devices: 100, window: 64 }];

export function parseShapes(s: string): Shape[] {
  return s.split(',').map((part) => {
    const m = /^\s*(\d+)\s*[x×]\s*(\d+)\s*$/.exec(part);
    if (!m) throw new Error(`shape "${part}" is not DEVICESxWINDOW (e.g. 200x1)`);
    return { devices: Number(m[1]), window: Number(m[2]) };
  });
}
