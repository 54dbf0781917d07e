// The parts of "Phát ngay" and "Lịch mới" that pick where and what to play:
// villages and speakers from lists, and the content — Vietnamese text read
// by the server (TTS), an uploaded recording, or one already in the library —
// with a "Nghe thử" player, so staff hear exactly what the speakers will play
// before it goes out. The player uses the signed link the media API returns
// (same origin, no token needed, range requests for seeking).
import { useEffect, useRef, useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { html } from './ui.js';
import { request, sameOriginUrl } from './op-api.js';
import { isUnauthorized, Problem, speakersOf, within } from './op-common.js';

addStrings({
  vi: {
    'target.areas': 'Thôn, xã',
    'target.pick': 'Chọn từng loa',
    'target.count': 'Sẽ phát trên {n} loa.',
    'target.none': 'Chưa chọn nơi phát.',
    'content.tts': 'Đọc văn bản',
    'content.file': 'Tải tệp ghi âm',
    'content.library': 'Tệp đã có',
    'content.text': 'Văn bản cần đọc',
    'content.textHint': 'Máy chủ đọc bằng giọng tiếng Việt. Hãy bấm «Nghe thử» trước khi gửi.',
    'content.listen': 'Nghe thử',
    'content.rendering': 'Đang tạo bản đọc…',
    'content.uploading': 'Đang tải lên…',
    'content.fileHint': 'Tệp MP3, WAV hoặc OGG.',
    'content.choose': '— Chọn một tệp —',
    'content.ready': '«{name}», dài {d}.',
    'content.seconds': '{n} giây',
    'content.minutes': '{m} phút {s} giây',
  },
  en: {
    'target.areas': 'Villages, communes',
    'target.pick': 'Choose speakers one by one',
    'target.count': 'Will play on {n} speakers.',
    'target.none': 'Nothing chosen yet.',
    'content.tts': 'Read a text',
    'content.file': 'Upload a recording',
    'content.library': 'Existing file',
    'content.text': 'Text to read',
    'content.textHint': 'The server reads it with a Vietnamese voice. Press «Listen» before sending.',
    'content.listen': 'Listen',
    'content.rendering': 'Making the reading…',
    'content.uploading': 'Uploading…',
    'content.fileHint': 'An MP3, WAV or OGG file.',
    'content.choose': '— Choose a file —',
    'content.ready': '«{name}», {d} long.',
    'content.seconds': '{n} seconds',
    'content.minutes': '{m} min {s} s',
  },
});

/** The library name of a reading: its first words, cut at a word (the full text stays with the file). */
function shortName(text) {
  const t = text.trim().replace(/\s+/g, ' ');
  if (t.length <= 60) return t;
  const cut = t.slice(0, 60);
  return `${cut.slice(0, Math.max(cut.lastIndexOf(' '), 30)).replace(/[\s,.;:]+$/, '')}…`;
}

/** A play length in words, whole seconds as a player shows them. */
export function durationWords(sec, loc) {
  const n = Math.max(1, Math.floor(sec));
  return n < 60 ? loc.t('content.seconds', { n }) : loc.t('content.minutes', { m: Math.floor(n / 60), s: n % 60 });
}

// ---- where -----------------------------------------------------------------------

/** An empty target choice. */
export const noTarget = () => ({ areas: [], devices: [] });

/** The target as the API takes it. */
export function targetBody(t) {
  return { ...(t.areas.length ? { areas: t.areas } : {}), ...(t.devices.length ? { devices: t.devices } : {}) };
}

export function TargetPicker({ value, onChange, places, loc, name }) {
  // Areas that have speakers: communes first (the whole commune), then villages.
  const areas = places.areas
    .filter((a) => places.speakers.some((s) => within(places.areaByCode, s.area, a.code)))
    .sort((a, b) => (a.level === 'village') - (b.level === 'village') || a.name.localeCompare(b.name, 'vi'));
  const toggle = (key, id) => {
    const set = new Set(value[key]);
    if (set.has(id)) set.delete(id); else set.add(id);
    onChange({ ...value, [key]: [...set] });
  };
  const n = speakersOf(targetBody(value), places).size;
  return html`
    <fieldset class="target">
      <legend>${loc.t('field.target')}</legend>
      <div class="choices" role="group" aria-label=${loc.t('target.areas')}>
        ${areas.map((a) => html`<label class="choice"><input type="checkbox" name=${`${name}-area`} value=${a.code} checked=${value.areas.includes(a.code)}
          onChange=${() => toggle('areas', a.code)} /><span>${a.level === 'village' ? a.name : loc.t('op.whole', { name: a.name })}</span></label>`)}
      </div>
      <details class="pick-speakers" open=${value.devices.length > 0}>
        <summary>${loc.t('target.pick')}</summary>
        <div class="choices">
          ${places.speakers.map((s) => html`<label class="choice"><input type="checkbox" name=${`${name}-device`} value=${s.id} checked=${value.devices.includes(s.id)}
            onChange=${() => toggle('devices', s.id)} /><span>${s.name}</span></label>`)}
        </div>
      </details>
      <p class="hint" role="status">${n > 0 ? loc.t('target.count', { n }) : loc.t('target.none')}</p>
    </fieldset>`;
}

// ---- what ------------------------------------------------------------------------

/** An empty content choice: TTS text first, the commune's usual way. */
export const noContent = () => ({ kind: 'tts', text: '', media: null, mediaText: null });

/**
 * The content as the API takes it, or null when nothing is chosen. Text that
 * was listened to is sent as the very file heard; text not listened to is
 * sent as text (the server renders it, and removes it again if refused).
 */
export function contentBody(c) {
  if (c.kind === 'tts') {
    if (!c.text.trim()) return null;
    return c.media && c.mediaText === c.text ? { mediaId: c.media.id } : { ttsText: c.text };
  }
  return c.media ? { mediaId: c.media.id } : null;
}

export function ContentPicker({ value, onChange, session, loc, onUnauthorized, name }) {
  const [busy, setBusy] = useState(null);
  const [error, setError] = useState(null);
  const [library, setLibrary] = useState(null);
  const [autoplay, setAutoplay] = useState(false);
  const set = (patch) => onChange({ ...value, ...patch });
  const fail = (err) => { if (isUnauthorized(err)) onUnauthorized(); else setError(err); };

  useEffect(() => {
    if (value.kind !== 'library' || library) return;
    request(session, '/media?limit=500').then(setLibrary, fail);
  }, [value.kind]);

  const listen = async () => {
    setError(null);
    if (value.media && value.mediaText === value.text) { setAutoplay(true); return; }
    setBusy('rendering');
    try {
      const text = value.text;
      const media = await request(session, '/media/tts', { method: 'POST', body: { text, lang: 'vi', name: shortName(text) } });
      set({ media, mediaText: text });
      setAutoplay(true);
    } catch (err) {
      fail(err);
    } finally {
      setBusy(null);
    }
  };

  const upload = async (e) => {
    const file = e.currentTarget.files?.[0];
    if (!file) return;
    setError(null);
    setBusy('uploading');
    set({ media: null });
    try {
      const form = new FormData();
      form.append('name', file.name.replace(/\.[^.]+$/, ''));
      form.append('file', file);
      set({ media: await request(session, '/media', { method: 'POST', form }) });
    } catch (err) {
      fail(err);
    } finally {
      setBusy(null);
    }
  };

  const choose = async (e) => {
    const id = e.currentTarget.value;
    setError(null);
    set({ media: null });
    if (!id) return;
    // The list has no links; one item has a fresh signed one.
    try { set({ media: await request(session, `/media/${encodeURIComponent(id)}`) }); } catch (err) { fail(err); }
  };

  const kinds = ['tts', 'file', 'library'];
  return html`
    <fieldset class="content">
      <legend>${loc.t('field.content')}</legend>
      <div class="choices seg" role="radiogroup">
        ${kinds.map((k) => html`<label class="choice"><input type="radio" name=${`${name}-kind`} value=${k} checked=${value.kind === k}
          onChange=${() => { setError(null); onChange({ ...value, kind: k, media: null, mediaText: null }); }} /><span>${loc.t(`content.${k}`)}</span></label>`)}
      </div>
      ${value.kind === 'tts' && html`
        <label>${loc.t('content.text')}
          <textarea name=${`${name}-text`} maxlength="5000" lang="vi" value=${value.text} onInput=${(e) => set({ text: e.currentTarget.value })}></textarea>
        </label>
        <p class="hint">${loc.t('content.textHint')}</p>
        <button type="button" class="secondary listen-button" disabled=${busy !== null || !value.text.trim()} onClick=${listen}>
          ${busy === 'rendering' ? loc.t('content.rendering') : `▶ ${loc.t('content.listen')}`}</button>`}
      ${value.kind === 'file' && html`
        <label>${loc.t('field.file')}
          <input type="file" name=${`${name}-file`} accept="audio/*,.mp3,.wav,.ogg" onChange=${upload} />
        </label>
        <p class="hint">${busy === 'uploading' ? loc.t('content.uploading') : loc.t('content.fileHint')}</p>`}
      ${value.kind === 'library' && html`
        <label>${loc.t('field.file')}
          <select name=${`${name}-media`} onChange=${choose} value=${value.media?.id ?? ''}>
            <option value="">${loc.t('content.choose')}</option>
            ${(library ?? []).map((m) => html`<option value=${m.id}>${m.name} (${durationWords(m.durationSec, loc)})</option>`)}
          </select>
        </label>`}
      <${Problem} error=${error} loc=${loc} />
      ${value.media && (value.kind !== 'tts' || value.mediaText === value.text) && html`
        <${Listen} media=${value.media} loc=${loc} autoplay=${autoplay} onPlayed=${() => setAutoplay(false)} />`}
    </fieldset>`;
}

function Listen({ media, loc, autoplay, onPlayed }) {
  const audio = useRef(null);
  useEffect(() => {
    if (!autoplay || !audio.current) return;
    onPlayed();
    // Started by the button press; a browser that still refuses leaves the controls to the user.
    audio.current.play().catch(() => {});
  }, [autoplay, media.id]);
  return html`
    <div class="listen" data-media=${media.id}>
      <p class="muted">${loc.t('content.ready', { name: media.name, d: durationWords(media.durationSec, loc) })}</p>
      <audio ref=${audio} controls preload="metadata" src=${sameOriginUrl(media.url)}></audio>
    </div>`;
}
