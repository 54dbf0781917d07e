// "Phát cảnh báo": the form a commune officer fills in under stress, in
// under a minute. Everything that can be chosen is a big tap target with a
// sensible default (danger, urgency, certainty, 6 hours, 3 readings), the
// headline writes itself from the event and the villages until edited, and a
// second step repeats in one sentence what will happen before anything is
// sent. A real alert plays only once a second person approves it; exercises
// and tests play at once, and the form says so where the choice is made.
import { useEffect, useMemo, useRef, useState } from './hooks.mjs';
import { act, html, treeOrder } from './ui.js';
import { alertRefusal } from './alert-words.js';
import {
  CERTAINTIES, EVENT_PRESETS, SEVERITIES, STATUSES, URGENCIES, alertBody, localParts, playsAtOnce, speakersBelow, speakersIn,
  suggestedHeadline,
} from './alert-model.js';
import { areaName, areaNames } from './alert-parts.js';

const DEFAULT_HOURS = 6;
const DEFAULT_REPEAT = 3;

function initialForm(tz) {
  const { date, time } = localParts(Date.now() + DEFAULT_HOURS * 3600_000, tz);
  return {
    status: 'Actual', preset: null, otherEvent: '', severity: 'Severe', urgency: 'Immediate', certainty: 'Likely',
    headline: '', headlineTouched: false, description: '', instruction: '', areas: [],
    expiresDate: date, expiresTime: time, repeat: DEFAULT_REPEAT,
  };
}


/**
 * The end in the commune's words ("Hết hiệu lực lúc 06/12/2026 19:16, sau 6
 * giờ nữa"): a phone's date field may show the date the American way
 * (12/06/2026), which a Vietnamese reader takes for 12 June.
 */
function expiresSay(form, loc) {
  const iso = alertBody(form, loc.tz).expires;
  const ms = iso ? Date.parse(iso) : NaN;
  if (!Number.isFinite(ms) || ms <= Date.now()) return loc.t('al.form.expiresHint');
  return loc.t('al.form.expiresSay', { t: loc.dateTime(ms), h: loc.number((ms - Date.now()) / 3600_000, 1) });
}

