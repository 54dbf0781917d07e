// Calendar arithmetic in the commune's zone (not the phone's): the days of a
// week, midnight of a day, a date and a time typed in a form as an instant.
// Intl gives the zone's wall clock for an instant; the reverse is found by
// correcting a first guess with the zone's offset (twice, for DST edges).

const partsFormats = new Map();

function partsFormat(tz) {
  let f = partsFormats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
    });
    partsFormats.set(tz, f);
  }
  return f;
}

/** The wall clock of `ms` in `tz`: {y, m (1-12), d, h, min, dow (0 = Monday … 6 = Sunday)}. */
export function zoned(ms, tz) {
  const p = {};
  for (const x of partsFormat(tz).formatToParts(ms)) if (x.type !== 'literal') p[x.type] = Number(x.value);
  const dow = (new Date(Date.UTC(p.year, p.month - 1, p.day)).getUTCDay() + 6) % 7;
  return { y: p.year, m: p.month, d: p.day, h: p.hour % 24, min: p.minute, dow };
}

function offsetAt(ms, tz) {
  const z = zoned(ms, tz);
  const sec = Math.floor(ms / 1000) % 60;
  return Date.UTC(z.y, z.m - 1, z.d, z.h, z.min, sec < 0 ? sec + 60 : sec) - Math.floor(ms / 1000) * 1000;
}

/** The instant when the wall clock in `tz` shows y-m-d h:min (days and months may overflow, as with Date.UTC). */
export function zonedMs(y, m, d, h, min, tz) {
  const wall = Date.UTC(y, m - 1, d, h, min);
  let t = wall - offsetAt(wall, tz);
  t = wall - offsetAt(t, tz);
  return t;
}

/** Midnight at the start of the day of `ms` in `tz`, `days` days later. */
export function dayStart(ms, tz, days = 0) {
  const z = zoned(ms, tz);
  return zonedMs(z.y, z.m, z.d + days, 0, 0, tz);
}

/** Monday 00:00 of the week of `ms` in `tz`. */
export function weekStart(ms, tz) {
  return dayStart(ms, tz, -zoned(ms, tz).dow);
}

const pad = (n) => String(n).padStart(2, '0');

/** 'YYYY-MM-DD' of `ms` in `tz` (the value of an <input type="date">). */
export function isoDate(ms, tz) {
  const z = zoned(ms, tz);
  return `${z.y}-${pad(z.m)}-${pad(z.d)}`;
}

/** 'dd/mm' of `ms` in `tz`: the commune's short date (Intl's vi-VN writes 30-11). */
export function dayMonth(ms, tz) {
  const z = zoned(ms, tz);
  return `${pad(z.d)}/${pad(z.m)}`;
}

/** 'HH:MM' of `ms` in `tz` (the value of an <input type="time">). */
export function isoTime(ms, tz) {
  const z = zoned(ms, tz);
  return `${pad(z.h)}:${pad(z.min)}`;
}

/** An instant from a date input ('YYYY-MM-DD') and a time input ('HH:MM'), or null when either is not filled in. */
export function fromInputs(date, time, tz) {
  const d = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date ?? '');
  const t = /^(\d{2}):(\d{2})/.exec(time ?? '');
  if (!d || !t) return null;
  return zonedMs(Number(d[1]), Number(d[2]), Number(d[3]), Number(t[1]), Number(t[2]), tz);
}

/** Day names, Monday first. */
export const DAY_NAMES = {
  vi: ['Thứ Hai', 'Thứ Ba', 'Thứ Tư', 'Thứ Năm', 'Thứ Sáu', 'Thứ Bảy', 'Chủ Nhật'],
  en: ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'],
};
export const DAY_SHORT = {
  vi: ['T2', 'T3', 'T4', 'T5', 'T6', 'T7', 'CN'],
  en: ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'],
};
