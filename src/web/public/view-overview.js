// Toàn cảnh: every commune of the caller's areas at a glance, for the
// provincial IOC's wall screen (1920×1080, read from across the room, no
// scrolling for a province of about ten communes) and for a phone. Per
// commune: sensors and loudspeakers online, speakers playing now, alerts.
// Live through the feed's status, broadcast and alert events; the snapshot is
// fetched again on every (re)connection and every few minutes, so a missed
// event or a device moved meanwhile does not stay wrong on a wall for days.
import { useEffect, useMemo, useState } from './hooks.mjs';
import { api } from './api.js';
import { addStrings } from './i18n.js';
import { ErrorNote, Loading, html, loadCss } from './ui.js';
import { alertList, areaIndex, playKey, playingFrom, summarize } from './ioc-model.js';
import { isGrave, listWithEvent } from './alert-model.js';

loadCss('view-overview.css');

addStrings({
  vi: {
    'ioc.title': 'Toàn cảnh',
    'ioc.updated': 'Số liệu lúc {t}',
    'ioc.sensors': 'Cảm biến',
    'ioc.speakers': 'Loa',
    'ioc.playing': 'Đang phát',
    'ioc.alerts': 'Cảnh báo',
    'ioc.online': 'trực tuyến',
    'ioc.offline': '{n} mất kết nối',
    'ioc.allOnline': 'Tất cả trực tuyến',
    'ioc.disabled': '{n} đã tắt',
    'ioc.pending': '{n} chờ duyệt',
    'ioc.rows': 'Xã',
    'ioc.noAreas': 'Chưa có khu vực nào. Quản trị viên tạo tỉnh, xã, thôn trong mục Quản trị.',
    'ioc.provinceLevel': 'Thiết bị cấp tỉnh',
    'ioc.otherAreas': 'Khu vực khác',
    'ioc.noDevices': 'Chưa có thiết bị',
    'ioc.offlineList': 'Mất kết nối: {names}',
    'ioc.more': '+{n}',
    'ioc.alertNow': 'Đang phát cảnh báo',
    'ioc.drill.Exercise': 'Diễn tập',
    'ioc.drill.Test': 'Thử nghiệm',
  },
  en: {
    'ioc.title': 'Overview',
    'ioc.updated': 'Data as of {t}',
    'ioc.sensors': 'Sensors',
    'ioc.speakers': 'Speakers',
    'ioc.playing': 'Playing',
    'ioc.alerts': 'Alerts',
    'ioc.online': 'online',
    'ioc.offline': '{n} offline',
    'ioc.allOnline': 'All online',
    'ioc.disabled': '{n} disabled',
    'ioc.pending': '{n} awaiting approval',
    'ioc.rows': 'Communes',
    'ioc.noAreas': 'No areas yet. An administrator creates provinces, communes and villages under Administration.',
    'ioc.provinceLevel': 'Province-level devices',
    'ioc.otherAreas': 'Other areas',
    'ioc.noDevices': 'No devices yet',
    'ioc.offlineList': 'Offline: {names}',
    'ioc.more': '+{n}',
    'ioc.alertNow': 'Alerts playing',
    'ioc.drill.Exercise': 'Exercise',
    'ioc.drill.Test': 'Test',
  },
});

const FULL_REFRESH_MS = 5 * 60_000;
/** Alerts come live (`alert` events); polled as well, slowly, for a feed that was away without a reconnection noticed. */
const ALERTS_REFRESH_MS = 2 * 60_000;
/** Broadcasts older than this are not playing any more (no broadcast lasts a day). */
const BROADCAST_WINDOW_MS = 24 * 3600_000;
/** Events kept to replay over a snapshot that was taken before they happened. */
const REPLAY_MS = 60_000;

/** A reply that may be missing: a 404 (not built on this server) or 403 (not for this role) is "nothing to show". */
const optional = (p) => p.catch((err) => {
  if (err?.status === 404 || err?.status === 403) return null;
  throw err;
});

const slim = (d) => ({ id: d.id, kind: d.kind, name: d.name, area: d.area, enabled: d.enabled, online: d.online });

