/** ISO 8601 with the offset of a time zone (spec http-api.md: "times are ISO 8601 with offset on output"). */
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'longOffset',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** e.g. isoWithOffset(1764460800000, 'Asia/Ho_Chi_Minh') = '2025-11-30T07:00:00.000+07:00'. */
export function isoWithOffset(ms: number, timeZone = 'Asia/Ho_Chi_Minh'): string {
  const parts: Record<string, string> = {};
  for (const p of formatter(timeZone).formatToParts(new Date(ms))) parts[p.type] = p.value;
  const off = (parts.timeZoneName ?? 'GMT').replace('GMT', '') || '+00:00';
  const msPart = String(((ms % 1000) + 1000) % 1000).padStart(3, '0');
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:${parts.second}.${msPart}${off === '+00:00' ? 'Z' : off}`;
}
