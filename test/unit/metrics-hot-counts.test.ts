import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/core/metrics.js';

describe('per-message counts (HotCounts)', () => {
  it('reach keng_messages_in_total at every read, once each', async () => {
    const m = new Metrics({ defaultMetrics: false });
    const t = m.messagesIn('telemetry');
    for (let i = 0; i < 5; i++) t.inc();
    m.messagesIn('status').inc(2);
    expect(await m.registry.metrics()).toMatch(/keng_messages_in_total\{type="telemetry"\} 5\n/);
    t.inc();
    const got = await m.messagesInTotal.get();
    const by = Object.fromEntries(got.values.map((v) => [v.labels.type, v.value]));
    expect(by).toEqual({ telemetry: 6, status: 2 });
    // A read without new counts adds nothing.
    expect((await m.messagesInTotal.get()).values.find((v) => v.labels.type === 'telemetry')?.value).toBe(6);
  });
});