export function RaiseForm({ data, session, loc, onDone, onClose, onUnauthorized }) {
  const [f, setF] = useState(() => initialForm(loc.tz));
  const [step, setStep] = useState('edit');
  const [problem, setProblem] = useState(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const top = useRef(null);
  const set = (patch) => { setF((x) => ({ ...x, ...patch })); setProblem(null); setError(null); };

  // Each step starts at its top: on a phone the confirmation would otherwise open below the fold.
  useEffect(() => { top.current?.scrollIntoView?.({ block: 'start' }); }, [step]);

  const rows = useMemo(() => treeOrder(data.areas), [data.areas]);
  const below = useMemo(() => speakersBelow(data.areas, data.speakers), [data.areas, data.speakers]);
  const parentOf = useMemo(() => new Map(data.areas.map((a) => [a.code, a.parent])), [data.areas]);
  const chosen = new Set(f.areas);
  const coveredByParent = (code) => {
    for (let p = parentOf.get(code), n = 0; p && n < 10; p = parentOf.get(p), n++) if (chosen.has(p)) return true;
    return false;
  };
  const toggleArea = (code, on) => {
    const next = new Set(chosen);
    if (on) next.add(code); else next.delete(code);
    // A ticked commune covers its villages: only the top-most codes are sent.
    set({ areas: [...next].filter((c) => { for (let p = parentOf.get(c), n = 0; p && n < 10; p = parentOf.get(p), n++) if (next.has(p)) return false; return true; }) });
  };

  const preset = EVENT_PRESETS.find((p) => p.key === f.preset);
  const eventText = preset ? (preset.key === 'other' ? f.otherEvent : preset.event) : '';
  const chosenNames = f.areas.map((c) => data.areas.find((a) => a.code === c)?.name ?? c);
  const headline = f.headlineTouched ? f.headline : suggestedHeadline(eventText, chosenNames);
  const form = { ...f, headline };
  const atOnce = playsAtOnce(form, data.policy);
  const reached = speakersIn(data.areas, data.speakers, f.areas).length;

  /** What is missing, in the form's words; the first missing field gets the focus. */
  const check = () => {
    const missing = [];
    if (!eventText.trim()) missing.push(['al.form.event', f.preset === 'other' ? 'otherEvent' : 'preset']);
    if (f.areas.length === 0) missing.push(['al.form.areas', 'areas']);
    if (!headline.trim()) missing.push(['al.form.headline', 'headline']);
    const body = alertBody(form, loc.tz);
    if (!body.expires) missing.push(['al.form.expires', 'expiresDate']);
    if (missing.length) {
      setProblem(loc.t('al.form.missing', { fields: missing.map(([k]) => loc.t(k)).join(', ') }));
      top.current?.querySelector(`[name="${missing[0][1]}"]`)?.focus();
      return null;
    }
    if (Date.parse(body.expires) <= Date.now()) {
      setProblem(loc.t('al.form.expiresPast'));
      top.current?.querySelector('[name="expiresDate"]')?.focus();
      return null;
    }
    return body;
  };

  const send = async () => {
    const body = check();
    if (!body) { setStep('edit'); return; }
    setBusy(true);
    setError(null);
    try {
      onDone(await act(session, '/alerts', { method: 'POST', body }));
    } catch (err) {
      if (err?.code === 'KENG_ERR_UNAUTHENTICATED') { onUnauthorized(); return; }
      setError(err);
      setBusy(false);
    }
  };

  if (step === 'confirm') {
    const key = f.status === 'Actual' ? (atOnce ? 'al.sure.ActualAtOnce' : 'al.sure.Actual') : `al.sure.${f.status}`;
    const sendKey = f.status === 'Exercise' ? 'al.sure.sendExercise' : f.status === 'Test' ? 'al.sure.sendTest' : 'al.sure.send';
    return html`
      <section class=${`card al-sure st-${f.status.toLowerCase()}`} ref=${top} data-step="confirm">
        <h1>${loc.t('al.sure.title')}</h1>
        ${f.status !== 'Actual' && html`<p class=${`al-band ${f.status.toLowerCase()}`}>${loc.t(`al.banner.${f.status}`)}</p>`}
        <p class="al-sure-what" data-what>${loc.t(key, { n: loc.number(reached, 0), areas: areaNames(data.areas, f.areas) })}</p>
        ${reached === 0 && html`<p class="notice">${loc.t('al.sure.noSpeakers')}</p>`}
        <dl class="al-fields">
          <div><dt>${loc.t('al.form.event')}</dt><dd>${eventText}</dd></div>
          <div><dt>${loc.t('al.form.headline')}</dt><dd>${headline}</dd></div>
          <div><dt>${loc.t('al.form.severity')}</dt><dd>${loc.t(`al.sev.${f.severity}`)}</dd></div>
          <div><dt>${loc.t('al.form.urgency')}</dt><dd>${loc.t(`al.urg.${f.urgency}`)}</dd></div>
          <div><dt>${loc.t('al.form.certainty')}</dt><dd>${loc.t(`al.cert.${f.certainty}`)}</dd></div>
          ${f.description.trim() && html`<div><dt>${loc.t('al.form.description')}</dt><dd>${f.description.trim()}</dd></div>`}
          ${f.instruction.trim() && html`<div><dt>${loc.t('al.form.instruction')}</dt><dd>${f.instruction.trim()}</dd></div>`}
          <div><dt>${loc.t('al.form.expires')}</dt><dd>${loc.dateTime(Date.parse(alertBody(form, loc.tz).expires))}</dd></div>
          <div><dt>${loc.t('al.form.repeat')}</dt><dd>${loc.number(f.repeat, 0)}</dd></div>
        </dl>
        ${error && html`<p class="error" role="alert">${alertRefusal(error, loc, 'raise')}</p>`}
        <div class="al-actions">
          <button type="button" class=${f.status === 'Actual' ? 'al-btn danger big' : 'al-btn drill big'} data-action="send" disabled=${busy} onClick=${send}>
            ${busy ? loc.t('al.busy') : loc.t(sendKey)}</button>
          <button type="button" class="al-btn plain" data-action="edit" disabled=${busy} onClick=${() => { setError(null); setStep('edit'); }}>${loc.t('al.sure.edit')}</button>
        </div>
      </section>`;
  }

  const radio = (name, value, label, hint) => html`
    <label class=${f[name] === value ? 'al-opt on' : 'al-opt'} key=${value} data-opt=${`${name}:${value}`}>
      <input type="radio" name=${name} value=${value} checked=${f[name] === value} onChange=${() => set({ [name]: value })} />
      <span>${label}${hint ? html`<small>${hint}</small>` : ''}</span>
    </label>`;
  const choices = (name, values, prefix) => html`
    <fieldset class="al-group">
      <legend>${loc.t(`al.form.${name}`)}</legend>
      <div class="al-opts">${values.map((v) => radio(name, v, loc.t(`al.${prefix}.${v}`)))}</div>
      <p class="hint" data-hint=${name}>${loc.t(`al.${prefix}Hint.${f[name]}`)} <span class="cap">(CAP: ${f[name]})</span></p>
    </fieldset>`;

  return html`
    <form class="card al-form" ref=${top} data-step="edit" noValidate onSubmit=${(e) => { e.preventDefault(); if (check()) setStep('confirm'); }}>
      <h1>${loc.t('al.form.title')}</h1>

      <fieldset class="al-group">
        <legend>${loc.t('al.form.status')}</legend>
        <div class="al-status">${STATUSES.map((s) => radio('status', s, loc.t(`al.status.${s}`)))}</div>
        <p class=${`al-warn st-${f.status.toLowerCase()}`} role="note" data-warn=${f.status}>
          ${f.status === 'Actual' && atOnce ? loc.t('al.form.warn.ActualAtOnce', { sev: loc.t(`al.sev.${f.severity}`) }) : loc.t(`al.form.warn.${f.status}`)}</p>
      </fieldset>

      <fieldset class="al-group">
        <legend>${loc.t('al.form.event')}</legend>
        <div class="al-opts">${EVENT_PRESETS.map((p) => radio('preset', p.key, loc.t(`al.preset.${p.key}`)))}</div>
        ${f.preset === 'other' && html`
          <label class="al-field">${loc.t('al.form.otherEvent')}
            <input name="otherEvent" value=${f.otherEvent} maxLength="200" autocomplete="off" onInput=${(e) => set({ otherEvent: e.currentTarget.value })} />
          </label>`}
      </fieldset>

      <fieldset class="al-group al-areas" data-picker="areas">
        <legend>${loc.t('al.form.areas')}</legend>
        <p class="hint">${loc.t('al.form.areasHint')}</p>
        ${rows.length === 0 && html`<p class="muted">${loc.t('al.form.noAreas')}</p>`}
        <div class="al-tree">
          ${rows.map(({ area, depth }) => {
            const inherited = coveredByParent(area.code);
            const n = below.get(area.code) ?? 0;
            return html`
              <label class=${`al-check depth-${Math.min(depth, 3)}`} key=${area.code}>
                <input type="checkbox" name="areas" value=${area.code} checked=${inherited || chosen.has(area.code)} disabled=${inherited}
                  onChange=${(e) => toggleArea(area.code, e.currentTarget.checked)} />
                <span>${areaName(data.areas, area.code)} <small>${loc.t('al.form.speakersOf', { n: loc.number(n, 0) })}</small></span>
              </label>`;
          })}
        </div>
      </fieldset>

      ${choices('severity', SEVERITIES, 'sev')}
      ${choices('urgency', URGENCIES, 'urg')}
      ${choices('certainty', CERTAINTIES, 'cert')}

      <label class="al-field">${loc.t('al.form.headline')}
        <input name="headline" value=${headline} maxLength="160" autocomplete="off"
          onInput=${(e) => set({ headline: e.currentTarget.value, headlineTouched: true })} />
        <span class="hint">${loc.t('al.form.headlineHint')}</span>
      </label>
      <label class="al-field">${loc.t('al.form.description')}
        <textarea name="description" rows="3" maxLength="3000" value=${f.description} onInput=${(e) => set({ description: e.currentTarget.value })}></textarea>
        <span class="hint">${loc.t('al.form.descriptionHint')}</span>
      </label>
      <label class="al-field">${loc.t('al.form.instruction')}
        <textarea name="instruction" rows="3" maxLength="1500" value=${f.instruction} onInput=${(e) => set({ instruction: e.currentTarget.value })}></textarea>
        <span class="hint">${loc.t('al.form.instructionHint')}</span>
      </label>

      <fieldset class="al-group">
        <legend>${loc.t('al.form.expires')}</legend>
        <div class="al-pair">
          <label class="al-field">${loc.t('al.form.date')}
            <input type="date" name="expiresDate" value=${f.expiresDate} required onInput=${(e) => set({ expiresDate: e.currentTarget.value })} />
          </label>
          <label class="al-field">${loc.t('al.form.time')}
            <input type="time" name="expiresTime" value=${f.expiresTime} required onInput=${(e) => set({ expiresTime: e.currentTarget.value })} />
          </label>
        </div>
        <p class="hint" data-expires-say>${expiresSay(form, loc)}</p>
      </fieldset>

      <fieldset class="al-group">
        <legend>${loc.t('al.form.repeat')}</legend>
        <div class="al-stepper">
          <button type="button" class="al-btn plain" aria-label=${loc.t('al.form.less')} disabled=${f.repeat <= 1} onClick=${() => set({ repeat: Math.max(1, f.repeat - 1) })}>−</button>
          <output name="repeat" aria-live="polite">${loc.number(f.repeat, 0)}</output>
          <button type="button" class="al-btn plain" aria-label=${loc.t('al.form.more')} disabled=${f.repeat >= 10} onClick=${() => set({ repeat: Math.min(10, f.repeat + 1) })}>+</button>
        </div>
        <p class="hint">${loc.t('al.form.repeatHint')}</p>
      </fieldset>

      ${problem && html`<p class="error" role="alert">${problem}</p>`}
      <div class="al-actions">
        <button type="submit" class="al-btn danger big" data-action="next">${loc.t('al.form.next')}</button>
        <button type="button" class="al-btn plain" onClick=${onClose}>${loc.t('al.form.cancel')}</button>
      </div>
    </form>`;
}
