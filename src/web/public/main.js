// Keng's web app: login, then the views of the caller's role (menus by role,
// one module per view). Plain ES modules (preact + htm), no build step.
import { h, render } from './preact.mjs';
import { useCallback, useEffect, useMemo, useState } from './hooks.mjs';
import htm from './htm.mjs';
import { api } from './api.js';
import { communeTz, makeLocale, storeLang, storedLang } from './i18n.js';
import Sensors from './view-sensors.js';

const html = htm.bind(h);
const SESSION_KEY = 'keng.session';

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null');
    if (s?.token && (!s.expiresAt || Date.parse(s.expiresAt) > Date.now())) return s;
  } catch { /* a damaged entry is no session */ }
  return null;
}

function saveSession(s) {
  if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(SESSION_KEY);
}

/** The message for a failed login, in the page's language. */
function loginError(err, loc) {
  switch (err?.code) {
    case 'KENG_ERR_LOGIN_FAILED': return loc.t('login.failed');
    case 'KENG_ERR_ACCOUNT_LOCKED': return err.retryAfterSec
      ? loc.t('login.lockedFor', { m: Math.ceil(err.retryAfterSec / 60) }) : loc.t('login.locked');
    case 'KENG_ERR_RATE_LIMITED': return loc.t('login.wait', { s: err.retryAfterSec ?? 60 });
    case 'NETWORK': return loc.t('error.network');
    default: return loc.t('error.generic', { code: err?.code ?? '?' });
  }
}

function App() {
  const [lang, setLang] = useState(storedLang);
  const [session, setSession] = useState(loadSession);
  const [notice, setNotice] = useState(null);
  const loc = useMemo(() => makeLocale(lang, communeTz()), [lang]);

  useEffect(() => {
    document.documentElement.lang = lang;
    document.title = loc.t('appName');
  }, [lang]);

  const switchLang = () => {
    const next = lang === 'vi' ? 'en' : 'vi';
    storeLang(next);
    setLang(next);
  };
  const login = (s) => { saveSession(s); setNotice(null); setSession(s); };
  const endSession = useCallback((expired) => {
    saveSession(null);
    setSession(null);
    setNotice(expired ? 'error.expired' : null);
  }, []);
  const logout = async () => {
    // The token is revoked on the server too; the page logs out even if that fails.
    try { await api('/auth/logout', { token: session.token, method: 'POST' }); } catch { /* already gone */ }
    endSession(false);
  };

  return html`
    <header class="bar">
      <div class="brand"><span class="logo" aria-hidden="true">◉</span> ${loc.t('appName')}</div>
      <button type="button" class="ghost" lang=${lang === 'vi' ? 'en' : 'vi'} aria-label=${loc.t('switchLangLabel')} onClick=${switchLang}>${loc.t('switchLang')}</button>
      ${session && html`<button type="button" class="ghost" onClick=${logout}>${loc.t('logout')}</button>`}
    </header>
    <main>
      ${session && html`<p class="who">${session.username} · ${loc.t(`role.${session.role}`)}</p>`}
      ${session
        ? html`<${Home} session=${session} loc=${loc} onUnauthorized=${() => endSession(true)} />`
        : html`<${Login} loc=${loc} notice=${notice} onLogin=${login} />`}
    </main>`;
}

function Login({ loc, notice, onLogin }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    setBusy(true);
    setError(null);
    try {
      const r = await api('/auth/login', { method: 'POST', body: { username: String(form.get('username')).trim(), password: String(form.get('password')) } });
      onLogin({ token: r.token, expiresAt: r.expiresAt, username: r.username, role: r.role, areas: r.areas });
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`
    <form class="card login" onSubmit=${submit}>
      <h1>${loc.t('login.title')}</h1>
      <p class="muted">${loc.t('tagline')}</p>
      ${notice && !error && html`<p class="notice" role="status">${loc.t(notice)}</p>`}
      <label>${loc.t('login.username')}
        <input name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required maxlength="64" />
      </label>
      <label>${loc.t('login.password')}
        <input name="password" type="password" autocomplete="current-password" required maxlength="1024" />
      </label>
      ${error && html`<p class="error" role="alert">${loginError(error, loc)}</p>`}
      <button type="submit" class="primary" disabled=${busy}>${busy ? loc.t('login.busy') : loc.t('login.submit')}</button>
    </form>`;
}

/**
 * Menus by role (docs/roles.md): each tab is a view module of its own
 * (`view-<tab>.js`), loaded when first opened, so a farmer's phone never
 * downloads the staff screens. The sensors view is every role's first tab
 * and comes with this file.
 */
const TABS = {
  viewer: ['sensors'],
  operator: ['sensors', 'speakers', 'schedules', 'log', 'alerts'],
  service: ['overview', 'sensors', 'alerts'],
  admin: ['overview', 'sensors', 'speakers', 'schedules', 'log', 'alerts', 'admin'],
};

const LOADERS = {
  overview: () => import('./view-overview.js'),
  speakers: () => import('./view-speakers.js'),
  schedules: () => import('./view-schedules.js'),
  log: () => import('./view-log.js'),
  alerts: () => import('./view-alerts.js'),
  admin: () => import('./view-admin.js'),
};

const TAB_KEY = 'keng.tab';

function tabsFor(role) {
  return TABS[role] ?? TABS.viewer;
}

function Home({ session, loc, onUnauthorized }) {
  const tabs = tabsFor(session.role);
  const [tab, setTabState] = useState(() => {
    const saved = sessionStorage.getItem(TAB_KEY);
    return tabs.includes(saved) ? saved : tabs[0];
  });
  const [views, setViews] = useState({ sensors: Sensors });
  const [failed, setFailed] = useState(null);
  const setTab = (x) => { sessionStorage.setItem(TAB_KEY, x); setTabState(x); };

  useEffect(() => {
    if (views[tab] || !LOADERS[tab]) return;
    setFailed(null);
    LOADERS[tab]().then((m) => setViews((v) => ({ ...v, [tab]: m.default })), (err) => setFailed(err));
  }, [tab]);

  const View = views[tab];
  return html`
    ${tabs.length > 1 && html`
      <nav class="tabs">
        ${tabs.map((x) => html`<button type="button" class=${x === tab ? 'tab on' : 'tab'} data-tab=${x} aria-current=${x === tab ? 'page' : undefined} onClick=${() => setTab(x)}>${loc.t(`nav.${x}`)}</button>`)}
      </nav>`}
    ${View
      ? html`<${View} key=${tab} session=${session} loc=${loc} onUnauthorized=${onUnauthorized} />`
      : failed
        ? html`<section class="card"><p class="error" role="alert">${loc.t('error.network')}</p></section>`
        : html`<p class="muted center">${loc.t('loading')}</p>`}`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
