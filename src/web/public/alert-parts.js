// Pieces the alerts list and an alert's detail share: the exercise/test
// band, state and severity badges, areas in words, the speakers' states of
// the alert's broadcast, the approval step (two-person rule), and the state
// every step on an alert keeps (approve here, reject and cancel in the detail).
import { useState } from './hooks.mjs';
import { act, html } from './ui.js';
import { alertRefusal } from './alert-words.js';
import { speakersIn, targetCounts } from './alert-model.js';

/** An area in words: "Thôn Đông, Xã Hải Lăng" for a village (village names repeat from commune to commune). */
export function areaName(areas, code) {
  const a = areas.find((x) => x.code === code);
  if (!a) return code;
  const parent = a.level === 'village' && a.parent ? areas.find((x) => x.code === a.parent) : null;
  return parent ? `${a.name}, ${parent.name}` : a.name;
}

/** Several areas, separated so that "Thôn Đông, Xã Hải Lăng" stays one item. */
export const areaNames = (areas, codes) => (codes ?? []).map((c) => areaName(areas, c)).join('; ');

/** A time of the API (ISO) the commune's way: "14:05" today, with the date otherwise. */
export const when = (loc, iso) => (iso ? loc.when(Date.parse(iso)) : '—');

/** Exercises and tests are said loud and first: nobody must take one for a real alert, or the reverse. */
export function DrillBand({ alert, loc }) {
  if (alert.status !== 'Exercise' && alert.status !== 'Test') return null;
  return html`<p class=${`al-band ${alert.status.toLowerCase()}`} data-band=${alert.status}>${loc.t(`al.banner.${alert.status}`)}</p>`;
}

export function StateBadge({ alert, loc }) {
  // Turned down by the one who raised it: withdrawn, not refused by someone else.
  const withdrawn = alert.state === 'rejected' && alert.endedBy !== undefined && alert.endedBy === alert.createdBy;
  return html`<span class=${`al-state st-${alert.state}`} data-state=${alert.state}>${loc.t(`al.state.${withdrawn ? 'withdrawn' : alert.state}`)}</span>`;
}

export function SeverityBadge({ alert, loc }) {
  return html`<span class=${`al-sev sev-${alert.severity}`}>${loc.t(`al.sev.${alert.severity}`)}</span>`;
}

const STATE_ORDER = ['playing', 'completed', 'unconfirmed', 'accepted', 'sent', 'pending', 'offline', 'failed', 'rejected', 'preempted', 'stopped', 'expired'];

/**
 * How many loudspeakers the alert's broadcast has, by state. `targets` is
 * the broadcast's Map of speaker → state, null when it is not visible,
 * undefined while it loads.
 */
export function SpeakerStates({ alert, targets, loc }) {
  if (!alert.broadcastId) {
    return alert.state === 'active' ? html`<p class="al-speakers none" data-speakers="0">${loc.t('al.noSpeakers')}</p>` : null;
  }
  if (targets === undefined) return html`<p class="al-speakers muted">${loc.t('al.speakersLoading')}</p>`;
  if (targets === null) return null;
  const counts = targetCounts(targets);
  const states = Object.keys(counts).sort((a, b) => STATE_ORDER.indexOf(a) - STATE_ORDER.indexOf(b));
  return html`
    <div class="al-speakers" data-speakers=${targets.size}>
      <strong>${loc.t('al.speakers', { n: loc.number(targets.size, 0) })}</strong>
      <ul>${states.map((s) => html`<li key=${s} class=${`t-${s}`} data-target-state=${s}><b>${loc.number(counts[s], 0)}</b> ${loc.t(`al.t.${s}`)}</li>`)}</ul>
    </div>`;
}

/**
 * A step on one alert behind a box that asks first: the box open or not, busy,
 * the refusal. `send` POSTs the step; a 401 ends the session; a conflict means
 * someone else acted first, so the refusal is shown and the alert reloaded
 * (onDone(null)).
 */
export function useAlertStep({ session, onDone, onUnauthorized, startOpen = false }) {
  const [open, setOpen] = useState(startOpen);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const send = async (id, path, body) => {
    setBusy(true);
    setError(null);
    try {
      onDone(await act(session, `/alerts/${encodeURIComponent(id)}/${path}`, { method: 'POST', body }));
      setOpen(false);
    } catch (err) {
      if (err?.code === 'KENG_ERR_UNAUTHENTICATED') { onUnauthorized(); return; }
      setError(err);
      if (err?.code === 'KENG_ERR_CONFLICT') onDone(null);
    } finally {
      setBusy(false);
    }
  };
  return { open, busy, error, send, show: () => { setOpen(true); setError(null); }, hide: () => setOpen(false) };
}

/**
 * The second person's step: "Duyệt" opens a box that repeats what will
 * happen (a real alert on N loudspeakers of these areas, now), then
 * "Duyệt và phát ngay". For an alert played at once it is the confirmation.
 * The creator gets no button but the reason (two-person rule).
 */
export function Approve({ alert, can, data, session, loc, onDone, onUnauthorized }) {
  const step = useAlertStep({ session, onDone, onUnauthorized });
  if (can.needsOther) {
    return html`
      <div class="al-needs-other" data-needs-other>
        <p class="al-needs-title">${loc.t('al.needsOther')}</p>
        <p class="al-small">${loc.t(can.confirming ? 'al.needsOtherConfirm' : 'al.needsOtherWhy')}</p>
      </div>`;
  }
  if (!can.approve) return null;
  const n = alert.devices?.length ?? speakersIn(data.areas, data.speakers, alert.areas).length;
  const ask = can.confirming ? loc.t('al.confirmAsk')
    : n ? loc.t('al.approveAsk', { n: loc.number(n, 0), areas: areaNames(data.areas, alert.areas) }) : loc.t('al.approveAskNone');
  // An empty object, not no body: the route refuses a POST without one (400), whatever its schema says.
  const run = () => step.send(alert.id, 'approve', {});
  if (!step.open) {
    return html`<button type="button" class="al-btn go" data-action="approve" onClick=${step.show}>
      ${loc.t(can.confirming ? 'al.confirm' : 'al.approve')}</button>`;
  }
  return html`
    <div class="al-ask go" role="alertdialog" aria-label=${ask}>
      <p>${ask}</p>
      ${step.error && html`<p class="error" role="alert">${alertRefusal(step.error, loc)}</p>`}
      <div class="al-actions">
        <button type="button" class="al-btn go" data-action="approve-yes" disabled=${step.busy} onClick=${run}>
          ${step.busy ? loc.t('al.busy') : loc.t(can.confirming ? 'al.confirmNow' : 'al.approveNow')}</button>
        <button type="button" class="al-btn plain" onClick=${step.hide}>${loc.t('al.no')}</button>
      </div>
    </div>`;
}
