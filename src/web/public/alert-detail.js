// One alert: what it says (the CAP fields in words), what happened to it
// (raised, approved, cancelled: by whom and when, from the alert's own
// fields; the audit log has the same), its loudspeakers, and what the
// current user may do: approve or confirm (not one's own), reject or
// withdraw with a reason, cancel with a confirmation. The CAP XML is fetched
// with the session's token (a plain link would carry none) and saved.
import { useEffect, useState } from './hooks.mjs';
import { html } from './ui.js';
import { alertRefusal } from './alert-words.js';
import { allowedActions, isGrave } from './alert-model.js';
import { Approve, DrillBand, SeverityBadge, SpeakerStates, StateBadge, areaNames, useAlertStep, when } from './alert-parts.js';

/** Reasons the server writes itself: not worth repeating as "Lý do". */
const PLAIN_REASONS = /^(cancelled|rejected|expired|applied|replaced by .*|cancelled by .*)$/;

/** The alert's life as lines (time, what, who, reason), oldest first. */
function timeline(a, loc) {
  const drill = a.status === 'Exercise' || a.status === 'Test';
  const raised = drill ? 'al.d.createdDrill' : a.playedAtOnce ? 'al.d.createdAtOnce' : 'al.d.created';
  const out = [{ at: a.createdAt, what: loc.t(raised), who: a.createdBy, key: 'created' }];
  if (a.approvedAt) out.push({ at: a.approvedAt, what: loc.t(a.playedAtOnce ? 'al.d.confirmed' : 'al.d.approved'), who: a.approvedBy, key: 'approved' });
  if (a.endedAt || (a.state !== 'active' && a.state !== 'pending_approval')) {
    const key = a.state === 'rejected' && a.endedBy && a.endedBy === a.createdBy ? 'withdrawn' : a.state;
    out.push({
      at: a.endedAt, what: loc.t(`al.d.${key}`), who: a.endedBy ?? (a.state === 'expired' ? loc.t('al.d.system') : undefined), key,
      reason: a.endReason && !PLAIN_REASONS.test(a.endReason) ? a.endReason : undefined,
    });
  }
  return out;
}

/** A step that needs a reason and a second look: reject, withdraw, cancel. */
function ReasonStep({ id, ask, label, action, path, danger, startOpen = false, session, loc, onDone, onUnauthorized }) {
  const step = useAlertStep({ session, onDone, onUnauthorized, startOpen });
  const [reason, setReason] = useState('');
  const run = () => {
    const r = reason.trim();
    return step.send(id, path, r ? { reason: r } : {});
  };
  if (!step.open) {
    return html`<button type="button" class=${danger ? 'al-btn danger' : 'al-btn plain danger-text'} data-action=${path}
      onClick=${step.show}>${label}</button>`;
  }
  return html`
    <div class="al-ask" role="alertdialog" aria-label=${ask} data-ask=${path}>
      <p>${ask}</p>
      <label class="al-field">${loc.t(path === 'cancel' ? 'al.d.cancelReason' : 'al.d.rejectReason')}
        <input name="reason" value=${reason} maxLength="500" autocomplete="off" onInput=${(e) => setReason(e.currentTarget.value)} />
      </label>
      ${step.error && html`<p class="error" role="alert">${alertRefusal(step.error, loc)}</p>`}
      <div class="al-actions">
        <button type="button" class="al-btn danger" data-action=${`${path}-yes`} disabled=${step.busy} onClick=${run}>${step.busy ? loc.t('al.busy') : action}</button>
        <button type="button" class="al-btn plain" onClick=${step.hide}>${loc.t('al.no')}</button>
      </div>
    </div>`;
}