export default function Overview({ session, loc, onUnauthorized }) {
  const { token } = session;
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [live, setLive] = useState(false);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const ctrl = new AbortController();
    const get = (p) => api(p, { token, signal: ctrl.signal });
    let close = null;
    let loading = null;
    /** The picture on screen; events change a copy of it. */
    let current = null;
    /** Recent events, replayed over a snapshot generated before they happened. */
    let recent = [];
    const show = (d) => { current = d; if (!ctrl.signal.aborted) setData(d); };
    const fail = (err) => {
      if (ctrl.signal.aborted || err?.name === 'AbortError') return;
      if (err?.code === 'KENG_ERR_UNAUTHENTICATED') onUnauthorized();
      else setError(err);
    };
    /** Applies an event to `d` (a copy); false when it names a device `d` does not have. */
    const applyEvent = (d, e) => {
      if (e.type === 'alert') {
        // Not while this server has no alerts API (null): the next full refresh asks again.
        if (d.alerts !== null) d.alerts = listWithEvent(d.alerts, e);
        return true;
      }
      if (e.type === 'status') {
        const dev = d.devices.get(e.deviceId);
        if (!dev) return false;
        d.devices.set(e.deviceId, { ...dev, online: e.online });
      } else if (e.state === 'playing') {
        d.playing.set(playKey(e.broadcastId, e.deviceId), e.deviceId);
      } else {
        d.playing.delete(playKey(e.broadcastId, e.deviceId));
      }
      return true;
    };
    const loadAll = () => {
      loading ??= (async () => {
        const [areas, snap, broadcasts, alerts] = await Promise.all([
          get('/areas'),
          get('/telemetry/latest'),
          optional(get(`/broadcasts?from=${Date.now() - BROADCAST_WINDOW_MS}&limit=1000`)),
          optional(get('/alerts')).then((r) => (r === null ? null : alertList(r))),
        ]);
        const at = Date.parse(snap.generatedAt) || Date.now();
        const d = { areas, devices: new Map(snap.devices.map((x) => [x.id, slim(x)])), playing: playingFrom(broadcasts), alerts, updatedAt: at };
        // Alert events all again: the alerts reply has no time of its own, and an alert never goes back in its life (alert-model.js).
        for (const e of recent) if (e.type === 'alert' || e.at > at) applyEvent(d, e);
        show(d);
        setError(null);
        return d;
      })().finally(() => { loading = null; });
      return loading;
    };
    const onEvent = (e) => {
      const now = Date.now();
      const at = Date.parse(e.at) || now;
      recent = recent.filter((x) => x.seen > now - REPLAY_MS);
      recent.push({ ...e, at, seen: now });
      if (!current) return;
      const d = { ...current, devices: new Map(current.devices), playing: new Map(current.playing), updatedAt: Math.max(current.updatedAt, at) };
      // A device the snapshot did not have (just registered, or moved in): fetch the whole picture again.
      if (applyEvent(d, e)) show(d);
      else loadAll().catch(fail);
    };
    // The slow poll behind the live events; not while this server has no alerts API (the full refresh asks again).
    const refreshAlerts = () => current && current.alerts !== null && optional(get('/alerts')).then((r) => {
      if (!current) return;
      const d = { ...current, alerts: r === null ? null : alertList(r) };
      for (const e of recent) if (e.type === 'alert') applyEvent(d, e);
      show(d);
    }).catch(() => { /* the next full refresh says what is wrong */ });

    setError(null);
    loadAll().then(async (d) => {
      // Batched: the overview shows no readings, and a province's devices report many a second.
      const { connectLive, feedSubscription } = await import('./live.js');
      const stop = await connectLive({
        token, subscription: feedSubscription(session, d.areas), batch: true, onState: setLive, onUnauthorized,
        on: {
          status: (m) => onEvent({ type: 'status', ...m }),
          broadcast: (m) => onEvent({ type: 'broadcast', ...m }),
          alert: (m) => onEvent({ ...m, type: 'alert' }),
        },
        // Every (re)connection: what happened while the feed was away is in the next snapshot.
        onSubscribed: () => { loadAll().catch(fail); },
      }).catch(() => null);
      if (ctrl.signal.aborted) stop?.(); else close = stop;
    }).catch(fail);
    const full = setInterval(() => { loadAll().catch(fail); }, FULL_REFRESH_MS);
    const alerts = setInterval(refreshAlerts, ALERTS_REFRESH_MS);
    return () => { ctrl.abort(); clearInterval(full); clearInterval(alerts); close?.(); };
  }, [token, attempt]);

  const index = useMemo(() => (data ? areaIndex(data.areas) : null), [data?.areas]);
  const sum = useMemo(() => (data && index ? summarize(index, data.devices, new Set(data.playing.values()), data.alerts) : null), [data, index]);

  if (!data) return error ? html`<section class="card"><${ErrorNote} error=${error} loc=${loc} onRetry=${() => setAttempt((n) => n + 1)} /></section>` : html`<${Loading} loc=${loc} />`;
  const alertsKnown = data.alerts !== null;
  const rowCount = index.groups.reduce((n, g) => n + g.rows.length, 0);
  return html`
    <section class=${rowCount > 10 ? 'ioc dense' : 'ioc'} data-rows=${rowCount}>
      <div class="ioc-head">
        <div class="ioc-title">
          <h1>${loc.t('ioc.title')}${index.groups.length === 1 && index.groups[0].province ? html` · ${index.groups[0].province.name}` : ''}</h1>
          <p class="ioc-meta">
            <span class=${live ? 'live on' : 'live'} role="status">${live ? loc.t('live.on') : loc.t('live.off')}</span>
            <span class="ioc-updated" data-updated>${loc.t('ioc.updated', { t: clock(loc, data.updatedAt) })}</span>
          </p>
        </div>
        <${Totals} c=${sum.total} loc=${loc} alertsKnown=${alertsKnown} rows=${rowCount} />
      </div>
      ${error && html`<${ErrorNote} error=${error} loc=${loc} onRetry=${() => setAttempt((n) => n + 1)} />`}
      ${alertsKnown && html`<${AlertStrip} alerts=${data.alerts} index=${index} loc=${loc} />`}
      ${rowCount === 0 && html`<section class="card"><p>${loc.t('ioc.noAreas')}</p></section>`}
      ${index.groups.map((g) => html`
        <section class="ioc-group" key=${g.province?.code ?? '-'} data-province=${g.province?.code}>
          ${index.groups.length > 1 && html`<h2 class="ioc-province">${g.province?.name ?? loc.t('ioc.otherAreas')}</h2>`}
          <div class="ioc-grid">
            ${g.rows.map((r) => html`<${Tile} key=${r.code} code=${r.code} name=${r.name} c=${sum.countsOf(r.code)} loc=${loc} alertsKnown=${alertsKnown} />`)}
            ${g.province && sum.rows.has(g.province.code) && html`
              <${Tile} code=${g.province.code} name=${loc.t('ioc.provinceLevel')} c=${sum.countsOf(g.province.code)} loc=${loc} alertsKnown=${alertsKnown} />`}
          </div>
        </section>`)}
    </section>`;
}

