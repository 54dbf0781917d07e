// The alerts screen's data: the open alerts and the recent finished ones,
// the caller's areas and loudspeakers (for the form and for "N loa"), the
// play-at-once policy, and each playing alert's broadcast with its speakers'
// states. Live through the feed's `alert` and `broadcast` events; fetched
// whole again on every (re)connection and every two minutes, so a missed
// event does not stay wrong on a screen left open all night.
import { useEffect, useRef, useState } from './hooks.mjs';
import { api } from './api.js';
import { alertFromEvent, newerAlert } from './alert-model.js';

/** Finished alerts shown under "recent". */
const RECENT = 30;
/** The slow fallback behind the live feed. */
const REFRESH_MS = 2 * 60_000;
/** An alert an event told of within this long is kept even if a snapshot (requested earlier) lacks it. */
const KEEP_MS = 60_000;

const slimSpeaker = (d) => ({ id: d.id, name: d.name, area: d.area, online: d.online });
const enc = encodeURIComponent;

/**
 * `{data, error, live, retry, ops}`: data is null until the first load, then
 * `{alerts: Map id → alert, areas, speakers, policy, broadcasts: Map id →
 * (Map deviceId → state) | null}`. `ops` changes the picture after an action
 * (put an alert the server returned, set the policy, fetch a broadcast).
 */
export function useAlerts(session, onUnauthorized) {
  const { token } = session;
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [live, setLive] = useState(false);
  const [attempt, setAttempt] = useState(0);
  const ops = useRef({ put() {}, setPolicy() {}, broadcast() {}, reload() {} });

  useEffect(() => {
    const ctrl = new AbortController();
    const get = (p) => api(p, { token, signal: ctrl.signal });
    let current = null;
    let loading = null;
    let close = null;
    /** When an event last told of each alert (see KEEP_MS). */
    const touched = new Map();
    const fetchingBroadcast = new Set();
    const show = (d) => { current = d; if (!ctrl.signal.aborted) setData(d); };
    const fail = (err) => {
      if (ctrl.signal.aborted || err?.name === 'AbortError') return;
      if (err?.code === 'KENG_ERR_UNAUTHENTICATED') onUnauthorized();
      else setError(err);
    };

    /** A broadcast's speakers and their states; null when it is not visible (404). */
    const fetchBroadcast = (id) => {
      if (!id || fetchingBroadcast.has(id)) return;
      fetchingBroadcast.add(id);
      get(`/broadcasts/${enc(id)}`).then(
        (b) => new Map((b.targets ?? []).map((x) => [x.deviceId, x.state])),
        (err) => { if (err?.status === 404 || err?.status === 403) return null; throw err; },
      ).then((targets) => {
        if (current) show({ ...current, broadcasts: new Map(current.broadcasts).set(id, targets) });
      }).catch(fail).finally(() => fetchingBroadcast.delete(id));
    };
    /** The broadcasts of playing alerts not fetched yet. */
    const fetchMissingBroadcasts = (alerts) => {
      for (const a of alerts.values()) {
        if (a.state === 'active' && a.broadcastId && !current.broadcasts.has(a.broadcastId)) fetchBroadcast(a.broadcastId);
      }
    };
    const put = (a) => {
      if (!current || !a?.id) return;
      const alerts = new Map(current.alerts).set(a.id, newerAlert(current.alerts.get(a.id), a));
      show({ ...current, alerts });
      fetchMissingBroadcasts(alerts);
    };
    const fetchOne = (id) => get(`/alerts/${enc(id)}`).then(put, (err) => {
      // Gone from the caller's view (moved out of its areas): drop it rather than show it wrong.
      if (err?.status === 404 && current) {
        const alerts = new Map(current.alerts);
        alerts.delete(id);
        show({ ...current, alerts });
      } else fail(err);
    });

    const loadAll = () => {
      loading ??= (async () => {
        const started = Date.now();
        const [open, done, areas, speakers, policy] = await Promise.all([
          get('/alerts?state=pending_approval,active&limit=1000'),
          get(`/alerts?state=ended,cancelled,expired,rejected&limit=${RECENT}`),
          get('/areas'),
          get('/devices?kind=speaker'),
          get('/alerts/policy').catch(() => null),
        ]);
        const before = current?.alerts ?? new Map();
        const alerts = new Map();
        for (const a of [...open, ...done]) alerts.set(a.id, newerAlert(before.get(a.id), a));
        // An event that came while this snapshot was on its way is newer than the snapshot.
        for (const [id, a] of before) if (!alerts.has(id) && (touched.get(id) ?? 0) >= started - KEEP_MS) alerts.set(id, a);
        // Speakers' states are fetched again: events may have been missed while the feed was away.
        show({ alerts, areas, speakers: speakers.map(slimSpeaker), policy, broadcasts: new Map() });
        setError(null);
        fetchMissingBroadcasts(alerts);
        return current;
      })().finally(() => { loading = null; });
      return loading;
    };

    const onAlert = (e) => {
      if (!current || !e?.alertId) return;
      touched.set(e.alertId, Date.now());
      put(alertFromEvent(current.alerts.get(e.alertId), e));
      // The event is a summary: the whole alert (who raised it, its texts) from the API.
      fetchOne(e.alertId);
    };
    const onBroadcast = (m) => {
      const targets = current?.broadcasts.get(m.broadcastId);
      if (!targets) return;
      // A speaker this picture does not have: the whole broadcast again.
      if (!targets.has(m.deviceId)) { fetchBroadcast(m.broadcastId); return; }
      show({ ...current, broadcasts: new Map(current.broadcasts).set(m.broadcastId, new Map(targets).set(m.deviceId, m.state)) });
    };

    ops.current = {
      put,
      setPolicy: (policy) => { if (current) show({ ...current, policy }); },
      broadcast: (id) => { if (current && !current.broadcasts.has(id)) fetchBroadcast(id); },
      reload: () => { loadAll().catch(fail); },
    };

    setError(null);
    loadAll().then(async (d) => {
      // Batched: the alerts screen shows no readings.
      const { connectLive, feedSubscription } = await import('./live.js');
      const stop = await connectLive({
        token, subscription: feedSubscription(session, d.areas), batch: true, onState: setLive, onUnauthorized,
        on: { alert: onAlert, broadcast: onBroadcast },
        // Every (re)connection: what happened while the feed was away is in the next snapshot.
        onSubscribed: () => { loadAll().catch(fail); },
      }).catch(() => null);
      if (ctrl.signal.aborted) stop?.(); else close = stop;
    }).catch(fail);
    const timer = setInterval(() => { loadAll().catch(fail); }, REFRESH_MS);
    return () => { ctrl.abort(); clearInterval(timer); close?.(); };
  }, [token, attempt]);

  return { data, error, live, retry: () => setAttempt((n) => n + 1), ops: ops.current };
}