function CapDownload({ alert, session, loc, onUnauthorized }) {
  const [failed, setFailed] = useState(false);
  const download = async () => {
    setFailed(false);
    try {
      const res = await fetch(`/api/v1/alerts/${encodeURIComponent(alert.id)}.cap.xml`, { headers: { authorization: `Bearer ${session.token}` } });
      if (res.status === 401) { onUnauthorized(); return; }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const url = URL.createObjectURL(await res.blob());
      const a = document.createElement('a');
      a.href = url;
      a.download = `${alert.identifier || alert.id}.cap.xml`;
      document.body.append(a);
      a.click();
      a.remove();
      // The browser has the file once the click is handled; the URL is freed a little later, not at once (Safari).
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch {
      setFailed(true);
    }
  };
  return html`
    <button type="button" class="al-btn plain" data-action="cap" onClick=${download}>${loc.t('al.d.cap')}</button>
    ${failed && html`<p class="error" role="alert">${loc.t('al.d.capFailed')}</p>`}`;
}

export function AlertDetail({ alert, data, session, loc, ask, onBack, onDone, onNeedBroadcast, onUnauthorized }) {
  // Its speakers' states, also for a finished alert (how many played it).
  useEffect(() => { if (alert?.broadcastId) onNeedBroadcast(alert.broadcastId); }, [alert?.broadcastId]);
  if (!alert) {
    return html`<section class="card"><button type="button" class="al-btn plain" onClick=${onBack}>${loc.t('al.back')}</button>
      <p>${loc.t('al.d.gone')}</p></section>`;
  }
  const a = alert;
  const can = allowedActions(a, session);
  const cap = a.cap ?? a;
  const field = (label, value) => (value === undefined || value === null || value === '' ? null
    : html`<div><dt>${loc.t(label)}</dt><dd>${value}</dd></div>`);
  const targets = a.broadcastId ? data.broadcasts.get(a.broadcastId) : undefined;
  return html`
    <section class=${`card al-detail st-${a.state}${isGrave(a) ? ' grave' : ''}${a.status === 'Exercise' || a.status === 'Test' ? ' drill' : ''}`} data-detail=${a.id}>
      <button type="button" class="al-btn plain back" onClick=${onBack}>${loc.t('al.back')}</button>
      <${DrillBand} alert=${a} loc=${loc} />
      <div class="al-badges"><${StateBadge} alert=${a} loc=${loc} /> <${SeverityBadge} alert=${a} loc=${loc} /></div>
      <h1 class="al-headline">${a.headline ?? a.event}</h1>
      ${a.state === 'active' && a.playedAtOnce && !a.approvedBy && html`<p class="notice">${loc.t('al.playedAtOnce')}</p>`}
      <${SpeakerStates} alert=${a} targets=${targets} loc=${loc} />

      <div class="al-actions al-decide">
        <${Approve} alert=${a} can=${can} data=${data} session=${session} loc=${loc} onDone=${onDone} onUnauthorized=${onUnauthorized} />
        ${can.reject && html`<${ReasonStep} id=${a.id} path="reject" session=${session} loc=${loc} onDone=${onDone} onUnauthorized=${onUnauthorized}
          label=${loc.t(can.mine ? 'al.d.withdraw' : 'al.d.reject')} ask=${loc.t(can.mine ? 'al.d.withdrawAsk' : 'al.d.rejectAsk')}
          action=${loc.t(can.mine ? 'al.d.withdraw' : 'al.d.reject')} />`}
        ${can.cancel && html`<${ReasonStep} id=${a.id} path="cancel" danger=${true} session=${session} loc=${loc} onDone=${onDone} onUnauthorized=${onUnauthorized}
          label=${loc.t('al.d.cancel')} ask=${loc.t('al.d.cancelAsk')} action=${loc.t('al.d.cancelNow')} startOpen=${ask === 'cancel'} />`}
      </div>

      <h2>${loc.t('al.d.timeline')}</h2>
      <ol class="al-timeline" data-timeline>
        ${timeline(a, loc).map((x) => html`
          <li key=${x.key} data-step=${x.key}>
            <time>${when(loc, x.at)}</time>
            <span><b>${x.what}</b>${x.who ? html` · ${x.who}` : ''}${x.reason ? html`<br /><small>${loc.t('al.d.reason', { r: x.reason })}</small>` : ''}</span>
          </li>`)}
      </ol>

      <dl class="al-fields">
        ${field('al.d.event', a.event)}
        ${field('al.d.severity', a.severity && html`${loc.t(`al.sev.${a.severity}`)} <small class="cap">${a.severity}</small>`)}
        ${field('al.d.urgency', a.urgency && html`${loc.t(`al.urg.${a.urgency}`)} <small class="cap">${a.urgency}</small>`)}
        ${field('al.d.certainty', cap.certainty && html`${loc.t(`al.cert.${cap.certainty}`)} <small class="cap">${cap.certainty}</small>`)}
        ${field('al.d.status', a.status && html`${loc.t(`al.status.${a.status}`)} <small class="cap">${a.status}</small>`)}
        ${field('al.d.msgType', a.msgType)}
        ${field('al.d.description', cap.description)}
        ${field('al.d.instruction', cap.instruction)}
        ${field('al.d.areas', areaNames(data.areas, a.areas))}
        ${field('al.d.expires', cap.expires && when(loc, cap.expires))}
        ${field('al.d.repeat', cap.repeat !== undefined ? loc.number(cap.repeat, 0) : undefined)}
        ${field('al.d.sent', cap.sent && when(loc, cap.sent))}
        ${field('al.d.sender', cap.sender)}
        ${field('al.d.identifier', a.identifier && html`<code>${a.identifier}</code>`)}
      </dl>
      ${!a.partial && html`<${CapDownload} alert=${a} session=${session} loc=${loc} onUnauthorized=${onUnauthorized} />`}
    </section>`;
}
