// Loa phát thanh: the speakers of the staff member's areas, on a map and in a
// list, each with its connection, what it is playing, volume, power and
// signal (from its telemetry), updating live; and the volume of one speaker
// set from the phone (POST /devices/{id}/volume, the speaker's answer shown).
import { useEffect, useRef, useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { html, loadCss, useLiveView } from './ui.js';
import { request } from './op-api.js';
import { isUnauthorized, LiveBadge, loadPlaces, Problem } from './op-common.js';
import { SpeakerMap } from './op-map.js';

loadCss('view-speakers.css');

addStrings({
  vi: {
    'spk.title': 'Loa phát thanh',
    'spk.summary': '{n} loa · {on} trực tuyến · {play} đang phát',
    'spk.online': 'Trực tuyến',
    'spk.playing': 'Đang phát: {what}',
    'spk.playingUnknown': 'Đang phát',
    'spk.idle': 'Đang nghỉ',
    'spk.volume': 'Âm lượng',
    'spk.power': 'Nguồn điện',
    'spk.battery': 'Ắc quy',
    'spk.signal': 'Sóng',
    'spk.power.ac': 'Điện lưới',
    'spk.power.solar': 'Điện mặt trời',
    'spk.power.battery': 'Ắc quy',
    'spk.signal.good': 'mạnh',
    'spk.signal.fair': 'khá',
    'spk.signal.poor': 'yếu',
    'spk.setVolume': 'Chỉnh âm lượng',
    'spk.closeVolume': 'Đóng',
    'spk.less': 'Nhỏ hơn',
    'spk.more': 'To hơn',
    'spk.send': 'Đặt âm lượng {v} %',
    'spk.sending': 'Đang gửi…',
    'spk.sent': 'Đã gửi lệnh, đang chờ loa trả lời…',
    'spk.done': 'Loa đã đặt âm lượng {v} %.',
    'spk.queued': 'Loa đang mất kết nối: lệnh sẽ được gửi khi loa kết nối lại (đến {t}).',
    'spk.refused': 'Loa không nhận lệnh: {detail}',
    'spk.noAnswer': 'Loa chưa trả lời. Hãy kiểm tra lại sau.',
    'map.label': 'Bản đồ {n} loa',
    'map.playing': 'Đang phát',
    'map.online': 'Trực tuyến',
    'map.offline': 'Mất kết nối',
    'map.none': 'Chưa loa nào có vị trí trên bản đồ.',
    'map.unplaced': '{n} loa chưa có vị trí',
  },
  en: {
    'spk.title': 'Loudspeakers',
    'spk.summary': '{n} speakers · {on} online · {play} playing',
    'spk.online': 'Online',
    'spk.playing': 'Playing: {what}',
    'spk.playingUnknown': 'Playing',
    'spk.idle': 'Idle',
    'spk.volume': 'Volume',
    'spk.power': 'Power',
    'spk.battery': 'Battery',
    'spk.signal': 'Signal',
    'spk.power.ac': 'Mains',
    'spk.power.solar': 'Solar',
    'spk.power.battery': 'Battery',
    'spk.signal.good': 'strong',
    'spk.signal.fair': 'fair',
    'spk.signal.poor': 'weak',
    'spk.setVolume': 'Set volume',
    'spk.closeVolume': 'Close',
    'spk.less': 'Quieter',
    'spk.more': 'Louder',
    'spk.send': 'Set volume to {v} %',
    'spk.sending': 'Sending…',
    'spk.sent': 'Command sent, waiting for the speaker…',
    'spk.done': 'The speaker set its volume to {v} %.',
    'spk.queued': 'The speaker is offline: it gets the command when it reconnects (until {t}).',
    'spk.refused': 'The speaker refused: {detail}',
    'spk.noAnswer': 'The speaker has not answered yet. Check again later.',
    'map.label': 'Map of {n} speakers',
    'map.playing': 'Playing',
    'map.online': 'Online',
    'map.offline': 'Offline',
    'map.none': 'No speaker has a position on the map yet.',
    'map.unplaced': '{n} speakers without a position',
  },
});

/** How long a broadcast may still be playing: older ones are not looked up for "playing now". */
const RECENT_MS = 12 * 3600_000;

export default function Speakers({ session, loc, onUnauthorized }) {
  const [places, setPlaces] = useState(null);
  const [speakers, setSpeakers] = useState(null);
  const [broadcasts, setBroadcasts] = useState(() => new Map());
  const [names, setNames] = useState({ schedules: new Map(), media: new Map() });
  const { error, live, retry } = useLiveView(session, onUnauthorized, async (signal, setLive) => {
    const addBroadcast = (b) => setBroadcasts((m) => new Map(m).set(b.id, b));
    const p = await loadPlaces(session, signal);
    const [recent, schedules] = await Promise.all([
      request(session, `/broadcasts?from=${Date.now() - RECENT_MS}&limit=200`, { signal }).catch(() => []),
      request(session, '/schedules', { signal }).catch(() => []),
    ]);
    if (signal.aborted) return null;
    setPlaces(p);
    setSpeakers(p.speakers);
    setBroadcasts(new Map(recent.map((b) => [b.id, b])));
    const known = new Set(recent.map((b) => b.id));
    setNames((n) => ({ ...n, schedules: new Map(schedules.map((s) => [s.id, s.name])) }));
    const { connectLive, feedSubscription, withReading, withStatus } = await import('./live.js');
    return connectLive({
      token: session.token, subscription: feedSubscription(session, p.areas), onState: setLive, onUnauthorized,
      on: {
        telemetry: (m) => setSpeakers((list) => list?.map((d) => withReading(d, m))),
        status: (m) => setSpeakers((list) => list?.map((d) => withStatus(d, m))),
        broadcast: (m) => {
          if (!known.has(m.broadcastId)) {
            // A broadcast started elsewhere (a schedule, another phone): fetched whole, once.
            known.add(m.broadcastId);
            request(session, `/broadcasts/${encodeURIComponent(m.broadcastId)}`).then(addBroadcast, () => known.delete(m.broadcastId));
            return;
          }
          setBroadcasts((map) => {
            const b = map.get(m.broadcastId);
            if (!b) return map;
            const targets = b.targets.map((t) => (t.deviceId === m.deviceId ? { ...t, state: m.state, updatedAt: m.at } : t));
            return new Map(map).set(b.id, { ...b, targets });
          });
        },
      },
    }).catch(() => null);
  });

  // What each speaker plays: the newest broadcast in which it is playing.
  const playing = new Map();
  for (const b of broadcasts.values()) {
    for (const t of b.targets) {
      if (t.state !== 'playing') continue;
      const prev = playing.get(t.deviceId);
      if (!prev || Date.parse(prev.startedAt) < Date.parse(b.startedAt)) playing.set(t.deviceId, b);
    }
  }
  // Names of the media being played, looked up once each.
  const missingMedia = [...new Set([...playing.values()].map((b) => b.media?.mediaId).filter((id) => id && !names.media.has(id)))];
  useEffect(() => {
    for (const id of missingMedia) {
      setNames((n) => ({ ...n, media: new Map(n.media).set(id, null) }));
      request(session, `/media/${encodeURIComponent(id)}`).then(
        (m) => setNames((n) => ({ ...n, media: new Map(n.media).set(id, m.name) })), () => {});
    }
  }, [missingMedia.join('|')]);

  if (error) {
    return html`<section class="card"><${Problem} error=${error} loc=${loc} />
      <button type="button" class="primary" onClick=${retry}>${loc.t('retry')}</button></section>`;
  }
  if (!speakers) return html`<p class="muted center">${loc.t('loading')}</p>`;

  const whatPlays = (b) => (b ? names.schedules.get(b.scheduleId) ?? names.media.get(b.media?.mediaId) ?? null : null);
  const shown = speakers.map((s) => {
    const b = playing.get(s.id);
    // The telemetry flag of a speaker that went away is stale; a broadcast state still says so.
    const isPlaying = Boolean(b) || (s.online && s.latest?.playing?.value === true);
    return { ...s, playing: isPlaying, playingWhat: whatPlays(b) };
  });
  const pick = (id) => {
    const card = document.querySelector(`article[data-device="${CSS.escape(id)}"]`);
    card?.scrollIntoView({ behavior: 'smooth', block: 'center' });
    card?.classList.add('picked');
    setTimeout(() => card?.classList.remove('picked'), 1500);
  };
  const on = shown.filter((s) => s.online).length;
  const play = shown.filter((s) => s.playing).length;

  return html`
    <div class="head">
      <h1>${loc.t('spk.title')}</h1>
      <${LiveBadge} live=${live} loc=${loc} />
    </div>
    ${shown.length === 0
      ? html`<section class="card"><p>${loc.t('op.noSpeakers')}</p></section>`
      : html`
        <p class="muted spk-summary">${loc.t('spk.summary', { n: shown.length, on, play })}</p>
        <div class="spk-layout">
          <${SpeakerMap} speakers=${shown} areaByCode=${places.areaByCode} loc=${loc} onPick=${pick} />
          <div class="grid spk-list">
            ${shown.map((s) => html`<${SpeakerCard} key=${s.id} speaker=${s} areaName=${places.areaByCode.get(s.area)?.name ?? s.area}
              session=${session} loc=${loc} onUnauthorized=${onUnauthorized} />`)}
          </div>
        </div>`}`;
}

function signalWord(rssi) {
  return rssi >= -70 ? 'good' : rssi >= -85 ? 'fair' : 'poor';
}

function SpeakerCard({ speaker: s, areaName, session, loc, onUnauthorized }) {
  const [open, setOpen] = useState(false);
  const latest = s.latest ?? {};
  const num = (k) => (typeof latest[k]?.value === 'number' ? latest[k].value : null);
  const volume = num('volume');
  const battery = num('battery_v');
  const rssi = num('rssi');
  const power = typeof latest.power_source?.value === 'string' ? latest.power_source.value : null;
  const seen = s.lastSeen ? Date.parse(s.lastSeen) : null;
  const powerWord = power && (loc.t(`spk.power.${power}`) === `spk.power.${power}` ? power : loc.t(`spk.power.${power}`));
  return html`
    <article class=${`card device speaker${s.online ? '' : ' offline'}${s.playing ? ' playing' : ''}`} data-device=${s.id}>
      <header>
        <h2>${s.name}</h2>
        <p class="muted">${areaName}</p>
      </header>
      <p class=${s.online ? 'state ok' : 'state bad'} data-role="connection">
        ${s.online ? loc.t('spk.online') : seen ? loc.t('device.offlineSince', { t: loc.when(seen) }) : loc.t('device.neverSeen')}
      </p>
      ${(s.online || s.playing) && html`<p class=${s.playing ? 'now on' : 'now'} data-role="playing">
        ${s.playing ? (s.playingWhat ? loc.t('spk.playing', { what: s.playingWhat }) : loc.t('spk.playingUnknown')) : loc.t('spk.idle')}
      </p>`}
      <dl class="values">
        <div class="value" data-field="volume"><dt>${loc.t('spk.volume')}</dt><dd>${volume === null ? '–' : `${loc.number(volume, 0)} %`}</dd></div>
        <div class="value" data-field="power_source"><dt>${loc.t('spk.power')}</dt><dd class="word">${powerWord ?? '–'}</dd></div>
        ${battery !== null && html`<div class="value" data-field="battery_v"><dt>${loc.t('spk.battery')}</dt><dd>${loc.number(battery, 2)} V</dd></div>`}
        ${rssi !== null && html`<div class="value" data-field="rssi"><dt>${loc.t('spk.signal')}</dt>
          <dd>${loc.t(`spk.signal.${signalWord(rssi)}`)} <small>${loc.number(rssi, 0)} dBm</small></dd></div>`}
      </dl>
      ${open
        ? html`<${VolumeControl} speaker=${s} current=${volume} session=${session} loc=${loc} onUnauthorized=${onUnauthorized} onClose=${() => setOpen(false)} />`
        : html`<button type="button" class="secondary" onClick=${() => setOpen(true)}>${loc.t('spk.setVolume')}</button>`}
    </article>`;
}

function VolumeControl({ speaker, current, session, loc, onUnauthorized, onClose }) {
  const [value, setValue] = useState(current ?? 70);
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState(null);
  const [error, setError] = useState(null);
  const alive = useRef(true);
  useEffect(() => () => { alive.current = false; }, []);
  const clamp = (v) => Math.max(0, Math.min(100, Math.round(v)));

  const send = async () => {
    setBusy(true);
    setError(null);
    setNote(null);
    const id = encodeURIComponent(speaker.id);
    try {
      let cmd = await request(session, `/devices/${id}/volume`, { method: 'POST', body: { volume: value } });
      if (cmd.state === 'queued') {
        setNote({ tone: 'warn', text: loc.t('spk.queued', { t: loc.when(Date.parse(cmd.expiresAt)) }) });
        return;
      }
      setNote({ tone: 'wait', text: loc.t('spk.sent') });
      // The speaker answers within a second or two (device protocol §11.2); the answer is the proof.
      for (let i = 0; i < 20 && alive.current && cmd.state === 'sent'; i++) {
        await new Promise((r) => setTimeout(r, 750));
        cmd = await request(session, `/devices/${id}/commands/${encodeURIComponent(cmd.id)}`);
      }
      if (!alive.current) return;
      const r = cmd.response;
      if (cmd.state === 'answered' && r?.status === 'ok') setNote({ tone: 'ok', text: loc.t('spk.done', { v: r.volume ?? value }) });
      else if (cmd.state === 'answered') setNote({ tone: 'bad', text: loc.t('spk.refused', { detail: r?.detail ?? r?.status ?? '?' }) });
      else setNote({ tone: 'warn', text: loc.t('spk.noAnswer') });
    } catch (err) {
      if (isUnauthorized(err)) onUnauthorized();
      else if (alive.current) setError(err);
    } finally {
      if (alive.current) setBusy(false);
    }
  };

  return html`
    <div class="volume-box">
      <label class="volume-label" for=${`vol-${speaker.id}`}>${loc.t('spk.volume')} <strong>${loc.number(value, 0)} %</strong></label>
      <div class="volume-row">
        <button type="button" class="step" aria-label=${loc.t('spk.less')} onClick=${() => setValue((v) => clamp(v - 5))}>−</button>
        <input id=${`vol-${speaker.id}`} type="range" min="0" max="100" step="5" value=${value} onInput=${(e) => setValue(clamp(Number(e.currentTarget.value)))} />
        <button type="button" class="step" aria-label=${loc.t('spk.more')} onClick=${() => setValue((v) => clamp(v + 5))}>+</button>
      </div>
      <button type="button" class="primary" disabled=${busy} onClick=${send}>${busy ? loc.t('spk.sending') : loc.t('spk.send', { v: value })}</button>
      ${note && html`<p class=${`note ${note.tone}`} role="status">${note.text}</p>`}
      <${Problem} error=${error} loc=${loc} />
      <button type="button" class="secondary" onClick=${onClose}>${loc.t('spk.closeVolume')}</button>
    </div>`;
}