/** Alert lines on the wall: at most this many, then "+n" (the tiles below must still fit the screen). */
const STRIP_MAX = 2;

/** The alerts sounding now, by headline and place: on a wall, what is happening matters more than how many. */
function AlertStrip({ alerts, index, loc }) {
  const active = alerts.filter((a) => a.state === 'active');
  if (active.length === 0) return null;
  // A village with its commune: village names repeat from commune to commune.
  const name = (code) => {
    const a = index.byCode.get(code);
    const parent = a?.level === 'village' && a.parent ? index.byCode.get(a.parent) : null;
    return a ? (parent ? `${a.name}, ${parent.name}` : a.name) : code;
  };
  return html`
    <ul class="ioc-alerts" data-alert-strip aria-label=${loc.t('ioc.alertNow')}>
      ${active.slice(0, STRIP_MAX).map((a) => html`
        <li key=${a.id} class=${isGrave(a) ? 'grave' : ''} data-alert=${a.id}>
          ${a.status && a.status !== 'Actual' && html`<b class="drill">${loc.t(`ioc.drill.${a.status}`)}</b>`}
          <span class="h">${a.headline ?? a.event ?? ''}</span>
          <span class="where">${(Array.isArray(a.areas) ? a.areas : []).map(name).join('; ')}</span>
        </li>`)}
      ${active.length > STRIP_MAX && html`<li class="more">${loc.t('ioc.more', { n: loc.number(active.length - STRIP_MAX, 0) })}</li>`}
    </ul>`;
}

