// Small pieces every view uses: loading and error states, a data hook that
// ends the session on 401, the life of a view fed by the live feed, and
// per-view style sheets. The farmer's first view imports it too, so it stays
// small and imports nothing that main.js does not already load.
import { h } from './preact.mjs';
import { useEffect, useState } from './hooks.mjs';
import htm from './htm.mjs';
import { api } from './api.js';

export const html = htm.bind(h);

const loadedCss = new Set();

/** A view's own style sheet (`view-x.css` next to its module), added once when the view loads. */
export function loadCss(name) {
  if (loadedCss.has(name)) return;
  loadedCss.add(name);
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = new URL(`./${name}`, import.meta.url).href;
  document.head.append(link);
}

/** The words for an API error, in the page's language. */
export function errorText(err, loc) {
  if (err?.code === 'NETWORK') return loc.t('error.network');
  if (err?.code === 'KENG_ERR_FORBIDDEN') return loc.t('error.forbidden');
  return err?.message && err.status && err.status < 500
    ? `${loc.t('error.generic', { code: err.code })} ${err.message}`
    : loc.t('error.generic', { code: err?.code ?? '?' });
}

export function ErrorNote({ error, loc, onRetry }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${errorText(error, loc)}
    ${onRetry && html` <button type="button" class="secondary" onClick=${onRetry}>${loc.t('retry')}</button>`}</p>`;
}

export function Loading({ loc }) {
  return html`<p class="muted center">${loc.t('loading')}</p>`;
}

/**
 * A view loaded from the API, then kept up to date by the live feed.
 * `start(signal, setLive)` loads and connects, and resolves to the function
 * that closes the feed (or nothing); it runs again on `retry()` and when the
 * session changes, and what it opened is closed when the view goes. A 401
 * ends the session; another error is returned for the view to show with a
 * retry. The view is redrawn every minute, so that "offline since" and
 * "updated at" stay right without events.
 */
export function useLiveView(session, onUnauthorized, start) {
  const [error, setError] = useState(null);
  const [live, setLive] = useState(false);
  const [attempt, setAttempt] = useState(0);
  const [, tick] = useState(0);
  useEffect(() => {
    const ctrl = new AbortController();
    let close = null;
    setError(null);
    start(ctrl.signal, setLive).then((stop) => {
      if (ctrl.signal.aborted) stop?.(); else close = stop;
    }).catch((err) => {
      if (ctrl.signal.aborted) return;
      if (err?.code === 'KENG_ERR_UNAUTHENTICATED') onUnauthorized();
      else setError(err);
    });
    const timer = setInterval(() => tick((n) => n + 1), 60_000);
    return () => { ctrl.abort(); clearInterval(timer); close?.(); };
  }, [session.token, attempt]);
  return { error, live, retry: () => setAttempt((n) => n + 1) };
}

/**
 * GET paths with the session's token: `{data, error, reload}`; data is an
 * array of the results in the order of `paths`. A 401 ends the session.
 */
export function useApiData(session, paths, onUnauthorized, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    const ctrl = new AbortController();
    Promise.all(paths.map((p) => api(p, { token: session.token, signal: ctrl.signal }))).then(
      (data) => { if (!ctrl.signal.aborted) setState({ data, error: null }); },
      (error) => {
        if (ctrl.signal.aborted) return;
        if (error?.code === 'KENG_ERR_UNAUTHENTICATED') onUnauthorized();
        else setState((s) => ({ data: s.data, error }));
      });
    return () => ctrl.abort();
  }, [session.token, attempt, ...deps]);
  return { ...state, reload: () => setAttempt((n) => n + 1) };
}

/** Calls the API for an action (POST/PATCH/DELETE) with the session's token. */
export function act(session, path, opts = {}) {
  return api(path, { ...opts, token: session.token });
}

/** The areas in tree order, each with its depth (children under their parent, by name). */
export function treeOrder(areas) {
  const codes = new Set(areas.map((a) => a.code));
  const kids = new Map();
  for (const a of areas) {
    const p = a.parent && codes.has(a.parent) ? a.parent : null;
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(a);
  }
  const out = [];
  const walk = (p, depth) => {
    for (const a of (kids.get(p) ?? []).sort((x, y) => x.name.localeCompare(y.name, 'vi'))) {
      out.push({ area: a, depth });
      if (depth < 8) walk(a.code, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}
