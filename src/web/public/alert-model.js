// The alerts screen's arithmetic, kept apart from the screen (and shared
// with the overview): the order of an alert's life, merging the live feed's
// `alert` events and later snapshots into what is shown, the sections of the
// list, the raise form's presets and the body it sends (POST /api/v1/alerts,
// docs/alerts.md).

/**
 * An alert only moves forward: pending_approval → active → a final state, or
 * pending_approval → rejected. A reply or an event that would move it back
 * was made before what is shown already, and loses.
 */
const RANK = { pending_approval: 0, active: 1, ended: 2, cancelled: 2, expired: 2, rejected: 2 };
const rank = (state) => RANK[state] ?? 0;

export const FINAL_STATES = new Set(['ended', 'cancelled', 'expired', 'rejected']);

/** The fields that change during an alert's life; the rest (its CAP text, who raised it) never does. */
const LIFE = ['state', 'broadcastId', 'approvedBy', 'approvedAt', 'endedBy', 'endedAt', 'endReason', 'replacedBy'];
const lifeOf = (a) => Object.fromEntries(LIFE.filter((k) => a[k] !== undefined).map((k) => [k, a[k]]));

/**
 * Of two versions of one alert, what to show: the later in its life; at the
 * same stage the newer reply, unless it lacks an approval the other has. A
 * reply behind in the alert's life still brings its unchanging fields (an
 * event's summary lacks them).
 */
export function newerAlert(shown, next) {
  if (!shown) return next;
  if (rank(next.state) < rank(shown.state)) return { ...next, ...lifeOf(shown) };
  if (rank(next.state) === rank(shown.state) && shown.approvedBy && !next.approvedBy) {
    return { ...next, approvedBy: shown.approvedBy, approvedAt: shown.approvedAt };
  }
  return next;
}

/**
 * A live `alert` event applied to the alert shown (or to nothing yet: a new
 * alert of another person). The event carries the summary only; the screen
 * fetches the whole alert after it, so `partial` marks what is incomplete.
 */
export function alertFromEvent(shown, e) {
  const at = typeof e.at === 'string' ? e.at : new Date(e.at ?? Date.now()).toISOString();
  const summary = {
    id: e.alertId, identifier: e.identifier, state: e.state, status: e.status, msgType: e.msgType,
    severity: e.severity, urgency: e.urgency, event: e.event, headline: e.headline, areas: e.areas ?? [],
    ...(e.broadcastId ? { broadcastId: e.broadcastId } : {}),
  };
  if (!shown) {
    return { ...summary, partial: true, playedAtOnce: false, ...(e.change === 'created' ? { createdBy: e.by, createdAt: at } : {}) };
  }
  if (rank(e.state) < rank(shown.state)) return shown;
  const next = { ...shown, ...summary };
  if ((e.change === 'approved' || e.change === 'confirmed') && e.by) Object.assign(next, { approvedBy: e.by, approvedAt: at });
  if (FINAL_STATES.has(e.state) && !shown.endedAt) Object.assign(next, { endedAt: at, ...(e.by ? { endedBy: e.by } : {}) });
  return next;
}

/** Severities from the worst: the order of the active list and of the form's choices. */
export const SEVERITIES = ['Extreme', 'Severe', 'Moderate', 'Minor', 'Unknown'];
/** Past is valid CAP but no reason to sound a loudspeaker: the form does not offer it. */
export const URGENCIES = ['Immediate', 'Expected', 'Future', 'Unknown'];
export const CERTAINTIES = ['Observed', 'Likely', 'Possible', 'Unlikely', 'Unknown'];
export const STATUSES = ['Actual', 'Exercise', 'Test'];

/** Extreme and Severe alerts are shown red: a threat to life. */
export const isGrave = (a) => a.severity === 'Extreme' || a.severity === 'Severe';

const time = (a, k) => Date.parse(a[k] ?? '') || 0;

/**
 * The list's three parts: active (worst first, then newest), waiting for
 * approval (newest first), and the recent finished ones (latest end first).
 */
export function sections(alerts, recentLimit = 30) {
  const list = [...alerts];
  const active = list.filter((a) => a.state === 'active')
    .sort((a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity) || time(b, 'createdAt') - time(a, 'createdAt'));
  const pending = list.filter((a) => a.state === 'pending_approval').sort((a, b) => time(b, 'createdAt') - time(a, 'createdAt'));
  const recent = list.filter((a) => FINAL_STATES.has(a.state))
    .sort((a, b) => (time(b, 'endedAt') || time(b, 'createdAt')) - (time(a, 'endedAt') || time(a, 'createdAt')))
    .slice(0, recentLimit);
  return { active, pending, recent };
}

/**
 * What the current user may do with an alert (the server decides; this only
 * spares a refusal): approve a pending alert or confirm one played at once,
 * unless they raised it (two-person rule); reject a pending one (its creator
 * withdraws it this way); cancel anything not finished.
 */
export function allowedActions(a, session) {
  const writer = session.role === 'admin' || session.role === 'operator';
  const mine = a.createdBy !== undefined && a.createdBy === session.username;
  const confirmable = a.state === 'active' && a.playedAtOnce && !a.approvedBy;
  return {
    mine,
    approve: writer && !a.partial && !mine && (a.state === 'pending_approval' || confirmable),
    confirming: confirmable,
    /** The approval that would be allowed but for the two-person rule: the screen says why there is no button. */
    needsOther: writer && mine && (a.state === 'pending_approval' || confirmable),
    reject: writer && a.state === 'pending_approval',
    cancel: writer && a.state === 'active',
  };
}

