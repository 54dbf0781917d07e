// Lịch phát: a week (Monday to Sunday, commune time) of the bulletins planned
// on the speakers of the staff member's areas, with clashes — two schedules
// on one speaker at the same time — marked in red and explained; "Phát ngay"
// (play now) and "Lịch mới" (a new schedule) as forms in plain words: the
// repeat is chosen as days and a time, the cron expression is built here and
// never shown.
//
// Occurrences come from croner, the library the server's scheduler runs, in
// the schedule's own zone. The API refuses a schedule that would overlap
// another on a speaker unless it has a higher priority (409, shown in words),
// so the clashes drawn here are the ones it let through: a priority bulletin
// over a normal one, played one after the other.
import { useEffect, useMemo, useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { html, loadCss } from './ui.js';
import { request } from './op-api.js';
import { isUnauthorized, loadPlaces, Problem, speakersOf, targetWords } from './op-common.js';
import { ContentPicker, TargetPicker, contentBody, durationWords, noContent, noTarget, targetBody } from './op-content.js';
import { DAY_NAMES, DAY_SHORT, dayMonth, dayStart, fromInputs, isoDate, isoTime, weekStart } from './op-time.js';

loadCss('view-schedules.css');

addStrings({
  vi: {
    'sch.title': 'Lịch phát',
    'sch.week': 'Tuần {from} – {to}',
    'sch.prev': '‹ Tuần trước',
    'sch.next': 'Tuần sau ›',
    'sch.thisWeek': 'Tuần này',
    'sch.playNow': 'Phát ngay',
    'sch.new': 'Lịch mới',
    'sch.today': 'Hôm nay',
    'sch.nothing': 'Không có lịch phát.',
    'sch.emptyWeek': 'Tuần này chưa có lịch phát nào.',
    'sch.clash': 'Trùng giờ với «{name}» trên {speakers}.',
    'sch.clashOrder': 'Loa sẽ phát lần lượt, bản tin ưu tiên trước.',
    'sch.clashFix': 'Hãy đổi giờ một trong hai lịch.',
    'sch.clashes': '{n} chỗ trùng giờ trong tuần này.',
    'sch.off': 'Đang tắt',
    'sch.daily': 'Hằng ngày lúc {t}',
    'sch.weekly': '{days} lúc {t}',
    'sch.once': 'Một lần',
    'sch.custom': 'Lặp lại theo lịch đặt sẵn',
    'sch.form.new': 'Lịch phát mới',
    'sch.form.now': 'Phát ngay',
    'sch.name': 'Tên lịch',
    'sch.nameHint': 'Ví dụ: Bản tin sáng, Thông báo tiêm phòng',
    'sch.when': 'Thời gian',
    'sch.kind.once': 'Một lần',
    'sch.kind.weekly': 'Lặp lại hằng tuần',
    'sch.date': 'Ngày',
    'sch.time': 'Giờ',
    'sch.days': 'Các ngày trong tuần',
    'sch.everyDay': 'Cả tuần',
    'sch.volume': 'Âm lượng: {v} %',
    'sch.priority': 'Mức ưu tiên',
    'sch.save': 'Lưu lịch',
    'sch.saving': 'Đang lưu…',
    'sch.send': 'Phát ngay bây giờ',
    'sch.sending': 'Đang gửi…',
    'sch.cancel': 'Huỷ',
    'sch.saved': 'Đã lưu lịch «{name}». Lần phát tới: {next}.',
    'sch.savedNoNext': 'Đã lưu lịch «{name}».',
    'sch.started': 'Đang phát trên {n} loa. Xem tiến trình ở «Nhật ký phát».',
    'sch.details.target': 'Nơi phát',
    'sch.details.content': 'Nội dung',
    'sch.details.repeat': 'Thời gian',
    'sch.details.volume': 'Âm lượng',
    'sch.details.next': 'Các lần tới',
    'sch.disable': 'Tắt lịch',
    'sch.enable': 'Bật lịch',
    'sch.delete': 'Xoá lịch',
    'sch.confirmDelete': 'Bấm lần nữa để xoá',
    'sch.deleted': 'Đã xoá lịch «{name}».',
    'sch.tts': 'Văn bản đọc',
  },
  en: {
    'sch.title': 'Schedules',
    'sch.week': 'Week {from} – {to}',
    'sch.prev': '‹ Previous week',
    'sch.next': 'Next week ›',
    'sch.thisWeek': 'This week',
    'sch.playNow': 'Play now',
    'sch.new': 'New schedule',
    'sch.today': 'Today',
    'sch.nothing': 'Nothing planned.',
    'sch.emptyWeek': 'Nothing is planned this week.',
    'sch.clash': 'Clashes with «{name}» on {speakers}.',
    'sch.clashOrder': 'The speakers play them one after the other, the priority one first.',
    'sch.clashFix': 'Move one of the two schedules.',
    'sch.clashes': '{n} clashes this week.',
    'sch.off': 'Switched off',
    'sch.daily': 'Every day at {t}',
    'sch.weekly': '{days} at {t}',
    'sch.once': 'Once',
    'sch.custom': 'Repeats on a preset plan',
    'sch.form.new': 'New schedule',
    'sch.form.now': 'Play now',
    'sch.name': 'Name',
    'sch.nameHint': 'For example: Morning news, Vaccination notice',
    'sch.when': 'When',
    'sch.kind.once': 'Once',
    'sch.kind.weekly': 'Every week',
    'sch.date': 'Date',
    'sch.time': 'Time',
    'sch.days': 'Days of the week',
    'sch.everyDay': 'All week',
    'sch.volume': 'Volume: {v} %',
    'sch.priority': 'Priority',
    'sch.save': 'Save schedule',
    'sch.saving': 'Saving…',
    'sch.send': 'Play now',
    'sch.sending': 'Sending…',
    'sch.cancel': 'Cancel',
    'sch.saved': 'Schedule «{name}» saved. Next: {next}.',
    'sch.savedNoNext': 'Schedule «{name}» saved.',
    'sch.started': 'Playing on {n} speakers. Follow it in «Broadcast log».',
    'sch.details.target': 'Where',
    'sch.details.content': 'Content',
    'sch.details.repeat': 'When',
    'sch.details.volume': 'Volume',
    'sch.details.next': 'Next times',
    'sch.disable': 'Switch off',
    'sch.enable': 'Switch on',
    'sch.delete': 'Delete',
    'sch.confirmDelete': 'Press again to delete',
    'sch.deleted': 'Schedule «{name}» deleted.',
    'sch.tts': 'Read text',
  },
});

/** Play length assumed when neither the schedule nor its media says (as the server's overlap check does). */
const ASSUMED_SEC = 300;
const DAY_MS = 86_400_000;
const MAX_RUNS = 600;

/** A repeating schedule's cron from days (0 = Monday … 6 = Sunday) and 'HH:MM'. */
export function cronOf(days, time) {
  const [h, m] = time.split(':').map(Number);
  const list = [...new Set(days)].sort((a, b) => a - b);
  const dow = list.length === 7 ? '*' : list.map((d) => (d + 1) % 7).sort((a, b) => a - b).join(',');
  return `${m} ${h} * * ${dow}`;
}

/** The days (0 = Monday) and time of a cron this app builds, or null for any other expression. */
export function readCron(cron) {
  const m = /^(\d{1,2}) (\d{1,2}) \* \* (\*|[0-7](?:[,-][0-7])*)$/.exec(cron ?? '');
  if (!m) return null;
  const days = new Set();
  if (m[3] === '*') for (let d = 0; d < 7; d++) days.add(d);
  else {
    for (const part of m[3].split(',')) {
      const [a, b] = part.split('-').map(Number);
      for (let d = a; d <= (b ?? a); d++) days.add((d + 6) % 7);
    }
  }
  return { days: [...days].sort((a, b) => a - b), time: `${m[2].padStart(2, '0')}:${m[1].padStart(2, '0')}` };
}

function repeatWords(s, loc) {
  if (s.at) return `${loc.t('sch.once')}: ${loc.dateTime(Date.parse(s.at))}`;
  const r = readCron(s.cron);
  if (!r) return loc.t('sch.custom');
  if (r.days.length === 7) return loc.t('sch.daily', { t: r.time });
  const names = DAY_NAMES[loc.lang] ?? DAY_NAMES.vi;
  return loc.t('sch.weekly', { days: r.days.map((d) => names[d]).join(', '), t: r.time });
}

/** A schedule's occurrence starts in [from, to), not before it was made (it never played then). */
function occurrences(Cron, s, from, to, tz) {
  const made = Date.parse(s.createdAt);
  const start = s.startDate ? Date.parse(s.startDate) : -Infinity;
  const end = s.endDate ? Date.parse(s.endDate) : Infinity;
  if (s.at) {
    const t = Date.parse(s.at);
    return t >= from && t < to ? [t] : [];
  }
  if (!s.cron || !Cron) return [];
  let cron;
  try { cron = new Cron(s.cron, { timezone: s.timezone || tz, paused: true, mode: '5-part' }); } catch { return []; }
  const out = [];
  let d = new Date(Math.max(from, made, start) - 1);
  while (out.length < MAX_RUNS) {
    const n = cron.nextRun(d);
    if (!n || n.getTime() >= to || n.getTime() > end) break;
    out.push(n.getTime());
    d = n;
  }
  return out;
}

/**
 * The week's occurrences [{s, at, end, clashes: [{other, shared}]}]: two
 * enabled schedules clash where they share a speaker and their play times
 * [at, at + length) meet.
 */
function planWeek(Cron, schedules, places, mediaById, from, tz) {
  const to = from + 7 * DAY_MS;
  const lengthOf = (s) => 1000 * (s.durationSec ?? mediaById.get(s.content?.mediaId)?.durationSec ?? ASSUMED_SEC);
  const longest = schedules.reduce((m, s) => Math.max(m, lengthOf(s)), 0);
  const runs = schedules.map((s) => ({
    s, len: lengthOf(s), speakers: speakersOf(s.target, places),
    // Runs that started before the week and still play in it count for clashes.
    at: occurrences(Cron, s, from - longest, to, tz),
  }));
  const items = new Map();
  const item = (r, at) => {
    const key = `${r.s.id}@${at}`;
    let it = items.get(key);
    if (!it) items.set(key, it = { s: r.s, at, end: at + r.len, clashes: [] });
    return it;
  };
  for (const r of runs) for (const at of r.at) if (at >= from) item(r, at);
  for (let i = 0; i < runs.length; i++) {
    for (let j = i + 1; j < runs.length; j++) {
      const a = runs[i];
      const b = runs[j];
      if (!a.s.enabled || !b.s.enabled) continue;
      const shared = [...a.speakers].filter((id) => b.speakers.has(id)).length;
      if (shared === 0) continue;
      for (const x of a.at) {
        for (const y of b.at) {
          if (x < y + b.len && y < x + a.len) {
            if (x >= from) item(a, x).clashes.push({ other: b.s, shared });
            if (y >= from) item(b, y).clashes.push({ other: a.s, shared });
          }
        }
      }
    }
  }
  return [...items.values()].sort((p, q) => p.at - q.at || p.s.name.localeCompare(q.s.name, 'vi'));
}

export default function Schedules({ session, loc, onUnauthorized }) {
  const tz = loc.tz;
  const [data, setData] = useState(null);
  const [Cron, setCron] = useState(null);
  const [error, setError] = useState(null);
  const [attempt, setAttempt] = useState(0);
  const [week, setWeek] = useState(() => weekStart(Date.now(), tz));
  const [mode, setMode] = useState(null);
  const [notice, setNotice] = useState(null);
  const [open, setOpen] = useState(null);

  useEffect(() => {
    const ctrl = new AbortController();
    const { signal } = ctrl;
    setError(null);
    Promise.all([
      loadPlaces(session, signal),
      request(session, '/schedules', { signal }),
      request(session, '/media?limit=1000', { signal }).catch(() => []),
      Cron ? Promise.resolve(null) : import('./croner.js'),
    ]).then(([places, schedules, media, croner]) => {
      if (signal.aborted) return;
      if (croner) setCron(() => croner.Cron);
      setData({ places, schedules, mediaById: new Map(media.map((m) => [m.id, m])) });
    }, (err) => {
      if (signal.aborted) return;
      if (isUnauthorized(err)) onUnauthorized(); else setError(err);
    });
    return () => ctrl.abort();
  }, [session.token, attempt]);

  const plan = useMemo(() => (data && Cron ? planWeek(Cron, data.schedules, data.places, data.mediaById, week, tz) : []), [data, Cron, week]);

  if (error) {
    return html`<section class="card"><${Problem} error=${error} loc=${loc} />
      <button type="button" class="primary" onClick=${() => setAttempt((n) => n + 1)}>${loc.t('retry')}</button></section>`;
  }
  if (!data || !Cron) return html`<p class="muted center">${loc.t('loading')}</p>`;

  const reload = () => setAttempt((n) => n + 1);
  const nameOf = (id) => data.places.speakers.find((s) => s.id === id)?.name ?? id;
  const done = (text, at) => {
    setMode(null);
    setNotice(text);
    if (at) setWeek(weekStart(at, tz));
    reload();
    window.scrollTo({ top: 0, behavior: 'smooth' });
  };
  const clashCount = plan.filter((it) => it.clashes.length > 0).length;
  const days = Array.from({ length: 7 }, (_, i) => {
    const start = dayStart(week, tz, i);
    return { i, start, items: plan.filter((it) => it.at >= start && it.at < dayStart(week, tz, i + 1)) };
  });
  const today = dayStart(Date.now(), tz);
  const last = dayStart(week, tz, 6);

  return html`
    <div class="head">
      <h1>${loc.t('sch.title')}</h1>
    </div>
    ${notice && html`<p class="notice" role="status">${notice}</p>`}
    ${mode
      ? html`<${ScheduleForm} key=${mode} mode=${mode} places=${data.places} session=${session} loc=${loc} onUnauthorized=${onUnauthorized}
          nameOf=${nameOf} onCancel=${() => setMode(null)} onDone=${done} />`
      : html`<div class="actions sch-actions">
          <button type="button" class="primary" onClick=${() => { setNotice(null); setMode('now'); }}>${loc.t('sch.playNow')}</button>
          <button type="button" class="primary alt" onClick=${() => { setNotice(null); setMode('new'); }}>${loc.t('sch.new')}</button>
        </div>`}
    <section class="card week" aria-labelledby="week-title">
      <h2 id="week-title">${loc.t('sch.week', { from: dayMonth(week, tz), to: loc.date(last) })}</h2>
      <div class="week-nav">
        <button type="button" class="chip" onClick=${() => setWeek(weekStart(week - DAY_MS, tz))}>${loc.t('sch.prev')}</button>
        <button type="button" class="chip" disabled=${week === weekStart(Date.now(), tz)} onClick=${() => setWeek(weekStart(Date.now(), tz))}>${loc.t('sch.thisWeek')}</button>
        <button type="button" class="chip" onClick=${() => setWeek(weekStart(week + 8 * DAY_MS, tz))}>${loc.t('sch.next')}</button>
      </div>
      ${clashCount > 0 && html`<p class="error clash-sum" role="status">⚠ ${loc.t('sch.clashes', { n: clashCount })}</p>`}
      ${plan.length === 0 && html`<p class="muted">${loc.t('sch.emptyWeek')}</p>`}
      <ol class="days">
        ${days.map((d) => html`
          <li class=${`day${d.start === today ? ' today' : ''}${d.items.length ? '' : ' empty'}`} data-day=${isoDate(d.start, tz)}>
            <h3><span>${(DAY_NAMES[loc.lang] ?? DAY_NAMES.vi)[d.i]}</span> <span class="muted">${dayMonth(d.start, tz)}</span>
              ${d.start === today && html` <span class="pill wait">${loc.t('sch.today')}</span>`}</h3>
            ${d.items.length === 0
              ? html`<p class="muted none">${loc.t('sch.nothing')}</p>`
              : html`<ul class="items">${d.items.map((it) => html`
                  <${Item} key=${`${it.s.id}@${it.at}`} it=${it} data=${data} loc=${loc} open=${open === `${it.s.id}@${it.at}`}
                    onToggle=${() => setOpen((o) => (o === `${it.s.id}@${it.at}` ? null : `${it.s.id}@${it.at}`))}
                    session=${session} onUnauthorized=${onUnauthorized} onChanged=${(text) => { setOpen(null); done(text); }} />`)}</ul>`}
          </li>`)}
      </ol>
    </section>`;
}

function Item({ it, data, loc, open, onToggle, session, onUnauthorized, onChanged }) {
  const { s } = it;
  const [busy, setBusy] = useState(false);
  const [confirm, setConfirm] = useState(false);
  const [error, setError] = useState(null);
  const clash = it.clashes.length > 0;
  const media = data.mediaById.get(s.content?.mediaId);
  const change = async (fn, text) => {
    setBusy(true);
    setError(null);
    try { await fn(); onChanged(text); } catch (err) { if (isUnauthorized(err)) onUnauthorized(); else setError(err); } finally { setBusy(false); }
  };
  const id = encodeURIComponent(s.id);
  return html`
    <li class=${`item${clash ? ' clash' : ''}${s.enabled ? '' : ' off'}${s.priority === 'priority' ? ' prio' : ''}`} data-schedule=${s.id}>
      <button type="button" class="item-head" aria-expanded=${open} onClick=${onToggle}>
        <span class="time">${loc.time(it.at)}<small>${durationWords((it.end - it.at) / 1000, loc)}</small></span>
        <span class="name">${s.name}</span>
        <span class="where muted">${targetWords(s.target, data.places, loc)}</span>
        <span class="tags">
          ${s.priority !== 'normal' && html`<span class="pill warn">${loc.t(`priority.${s.priority}`)}</span>`}
          ${!s.enabled && html`<span class="pill off">${loc.t('sch.off')}</span>`}
        </span>
      </button>
      ${clash && html`<div class="clash-note" role="note">
        ${it.clashes.map((c) => html`<p>⚠ ${loc.t('sch.clash', { name: c.other.name, speakers: loc.t('op.speakers', { n: c.shared }) })}</p>`)}
        <p>${it.clashes.some((c) => c.other.priority !== s.priority) ? loc.t('sch.clashOrder') : loc.t('sch.clashFix')}</p>
      </div>`}
      ${open && html`<div class="item-details">
        <dl>
          <dt>${loc.t('sch.details.repeat')}</dt><dd>${repeatWords(s, loc)}</dd>
          <dt>${loc.t('sch.details.target')}</dt><dd>${targetWords(s.target, data.places, loc)}</dd>
          <dt>${loc.t('sch.details.content')}</dt><dd>${media ? `${media.name} (${durationWords(media.durationSec, loc)})` : s.content?.streamUrl ?? '–'}</dd>
          <dt>${loc.t('sch.details.volume')}</dt><dd>${s.volume} % · ${loc.t(`priority.${s.priority}`)}</dd>
          ${s.nextRuns.length > 0 && html`<dt>${loc.t('sch.details.next')}</dt><dd>${s.nextRuns.slice(0, 3).map((t) => loc.when(Date.parse(t))).join(', ')}</dd>`}
        </dl>
        <div class="actions">
          <button type="button" class="secondary" disabled=${busy}
            onClick=${() => change(() => request(session, `/schedules/${id}`, { method: 'PATCH', body: { enabled: !s.enabled } }), null)}>
            ${s.enabled ? loc.t('sch.disable') : loc.t('sch.enable')}</button>
          <button type="button" class="secondary danger" disabled=${busy}
            onClick=${() => (confirm ? change(() => request(session, `/schedules/${id}`, { method: 'DELETE' }), loc.t('sch.deleted', { name: s.name })) : setConfirm(true))}>
            ${confirm ? loc.t('sch.confirmDelete') : loc.t('sch.delete')}</button>
        </div>
        <${Problem} error=${error} loc=${loc} />
      </div>`}
    </li>`;
}

/** A local check before sending, in the API's own error shape, so it is said the same way. */
function missing(fields) {
  return fields.length ? { code: 'KENG_ERR_VALIDATION', details: fields.map((field) => ({ field, message: 'is required' })) } : null;
}

function ScheduleForm({ mode, places, session, loc, onUnauthorized, nameOf, onCancel, onDone }) {
  const tz = loc.tz;
  const soon = Math.ceil((Date.now() + 3600_000) / 300_000) * 300_000;
  const [name, setName] = useState('');
  const [target, setTarget] = useState(noTarget);
  const [content, setContent] = useState(noContent);
  const [kind, setKind] = useState('once');
  const [date, setDate] = useState(() => isoDate(soon, tz));
  const [time, setTime] = useState(() => isoTime(soon, tz));
  const [days, setDays] = useState([0, 1, 2, 3, 4, 5, 6]);
  const [volume, setVolume] = useState(70);
  const [priority, setPriority] = useState('normal');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const isNew = mode === 'new';
  const shortDays = DAY_SHORT[loc.lang] ?? DAY_SHORT.vi;

  const submit = async (e) => {
    e.preventDefault();
    const t = targetBody(target);
    const c = contentBody(content);
    const at = kind === 'once' ? fromInputs(date, time, tz) : null;
    const local = missing([
      ...(isNew && !name.trim() ? ['name'] : []),
      ...(!t.areas && !t.devices ? ['target'] : []),
      ...(!c ? ['content'] : []),
      ...(isNew && kind === 'once' && at === null ? ['at'] : []),
      ...(isNew && kind === 'weekly' && (!days.length || !/^\d{2}:\d{2}/.test(time)) ? ['cron'] : []),
    ]);
    setError(local);
    if (local) return;
    setBusy(true);
    try {
      if (isNew) {
        const body = { name: name.trim(), target: t, content: c, volume, priority, ...(kind === 'once' ? { at } : { cron: cronOf(days, time) }) };
        const s = await request(session, '/schedules', { method: 'POST', body });
        const next = s.nextRuns[0] ? Date.parse(s.nextRuns[0]) : null;
        onDone(next ? loc.t('sch.saved', { name: s.name, next: loc.dateTime(next) }) : loc.t('sch.savedNoNext', { name: s.name }), next);
      } else {
        const b = await request(session, '/broadcasts', { method: 'POST', body: { target: t, content: c, volume, priority } });
        onDone(loc.t('sch.started', { n: b.targets.length }), null);
      }
    } catch (err) {
      if (isUnauthorized(err)) onUnauthorized(); else setError(err);
      setBusy(false);
    }
  };

  const toggleDay = (d) => setDays((list) => (list.includes(d) ? list.filter((x) => x !== d) : [...list, d]));
  return html`
    <form class="card op-form sch-form" data-mode=${mode} onSubmit=${submit} novalidate>
      <h2>${loc.t(isNew ? 'sch.form.new' : 'sch.form.now')}</h2>
      ${isNew && html`<label>${loc.t('sch.name')}
        <input type="text" name="name" maxlength="200" value=${name} onInput=${(e) => setName(e.currentTarget.value)} placeholder=${loc.t('sch.nameHint')} />
      </label>`}
      <${TargetPicker} value=${target} onChange=${setTarget} places=${places} loc=${loc} name=${mode} />
      <${ContentPicker} value=${content} onChange=${setContent} session=${session} loc=${loc} onUnauthorized=${onUnauthorized} name=${mode} />
      ${isNew && html`
        <fieldset class="when">
          <legend>${loc.t('sch.when')}</legend>
          <div class="choices seg" role="radiogroup">
            ${['once', 'weekly'].map((k) => html`<label class="choice"><input type="radio" name="kind" value=${k} checked=${kind === k}
              onChange=${() => setKind(k)} /><span>${loc.t(`sch.kind.${k}`)}</span></label>`)}
          </div>
          ${kind === 'weekly' && html`
            <p class="label">${loc.t('sch.days')}</p>
            <div class="choices days-pick" role="group" aria-label=${loc.t('sch.days')}>
              ${shortDays.map((label, d) => html`<label class="choice"><input type="checkbox" name="day" value=${d} checked=${days.includes(d)}
                onChange=${() => toggleDay(d)} /><span title=${(DAY_NAMES[loc.lang] ?? DAY_NAMES.vi)[d]}>${label}</span></label>`)}
              <label class="choice"><input type="checkbox" checked=${days.length === 7}
                onChange=${() => setDays(days.length === 7 ? [] : [0, 1, 2, 3, 4, 5, 6])} /><span>${loc.t('sch.everyDay')}</span></label>
            </div>`}
          <div class="row">
            ${kind === 'once' && html`<label>${loc.t('sch.date')}<input type="date" name="date" value=${date} min=${isoDate(Date.now(), tz)}
              onInput=${(e) => setDate(e.currentTarget.value)} /></label>`}
            <label>${loc.t('sch.time')}<input type="time" name="time" value=${time} onInput=${(e) => setTime(e.currentTarget.value)} /></label>
          </div>
        </fieldset>`}
      <label>${loc.t('sch.volume', { v: volume })}
        <input type="range" name="volume" min="0" max="100" step="5" value=${volume} onInput=${(e) => setVolume(Number(e.currentTarget.value))} />
      </label>
      <fieldset>
        <legend>${loc.t('sch.priority')}</legend>
        <div class="choices seg" role="radiogroup">
          ${['normal', 'priority'].map((p) => html`<label class="choice"><input type="radio" name="priority" value=${p} checked=${priority === p}
            onChange=${() => setPriority(p)} /><span>${loc.t(`priority.${p}`)}</span></label>`)}
        </div>
      </fieldset>
      <${Problem} error=${error} loc=${loc} nameOf=${nameOf} />
      <div class="actions">
        <button type="submit" class="primary" disabled=${busy}>${busy ? loc.t(isNew ? 'sch.saving' : 'sch.sending') : loc.t(isNew ? 'sch.save' : 'sch.send')}</button>
        <button type="button" class="secondary" onClick=${onCancel}>${loc.t('sch.cancel')}</button>
      </div>
    </form>`;
}
