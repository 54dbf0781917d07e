/**
 * API shapes of schedules, broadcasts, log lines and totals (OpenAPI at
 * /docs: times as ISO 8601 with the offset of `config.tz`). Stream URLs are
 * shown without credentials (stream-url.ts).
 */
import { formatTime } from '../core/time.js';
import type { AreaTotals, Broadcast, LogEntry, TargetState, TotalsResult } from './execution/index.js';
import type { Schedule } from './schedule/index.js';
import { redactStreamUrl, redactStreamUrls } from './stream-url.js';

const opt = <T>(k: string, v: T | undefined): Record<string, T> => (v === undefined ? {} : { [k]: v });

export function scheduleDto(s: Schedule, nextRuns: number[], tz: string) {
  const t = (ms: number | undefined) => (ms === undefined ? undefined : formatTime(ms, tz));
  return {
    id: s.id, name: s.name, target: s.target, content: redactStreamUrls(s.content),
    ...opt('cron', s.cron), ...opt('at', t(s.at)),
    timezone: s.timezone, volume: s.volume, priority: s.priority,
    ...opt('durationSec', s.durationSec), ...opt('startDate', t(s.startDate)), ...opt('endDate', t(s.endDate)),
    enabled: s.enabled, createdAt: formatTime(s.createdAt, tz), updatedAt: formatTime(s.updatedAt, tz),
    ...opt('createdBy', s.createdBy), ...opt('lastFiredAt', t(s.lastFiredAt)),
    nextRuns: nextRuns.map((ms) => formatTime(ms, tz)),
  };
}

/** A broadcast with only the targets the caller may see (`visible`), and a count per state. */
export function broadcastDto(b: Broadcast, tz: string, visible: (area: string) => boolean = () => true) {
  const targets = b.targets.filter((x) => visible(x.area));
  const counts: Partial<Record<TargetState, number>> = {};
  for (const x of targets) counts[x.state] = (counts[x.state] ?? 0) + 1;
  return {
    id: b.id, ...opt('scheduleId', b.scheduleId), priority: b.priority, volume: b.volume,
    plannedAt: formatTime(b.plannedAt, tz), startedAt: formatTime(b.startedAt, tz), notAfter: formatTime(b.notAfter, tz),
    ...opt('stopRequestedAt', b.stopRequestedAt === undefined ? undefined : formatTime(b.stopRequestedAt, tz)),
    ...opt('media', b.media), ...opt('stream', b.stream && { url: redactStreamUrl(b.stream.url) }), ...opt('durationSec', b.durationSec),
    counts,
    targets: targets.map((x) => ({
      deviceId: x.deviceId, area: x.area, state: x.state, updatedAt: formatTime(x.updatedAt, tz), ...opt('detail', x.detail),
    })),
  };
}

export function logEntryDto(e: LogEntry, tz: string) {
  return {
    at: formatTime(e.at, tz), ...opt('deviceAt', e.deviceAt === undefined ? undefined : formatTime(e.deviceAt, tz)),
    ...opt('broadcastId', e.broadcastId), ...opt('scheduleId', e.scheduleId), ...opt('scheduleName', e.scheduleName),
    ...opt('mediaId', e.mediaId), ...opt('mediaName', e.mediaName),
    deviceId: e.deviceId, area: e.area, state: e.state, ...opt('prevState', e.prevState), ...opt('detail', e.detail), source: e.source,
  };
}

const COUNT_KEYS = ['planned', 'played', 'failed', 'missed', 'stopped', 'preempted', 'unconfirmed', 'inProgress'] as const;

/** Totals restricted to visible areas (the overall total recomputed from them). */
export function totalsDto(r: TotalsResult, tz: string, visible: (area: string) => boolean = () => true) {
  const areas: AreaTotals[] = r.areas.filter((a) => visible(a.area));
  const total = Object.fromEntries(COUNT_KEYS.map((k) => [k, areas.reduce((n, a) => n + a[k], 0)])) as Record<(typeof COUNT_KEYS)[number], number>;
  return {
    ...opt('from', r.from === undefined ? undefined : formatTime(r.from, tz)), ...opt('to', r.to === undefined ? undefined : formatTime(r.to, tz)),
    areas, total,
  };
}
