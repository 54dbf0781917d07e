// Cảnh báo: the commune's emergency alerts (docs/alerts.md). Staff raise an
// alert, a second person approves it, anyone with rights cancels it; the IOC
// and admins watch. The list puts what is sounding first (big, red when life
// is at stake), then what waits for a second person, then the recent
// finished ones; all of it changes live through the feed's `alert` and
// `broadcast` events. Raising (alert-form.js) and an alert's detail
// (alert-detail.js) replace the list on the screen; an admin also sets the
// play-at-once policy here.
import { useState } from './hooks.mjs';
import { ErrorNote, Loading, act, html, loadCss } from './ui.js';
import { alertRefusal } from './alert-words.js';
import { useAlerts } from './alert-data.js';
import { allowedActions, isGrave, sections } from './alert-model.js';
import { Approve, DrillBand, SeverityBadge, SpeakerStates, StateBadge, areaNames, when } from './alert-parts.js';
import { RaiseForm } from './alert-form.js';
import { AlertDetail } from './alert-detail.js';

loadCss('view-alerts.css');

export default function Alerts({ session, loc, onUnauthorized }) {
  const { data, error, live, retry, ops } = useAlerts(session, onUnauthorized);
  const [mode, setMode] = useState({ view: 'list' });
  /** The alert just raised here: the note under the button follows it (waiting, then playing). */
  const [sentId, setSentId] = useState(null);
  const writer = session.role === 'admin' || session.role === 'operator';
  const go = (m) => { setMode(m); window.scrollTo?.(0, 0); };
  /** After an action: the alert the server returned, or (a conflict: someone else was quicker) everything again. */
  const done = (a) => (a ? ops.put(a) : ops.reload());

  if (!data) return error ? html`<section class="card"><${ErrorNote} error=${error} loc=${loc} onRetry=${retry} /></section>` : html`<${Loading} loc=${loc} />`;

  if (mode.view === 'raise') {
    return html`<${RaiseForm} data=${data} session=${session} loc=${loc} onUnauthorized=${onUnauthorized} onClose=${() => go({ view: 'list' })}
      onDone=${(a) => { ops.put(a); setSentId(a.id); go({ view: 'list' }); }} />`;
  }
  if (mode.view === 'detail') {
    return html`<${AlertDetail} alert=${data.alerts.get(mode.id)} ask=${mode.ask} data=${data} session=${session} loc=${loc} onUnauthorized=${onUnauthorized}
      onBack=${() => go({ view: 'list' })} onDone=${done} onNeedBroadcast=${ops.broadcast} />`;
  }

  const { active, pending, recent } = sections(data.alerts.values());
  const open = (a, ask) => { setSentId(null); go({ view: 'detail', id: a.id, ask }); };
  const sent = sentId ? data.alerts.get(sentId) : null;
  const notice = sent?.state === 'pending_approval' ? 'al.sent.pending' : sent?.state === 'active' ? 'al.sent.active' : null;
  const common = { data, session, loc, onDone: done, onOpen: open, onUnauthorized };
  return html`
    <div class="al">
      <div class="al-head">
        <h1>${loc.t('al.title')}</h1>
        <span class=${live ? 'live on' : 'live'} role="status">${live ? loc.t('live.on') : loc.t('live.off')}</span>
        ${writer && html`<button type="button" class="al-btn danger big al-raise" data-action="raise" onClick=${() => { setSentId(null); go({ view: 'raise' }); }}>
          <span aria-hidden="true">⚠</span> ${loc.t('al.raise')}</button>`}
      </div>
      ${notice && html`<p class="notice" role="status" data-notice>${loc.t(notice)}</p>`}
      ${error && html`<${ErrorNote} error=${error} loc=${loc} onRetry=${retry} />`}

      <section class="al-sec" data-section="active">
        <h2>${loc.t('al.active')} <span class=${active.length ? 'al-n hot' : 'al-n'}>${loc.number(active.length, 0)}</span></h2>
        ${active.length === 0 && html`<p class="muted al-none">${loc.t('al.noneActive')}</p>`}
        <div class="al-grid">${active.map((a) => html`<${ActiveCard} key=${a.id} a=${a} ...${common} />`)}</div>
      </section>

      <div class="al-cols">
        <section class="al-sec" data-section="pending">
          <h2>${loc.t('al.pending')} <span class=${pending.length ? 'al-n warn' : 'al-n'}>${loc.number(pending.length, 0)}</span></h2>
          ${pending.length === 0 && html`<p class="muted al-none">${loc.t('al.nonePending')}</p>`}
          ${pending.map((a) => html`<${PendingCard} key=${a.id} a=${a} ...${common} />`)}
        </section>
        <section class="al-sec" data-section="recent">
          <h2>${loc.t('al.recent')}</h2>
          ${recent.length === 0 && html`<p class="muted al-none">${loc.t('al.noneRecent')}</p>`}
          ${recent.length > 0 && html`<ul class="card al-recent">${recent.map((a) => html`<${RecentRow} key=${a.id} a=${a} ...${common} />`)}</ul>`}
        </section>
      </div>

      ${session.role === 'admin' && html`<${PolicyCard} data=${data} session=${session} loc=${loc} onSaved=${ops.setPolicy} onUnauthorized=${onUnauthorized} />`}
    </div>`;
}

const drill = (a) => (a.status === 'Exercise' || a.status === 'Test' ? ` drill ${a.status.toLowerCase()}` : '');