/**
 * Common events of a commune (the text is the CAP `event`, in Vietnamese
 * whatever the page's language: it is read aloud) with their CAP category
 * (§3.2.2: Met meteorological, incl. flood; Geo geophysical, incl.
 * landslide; Fire).
 */
export const EVENT_PRESETS = [
  { key: 'flood', event: 'Lũ', category: 'Met' },
  { key: 'flashFlood', event: 'Lũ quét', category: 'Met' },
  { key: 'landslide', event: 'Sạt lở đất', category: 'Geo' },
  { key: 'storm', event: 'Bão', category: 'Met' },
  { key: 'forestFire', event: 'Cháy rừng', category: 'Fire' },
  { key: 'cold', event: 'Rét đậm, rét hại', category: 'Met' },
  { key: 'other', event: '', category: 'Safety' },
];

/** "Cảnh báo lũ quét – Thôn Đông": the headline the form suggests, within CAP's 160 characters. */
export function suggestedHeadline(event, areaNames) {
  const e = event.trim();
  if (!e) return '';
  const base = `Cảnh báo ${e.charAt(0).toLocaleLowerCase('vi') + e.slice(1)}`;
  const where = areaNames.length ? ` – ${areaNames.join(', ')}` : '';
  const s = base + where;
  return s.length <= 160 ? s : `${s.slice(0, 159)}…`;
}

/** Year-month-day and hour:minute of `ms` in the zone `tz` (the form's date and time fields). */
export function localParts(ms, tz) {
  const p = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
  }).formatToParts(ms).map((x) => [x.type, x.value]));
  return { date: `${p.year}-${p.month}-${p.day}`, time: `${p.hour}:${p.minute}` };
}

/** The zone's UTC offset on a date ("+07:00"): the expiry is sent as the commune's wall-clock time. */
export function offsetOn(tz, ymd) {
  const part = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset' })
    .formatToParts(new Date(`${ymd}T12:00:00Z`)).find((p) => p.type === 'timeZoneName')?.value ?? 'GMT';
  const m = /GMT([+-]\d{2}:\d{2})/.exec(part);
  return m ? m[1] : '+00:00';
}

/** The expiry typed in the form as an ISO time with the commune's offset, or null when incomplete. */
export function expiresIso(f, tz) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(f.expiresDate) || !/^\d{2}:\d{2}$/.test(f.expiresTime)) return null;
  return `${f.expiresDate}T${f.expiresTime}:00${offsetOn(tz, f.expiresDate)}`;
}

/** The JSON body of POST /api/v1/alerts from the form (AlertBodySchema): empty optional texts are left out. */
export function alertBody(f, tz) {
  const preset = EVENT_PRESETS.find((p) => p.key === f.preset);
  const event = (preset && preset.key !== 'other' ? preset.event : f.otherEvent).trim();
  const opt = (k, v) => (v && v.trim() ? { [k]: v.trim() } : {});
  return {
    status: f.status, msgType: 'Alert', category: [preset?.category ?? 'Safety'], event,
    urgency: f.urgency, severity: f.severity, certainty: f.certainty,
    headline: f.headline.trim(), ...opt('description', f.description), ...opt('instruction', f.instruction),
    areas: f.areas, expires: expiresIso(f, tz), repeat: f.repeat, language: 'vi-VN',
  };
}

/** Whether an Actual alert would play as soon as it is raised (the admin's policy, docs/alerts.md). */
export function playsAtOnce(f, policy) {
  if (f.status !== 'Actual') return true;
  return f.urgency === 'Immediate' && (policy?.playAtOnce ?? []).includes(f.severity);
}

/**
 * The areas the form offers with their loudspeakers: each area's speakers
 * counted with its subtree's (an alert for a commune sounds in its villages).
 */
export function speakersBelow(areas, speakers) {
  const parentOf = new Map(areas.map((a) => [a.code, a.parent]));
  const count = new Map();
  for (const d of speakers) {
    for (let c = d.area, n = 0; c && n < 10; c = parentOf.get(c), n++) count.set(c, (count.get(c) ?? 0) + 1);
  }
  return count;
}

/** The speakers an alert for `codes` reaches (a speaker under two chosen areas counts once). */
export function speakersIn(areas, speakers, codes) {
  const parentOf = new Map(areas.map((a) => [a.code, a.parent]));
  const chosen = new Set(codes);
  return speakers.filter((d) => {
    for (let c = d.area, n = 0; c && n < 10; c = parentOf.get(c), n++) if (chosen.has(c)) return true;
    return false;
  });
}

/** A broadcast's speakers by state, from its targets (kept live by `broadcast` events). */
export function targetCounts(targets) {
  const counts = {};
  for (const s of targets.values()) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}

/** A live `alert` event applied to a list of alerts (the overview's). */
export function listWithEvent(list, e) {
  const i = list.findIndex((a) => a.id === e.alertId);
  if (i < 0) return [alertFromEvent(undefined, e), ...list];
  const next = [...list];
  next[i] = alertFromEvent(list[i], e);
  return next;
}
