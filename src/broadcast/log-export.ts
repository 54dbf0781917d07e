/**
 * The broadcast log (nhật ký phát thanh) restricted to a caller's areas
 * (docs/roles.md: operators and service tokens see their areas
 * only). A caller covering every area, or asking for one area, gets the
 * executor's own query; one covering several areas gets the union of one
 * query per area, rendered with the same CSV columns as executor.csv().
 */
import type { DeviceRegistryApi } from '../devices/registry-types.js';
import { LOG_CSV_HEADER, logCsvRow, toCsv, type BroadcastExecutor, type LogEntry, type LogQuery } from './execution/index.js';

export type LogScope = 'all' | readonly string[];

/** Log entries of the areas in `scope` (top-level codes; each covers its subtree). */
export async function scopedLog(exec: BroadcastExecutor, q: LogQuery, scope: LogScope): Promise<LogEntry[]> {
  if (scope === 'all' || q.area !== undefined) return exec.log(q);
  const seen = new Set<string>();
  const out: LogEntry[] = [];
  for (const area of scope) {
    for (const e of await exec.log({ ...q, area })) {
      const k = `${e.at}|${e.broadcastId ?? ''}|${e.scheduleId ?? ''}|${e.deviceId}|${e.state}|${e.source}`;
      if (!seen.has(k)) { seen.add(k); out.push(e); }
    }
  }
  out.sort((a, b) => a.at - b.at);
  return q.limit !== undefined ? out.slice(0, q.limit) : out;
}

/** CSV (UTF-8 with BOM, RFC 4180) of the log within `scope`; the same columns as executor.csv(). */
export async function scopedCsv(exec: BroadcastExecutor, reg: Pick<DeviceRegistryApi, 'getArea' | 'getDevice'>, q: LogQuery, scope: LogScope, tz: string): Promise<string> {
  if (scope === 'all' || q.area !== undefined || scope.length === 1) return exec.csv(scope !== 'all' && q.area === undefined ? { ...q, area: scope[0]! } : q);
  const rows = (await scopedLog(exec, q, scope)).map((e) => logCsvRow(e, tz, (c) => reg.getArea(c)?.name ?? '', (id) => reg.getDevice(id)?.name ?? ''));
  return toCsv(LOG_CSV_HEADER, rows);
}