const clockFormats = new Map();

/** Clock time with seconds, in the commune's zone: a wall screen shows that it is alive. */
function clock(loc, ms) {
  const key = `${loc.locale}|${loc.tz}`;
  let f = clockFormats.get(key);
  if (!f) clockFormats.set(key, f = new Intl.DateTimeFormat(loc.locale, { timeZone: loc.tz, hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }));
  const today = loc.date(ms) === loc.date(Date.now());
  return today ? f.format(ms) : `${loc.date(ms)} ${f.format(ms)}`;
}

function Totals({ c, loc, alertsKnown, rows }) {
  return html`
    <dl class="ioc-totals" data-totals>
      <div data-stat="rows"><dt>${loc.t('ioc.rows')}</dt><dd><span class="n">${loc.number(rows, 0)}</span></dd></div>
      <div data-stat="sensors"><dt>${loc.t('ioc.sensors')}</dt><dd><span class="n">${ratio(c.sensors, loc)}</span></dd></div>
      <div data-stat="speakers"><dt>${loc.t('ioc.speakers')}</dt><dd><span class="n">${ratio(c.speakers, loc)}</span></dd></div>
      <div data-stat="playing"><dt>${loc.t('ioc.playing')}</dt><dd><span class="n">${loc.number(c.playing, 0)}</span></dd></div>
      ${alertsKnown && html`
        <div data-stat="alerts" class=${c.alerts ? 'hot' : ''}><dt>${loc.t('ioc.alerts')}</dt><dd><span class="n">${loc.number(c.alerts, 0)}</span></dd></div>`}
    </dl>`;
}

const ratio = (k, loc) => `${loc.number(k.online, 0)}/${loc.number(k.total, 0)}`;

function Stat({ name, k, loc }) {
  const off = k.total - k.online;
  return html`
    <div class=${off ? 'stat bad' : k.total ? 'stat' : 'stat zero'} data-stat=${name}>
      <span class="lbl">${loc.t(`ioc.${name}`)}</span>
      <span class="n">${ratio(k, loc)}</span>
      <span class="sub">${off ? loc.t('ioc.offline', { n: loc.number(off, 0) }) : k.total ? loc.t('ioc.online') : '\u00a0'}</span>
    </div>`;
}

function Tile({ code, name, c, loc, alertsKnown }) {
  const off = c.offlineNames.length;
  const none = c.sensors.total + c.speakers.total + c.sensors.disabled + c.speakers.disabled === 0;
  const disabled = c.sensors.disabled + c.speakers.disabled;
  const cls = ['card', 'ioc-tile', off ? 'has-offline' : '', c.alerts ? 'has-alert' : ''].filter(Boolean).join(' ');
  return html`
    <article class=${cls} data-area=${code}>
      <h2>${name}</h2>
      <div class="stats">
        <${Stat} name="sensors" k=${c.sensors} loc=${loc} />
        <${Stat} name="speakers" k=${c.speakers} loc=${loc} />
        <div class=${c.playing ? 'stat on' : 'stat zero'} data-stat="playing">
          <span class="lbl">${loc.t('ioc.playing')}</span><span class="n">${loc.number(c.playing, 0)}</span><span class="sub">\u00a0</span>
        </div>
        ${alertsKnown && html`
          <div class=${c.alerts ? 'stat hot' : 'stat'} data-stat="alerts">
            <span class="lbl">${loc.t('ioc.alerts')}</span><span class="n">${loc.number(c.alerts, 0)}</span>
            <span class="sub">${c.pending ? loc.t('ioc.pending', { n: loc.number(c.pending, 0) }) : '\u00a0'}</span>
          </div>`}
      </div>
      <p class="ioc-note">
        ${none ? loc.t('ioc.noDevices')
          : off ? loc.t('ioc.offlineList', { names: c.offlineNames.slice(0, 3).join(', ') + (off > 3 ? ` ${loc.t('ioc.more', { n: off - 3 })}` : '') })
            : loc.t('ioc.allOnline')}
        ${disabled > 0 && html` · <span class="muted">${loc.t('ioc.disabled', { n: loc.number(disabled, 0) })}</span>`}
      </p>
    </article>`;
}