function ActiveCard({ a, data, session, loc, onDone, onOpen, onUnauthorized }) {
  const can = allowedActions(a, session);
  const targets = a.broadcastId ? data.broadcasts.get(a.broadcastId) : undefined;
  const expires = a.cap?.expires ?? a.expires;
  return html`
    <article class=${`card al-card active${isGrave(a) ? ' grave' : ''}${drill(a)}`} data-alert=${a.id} data-state=${a.state}>
      <${DrillBand} alert=${a} loc=${loc} />
      <div class="al-badges">
        <span class="al-playing">${loc.t('al.playing')}</span>
        <${SeverityBadge} alert=${a} loc=${loc} />
      </div>
      <h3 class="al-headline">${a.headline ?? a.event}</h3>
      <p class="al-where">${a.event} · ${areaNames(data.areas, a.areas)}</p>
      <p class="al-when">${loc.t('al.since', { t: when(loc, a.approvedAt ?? a.createdAt) })}${expires ? ` · ${loc.t('al.until', { t: when(loc, expires) })}` : ''}</p>
      ${a.playedAtOnce && !a.approvedBy && html`<p class="al-note">${loc.t('al.playedAtOnce')}</p>`}
      <${SpeakerStates} alert=${a} targets=${targets} loc=${loc} />
      <div class="al-actions">
        <${Approve} alert=${a} can=${can} data=${data} session=${session} loc=${loc} onDone=${onDone} onUnauthorized=${onUnauthorized} />
        <button type="button" class="al-btn plain" data-action="open" onClick=${() => onOpen(a)}>${loc.t('al.details')}</button>
        ${can.cancel && html`<button type="button" class="al-btn plain danger-text" data-action="cancel" onClick=${() => onOpen(a, 'cancel')}>${loc.t('al.d.cancel')}</button>`}
      </div>
    </article>`;
}

function PendingCard({ a, data, session, loc, onDone, onOpen, onUnauthorized }) {
  const can = allowedActions(a, session);
  return html`
    <article class=${`card al-card pending${isGrave(a) ? ' grave' : ''}${drill(a)}`} data-alert=${a.id} data-state=${a.state}>
      <${DrillBand} alert=${a} loc=${loc} />
      <div class="al-badges"><${StateBadge} alert=${a} loc=${loc} /> <${SeverityBadge} alert=${a} loc=${loc} /></div>
      <h3 class="al-headline">${a.headline ?? a.event}</h3>
      <p class="al-where">${a.event} · ${areaNames(data.areas, a.areas)}</p>
      <p class="al-who" data-raised-by=${a.createdBy}>${a.createdBy ? loc.t('al.raisedBy', { who: a.createdBy, t: when(loc, a.createdAt) }) : '\u00a0'}</p>
      <${Approve} alert=${a} can=${can} data=${data} session=${session} loc=${loc} onDone=${onDone} onUnauthorized=${onUnauthorized} />
      <div class="al-actions">
        <button type="button" class="al-btn plain" data-action="open" onClick=${() => onOpen(a)}>${loc.t('al.details')}</button>
      </div>
    </article>`;
}

function RecentRow({ a, data, loc, onOpen }) {
  return html`
    <li data-alert=${a.id} data-state=${a.state}>
      <button type="button" class="al-row" onClick=${() => onOpen(a)}>
        <span class="al-row-top"><${StateBadge} alert=${a} loc=${loc} />
          ${a.status !== 'Actual' && html`<span class=${`al-tag ${String(a.status).toLowerCase()}`}>${loc.t(`al.status.${a.status}`)}</span>`}
          <time>${when(loc, a.endedAt ?? a.createdAt)}</time></span>
        <span class="al-row-title">${a.headline ?? a.event}</span>
        <span class="al-row-where">${areaNames(data.areas, a.areas)}</span>
      </button>
    </li>`;
}

/** Admin only: which severities of real, act-now alerts play before the second person approves (docs/alerts.md). */
function PolicyCard({ data, session, loc, onSaved, onUnauthorized }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(false);
  const on = new Set(data.policy?.playAtOnce ?? []);
  const toggle = async (sev, checked) => {
    const next = new Set(on);
    if (checked) next.add(sev); else next.delete(sev);
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      onSaved(await act(session, '/alerts/policy', { method: 'PUT', body: { playAtOnce: [...next] } }));
      setSaved(true);
    } catch (err) {
      if (err?.code === 'KENG_ERR_UNAUTHENTICATED') { onUnauthorized(); return; }
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <section class="card al-policy" data-policy>
      <h2>${loc.t('al.p.title')}</h2>
      <p class="al-small">${loc.t('al.p.body')}</p>
      ${['Extreme', 'Severe'].map((sev) => html`
        <label class="al-switch" key=${sev}>
          <input type="checkbox" role="switch" name=${`playAtOnce-${sev}`} checked=${on.has(sev)} disabled=${busy}
            onChange=${(e) => toggle(sev, e.currentTarget.checked)} />
          <span>${loc.t(`al.sev.${sev}`)} + ${loc.t('al.urg.Immediate')} <small class="cap">${sev} + Immediate</small></span>
        </label>`)}
      ${saved && html`<p class="notice" role="status">${loc.t('al.p.saved')}</p>`}
      ${error && html`<p class="error" role="alert">${alertRefusal(error, loc)}</p>`}
    </section>`;
}
