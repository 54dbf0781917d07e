/**
 * CommitRelay (src/cluster/relay.ts): the readings of one commit (emitted
 * together by ingest's post-commit step) become one publish; a later commit
 * another; readings not yet committed (`telemetry.accepted`) never; and in
 * embedded mode (LocalOnlyBus) it does not even listen.
 */
import { describe, expect, it } from 'vitest';
import { CommitRelay, LocalOnlyBus } from '../../src/cluster/index.js';
import { EventBus, type TelemetryEvent } from '../../src/core/index.js';

const reading = (i: number): TelemetryEvent => ({ deviceId: `d${i % 3}`, area: 'va1', kind: 'sensor', ts: 1_700_000_000_000 + i, values: { v: i } });

describe('commit relay', () => {
  it('one publish per commit, in order; uncommitted readings are not shared; nothing after stop', async () => {
    const bus = new EventBus();
    const published: TelemetryEvent[][] = [];
    const relay = new CommitRelay({ bus, cluster: { shares: true, publish: (e) => { published.push([...e]); } } });
    await relay.start();
    const first = Array.from({ length: 25 }, (_, i) => reading(i));
    for (const e of first) bus.emit('telemetry', e);
    bus.emit('telemetry.accepted', reading(99));
    expect(published).toEqual([]); // not before the commit's callback has finished
    await Promise.resolve();
    expect(published).toEqual([first]);
    const second = [reading(30), reading(31)];
    await Promise.resolve().then(() => { for (const e of second) bus.emit('telemetry', e); });
    await Promise.resolve();
    expect(published).toEqual([first, second]);
    bus.emit('telemetry', reading(40));
    await relay.stop(); // flushes what it holds
    expect(published).toEqual([first, second, [reading(40)]]);
    bus.emit('telemetry', reading(41));
    await Promise.resolve();
    expect(published).toHaveLength(3);
  });

  it('embedded mode: no listener on the bus at all', async () => {
    const listeners: string[] = [];
    const bus = { on: (name: string) => { listeners.push(name); return () => undefined; } } as unknown as EventBus;
    const relay = new CommitRelay({ bus, cluster: new LocalOnlyBus() });
    await relay.start();
    expect(listeners).toEqual([]);
    await relay.stop();
  });
});
