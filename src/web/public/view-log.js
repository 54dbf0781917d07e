// Nhật ký phát: the broadcasts of the staff member's areas, newest first, each
// with its schedule and audio by name and every speaker's state in words and
// colour, updating live; a running broadcast can be stopped; and the proof of
// play downloads as the server's CSV (GET /broadcasts/log?format=csv, fetched
// with the token, since a plain link cannot carry it).
import { useEffect, useRef, useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { html, loadCss } from './ui.js';
import { request, saveBlob } from './op-api.js';
import { ACTIVE_STATES, isUnauthorized, LiveBadge, loadPlaces, Problem, StatePill, STATE_TONE, within } from './op-common.js';
import { dayStart, fromInputs, isoDate } from './op-time.js';

loadCss('view-log.css');

addStrings({
  vi: {
    'log.title': 'Nhật ký phát',
    'log.from': 'Từ ngày',
    'log.to': 'Đến ngày',
    'log.area': 'Khu vực',
    'log.allAreas': 'Tất cả khu vực của bạn',
    'log.csv': 'Tải tệp CSV (Excel)',
    'log.csvBusy': 'Đang tải…',
    'log.csvDone': 'Đã tải tệp {name}.',
    'log.none': 'Không có lần phát nào trong khoảng này.',
    'log.playNow': 'Phát ngay (không theo lịch)',
    'log.stream': 'Tiếp sóng',
    'log.stop': 'Dừng phát',
    'log.stopping': 'Đang dừng…',
    'log.stopAsked': 'Đã yêu cầu dừng lúc {t}.',
    'log.volume': 'Âm lượng {v} %',
    'log.more': 'Xem thêm',
    'log.limit': 'Chỉ hiện {n} lần phát mới nhất: hãy chọn khoảng ngày ngắn hơn.',
  },
  en: {
    'log.title': 'Broadcast log',
    'log.from': 'From',
    'log.to': 'To',
    'log.area': 'Area',
    'log.allAreas': 'All your areas',
    'log.csv': 'Download CSV (Excel)',
    'log.csvBusy': 'Downloading…',
    'log.csvDone': 'Downloaded {name}.',
    'log.none': 'Nothing was broadcast in this period.',
    'log.playNow': 'Played now (no schedule)',
    'log.stream': 'Relayed stream',
    'log.stop': 'Stop',
    'log.stopping': 'Stopping…',
    'log.stopAsked': 'Stop asked at {t}.',
    'log.volume': 'Volume {v} %',
    'log.more': 'Show more',
    'log.limit': 'Only the newest {n} are shown: choose a shorter period.',
  },
});

const LIMIT = 200;
const TONE_ORDER = ['run', 'wait', 'warn', 'bad', 'ok', 'off'];

export default function Log({ session, loc, onUnauthorized }) {
  const tz = loc.tz;
  const [from, setFrom] = useState(() => isoDate(dayStart(Date.now(), tz, -6), tz));
  const [to, setTo] = useState(() => isoDate(Date.now(), tz));
  const [area, setArea] = useState('');
  const [places, setPlaces] = useState(null);
  const [names, setNames] = useState({ schedules: new Map(), media: new Map() });
  const [list, setList] = useState(null);
  const [error, setError] = useState(null);
  const [live, setLive] = useState(false);
  const [attempt, setAttempt] = useState(0);
  const [csv, setCsv] = useState({ busy: false, done: null, error: null });
  // The live feed's handler reads the list as it is now, not as it was when the feed connected.
  const listRef = useRef(null);
  listRef.current = list;

  const range = () => {
    const f = fromInputs(from, '00:00', tz);
    const t = fromInputs(to, '00:00', tz);
    return { f, t: t === null ? null : dayStart(t, tz, 1) };
  };
  const query = () => {
    const { f, t } = range();
    const q = new URLSearchParams();
    if (f !== null) q.set('from', String(f));
    if (t !== null) q.set('to', String(t));
    if (area) q.set('area', area);
    return q;
  };

  // Places, names and the live feed: once per session.
  useEffect(() => {
    const ctrl = new AbortController();
    const { signal } = ctrl;
    let close = null;
    (async () => {
      const [p, schedules, media] = await Promise.all([
        loadPlaces(session, signal),
        request(session, '/schedules', { signal }).catch(() => []),
        request(session, '/media?limit=1000', { signal }).catch(() => []),
      ]);
      if (signal.aborted) return;
      setPlaces(p);
      const nameMaps = (ss, ms) => ({ schedules: new Map(ss.map((s) => [s.id, s.name])), media: new Map(ms.map((m) => [m.id, m.name])) });
      setNames(nameMaps(schedules, media));
      // A broadcast that arrives live may play a schedule or a file made after the names were read.
      const refreshNames = () => Promise.all([request(session, '/schedules'), request(session, '/media?limit=1000')])
        .then(([ss, ms]) => { if (!signal.aborted) setNames(nameMaps(ss, ms)); }, () => {});
      const { connectLive, feedSubscription } = await import('./live.js');
      const pending = new Set();
      const stop = await connectLive({
        token: session.token, subscription: feedSubscription(session, p.areas), onState: setLive, onUnauthorized,
        on: {
          broadcast: (m) => {
            const items = listRef.current;
            if (!items) return;
            if (!items.some((x) => x.id === m.broadcastId)) {
              // A broadcast that started after the list was read: fetched whole, once, and shown on top.
              if (pending.has(m.broadcastId)) return;
              pending.add(m.broadcastId);
              request(session, `/broadcasts/${encodeURIComponent(m.broadcastId)}`)
                .then((fresh) => {
                  setList((cur) => (cur && !cur.some((x) => x.id === fresh.id) ? [fresh, ...cur] : cur));
                  return refreshNames();
                }, () => {})
                .finally(() => pending.delete(m.broadcastId));
              return;
            }
            setList((cur) => cur?.map((x) => (x.id === m.broadcastId
              ? { ...x, targets: x.targets.map((t) => (t.deviceId === m.deviceId ? { ...t, state: m.state, updatedAt: m.at } : t)) }
              : x)));
          },
        },
      }).catch(() => null);
      if (signal.aborted) stop?.(); else close = stop;
    })().catch((err) => {
      if (signal.aborted) return;
      if (isUnauthorized(err)) onUnauthorized(); else setError(err);
    });
    return () => { ctrl.abort(); close?.(); };
  }, [session.token]);

  // The list, again whenever the period or the area changes.
  useEffect(() => {
    const ctrl = new AbortController();
    setError(null);
    const q = query();
    q.set('limit', String(LIMIT));
    request(session, `/broadcasts?${q}`, { signal: ctrl.signal }).then((l) => { if (!ctrl.signal.aborted) setList(l); }, (err) => {
      if (ctrl.signal.aborted) return;
      if (isUnauthorized(err)) onUnauthorized(); else setError(err);
    });
    return () => ctrl.abort();
  }, [session.token, from, to, area, attempt]);

  const download = async () => {
    setCsv({ busy: true, done: null, error: null });
    try {
      const q = query();
      q.set('format', 'csv');
      const { blob, filename } = await request(session, `/broadcasts/log?${q}`, { as: 'blob' });
      saveBlob(blob, filename);
      setCsv({ busy: false, done: filename, error: null });
    } catch (err) {
      if (isUnauthorized(err)) onUnauthorized();
      else setCsv({ busy: false, done: null, error: err });
    }
  };

  // A broadcast the live feed announced may fall outside the chosen period or area: the list shows what was asked for.
  const { f, t } = range();
  const shown = (list ?? []).filter((b) => {
    const at = Date.parse(b.startedAt);
    return (f === null || at >= f) && (t === null || at < t);
  });
  const areaOptions = places ? places.areas.filter((a) => places.speakers.some((s) => within(places.areaByCode, s.area, a.code))) : [];

  return html`
    <div class="head">
      <h1>${loc.t('log.title')}</h1>
      <${LiveBadge} live=${live} loc=${loc} />
    </div>
    <form class="card op-form log-filter" onSubmit=${(e) => e.preventDefault()}>
      <div class="row">
        <label>${loc.t('log.from')}<input type="date" name="from" value=${from} max=${to} onChange=${(e) => setFrom(e.currentTarget.value)} /></label>
        <label>${loc.t('log.to')}<input type="date" name="to" value=${to} min=${from} onChange=${(e) => setTo(e.currentTarget.value)} /></label>
      </div>
      ${areaOptions.length > 1 && html`<label>${loc.t('log.area')}
        <select name="area" value=${area} onChange=${(e) => setArea(e.currentTarget.value)}>
          <option value="">${loc.t('log.allAreas')}</option>
          ${areaOptions.map((a) => html`<option value=${a.code}>${a.name}</option>`)}
        </select></label>`}
      <button type="button" class="secondary csv" disabled=${csv.busy} onClick=${download}>⬇ ${csv.busy ? loc.t('log.csvBusy') : loc.t('log.csv')}</button>
      ${csv.done && html`<p class="note ok" role="status">${loc.t('log.csvDone', { name: csv.done })}</p>`}
      <${Problem} error=${csv.error} loc=${loc} />
    </form>
    ${error && html`<section class="card"><${Problem} error=${error} loc=${loc} />
      <button type="button" class="primary" onClick=${() => setAttempt((n) => n + 1)}>${loc.t('retry')}</button></section>`}
    ${!list || !places
      ? !error && html`<p class="muted center">${loc.t('loading')}</p>`
      : html`
        ${shown.length === 0 && html`<section class="card"><p>${loc.t('log.none')}</p></section>`}
        ${list.length >= LIMIT && html`<p class="notice">${loc.t('log.limit', { n: LIMIT })}</p>`}
        <div class="grid log-list">
          ${shown.map((b) => html`<${BroadcastCard} key=${b.id} b=${b} places=${places} names=${names} session=${session} loc=${loc}
            onUnauthorized=${onUnauthorized} onStopped=${(after) => setList((items) => items.map((x) => (x.id === after.id ? after : x)))} />`)}
        </div>`}`;
}

function BroadcastCard({ b, places, names, session, loc, onUnauthorized, onStopped }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const title = b.scheduleId ? names.schedules.get(b.scheduleId) ?? b.scheduleId : loc.t('log.playNow');
  const what = b.media ? names.media.get(b.media.mediaId) ?? b.media.mediaId : b.stream ? loc.t('log.stream') : '';
  const counts = Object.entries(b.targets.reduce((m, t) => ({ ...m, [t.state]: (m[t.state] ?? 0) + 1 }), {}))
    .sort(([x], [y]) => TONE_ORDER.indexOf(STATE_TONE[x]) - TONE_ORDER.indexOf(STATE_TONE[y]));
  const active = !b.stopRequestedAt && b.targets.some((t) => ACTIVE_STATES.has(t.state));
  const speaker = (id) => places.speakers.find((s) => s.id === id);
  const stop = async () => {
    setBusy(true);
    setError(null);
    try {
      onStopped(await request(session, `/broadcasts/${encodeURIComponent(b.id)}/stop`, { method: 'POST' }));
    } catch (err) {
      if (isUnauthorized(err)) onUnauthorized(); else setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <article class=${`card bc${active ? ' active' : ''}`} data-broadcast=${b.id}>
      <header>
        <p class="when">${loc.when(Date.parse(b.startedAt))}</p>
        <h2>${title}</h2>
        ${what && html`<p class="muted what">${what}</p>`}
        <p class="muted meta">${loc.t('log.volume', { v: b.volume })}${b.priority !== 'normal' ? ` · ${loc.t(`priority.${b.priority}`)}` : ''}</p>
      </header>
      <p class="counts">${counts.map(([state, n]) => html`<span class=${`pill ${STATE_TONE[state] ?? 'off'}`}>${n} · ${loc.t(`bstate.${state}`)}</span>`)}</p>
      <ul class="targets">
        ${b.targets.map((t) => html`<li data-device=${t.deviceId}>
          <span class="who"><strong>${speaker(t.deviceId)?.name ?? t.deviceId}</strong>
            <span class="muted">${places.areaByCode.get(t.area)?.name ?? t.area}</span></span>
          <${StatePill} state=${t.state} loc=${loc} />
          <span class="muted at">${loc.time(Date.parse(t.updatedAt))}${t.detail && STATE_TONE[t.state] === 'bad' ? ` · ${t.detail}` : ''}</span>
        </li>`)}
      </ul>
      ${b.stopRequestedAt && html`<p class="muted">${loc.t('log.stopAsked', { t: loc.when(Date.parse(b.stopRequestedAt)) })}</p>`}
      ${active && html`<button type="button" class="secondary danger" disabled=${busy} onClick=${stop}>■ ${busy ? loc.t('log.stopping') : loc.t('log.stop')}</button>`}
      <${Problem} error=${error} loc=${loc} />
    </article>`;
}
