// Quản trị (admins): accounts, API tokens, the area tree, devices and the
// provisioning keys devices register themselves with, as
// segmented sections over one shared list of areas (every section picks
// areas from it). Each section is its own module, loaded with this view.
import { useEffect, useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { ErrorNote, Loading, html, loadCss, useApiData } from './ui.js';
import Users from './adm-users.js';
import Tokens from './adm-tokens.js';
import Areas from './adm-areas.js';
import Devices from './adm-devices.js';
import Provisioning from './adm-provisioning.js';

loadCss('view-admin.css');

addStrings({
  vi: {
    'adm.title': 'Quản trị',
    'adm.sec.users': 'Tài khoản',
    'adm.sec.tokens': 'Mã API',
    'adm.sec.areas': 'Khu vực',
    'adm.sec.devices': 'Thiết bị',
    'adm.sec.provisioning': 'Khoá đăng ký',
  },
  en: {
    'adm.title': 'Administration',
    'adm.sec.users': 'Accounts',
    'adm.sec.tokens': 'API tokens',
    'adm.sec.areas': 'Areas',
    'adm.sec.devices': 'Devices',
    'adm.sec.provisioning': 'Provisioning keys',
  },
});

const SECTIONS = { users: Users, tokens: Tokens, areas: Areas, devices: Devices, provisioning: Provisioning };
const SECTION_KEY = 'keng.admin.section';

export default function Admin({ session, loc, onUnauthorized }) {
  const [section, setSectionState] = useState(() => {
    const saved = sessionStorage.getItem(SECTION_KEY);
    return saved in SECTIONS ? saved : 'users';
  });
  const [areasVersion, setAreasVersion] = useState(0);
  const { data, error, reload } = useApiData(session, ['/areas'], onUnauthorized, [areasVersion]);
  const setSection = (s) => { sessionStorage.setItem(SECTION_KEY, s); setSectionState(s); };
  useEffect(() => { window.scrollTo?.(0, 0); }, [section]);

  const Section = SECTIONS[section];
  return html`
    <section class="adm">
      <h1 class="adm-title">${loc.t('adm.title')}</h1>
      <div class="seg" role="group" aria-label=${loc.t('adm.title')}>
        ${Object.keys(SECTIONS).map((s) => html`
          <button type="button" key=${s} class=${s === section ? 'on' : ''} aria-pressed=${s === section} data-section=${s} onClick=${() => setSection(s)}>
            ${loc.t(`adm.sec.${s}`)}</button>`)}
      </div>
      ${error && html`<${ErrorNote} error=${error} loc=${loc} onRetry=${reload} />`}
      ${data
        ? html`<${Section} key=${section} session=${session} loc=${loc} onUnauthorized=${onUnauthorized}
            areas=${data[0]} reloadAreas=${() => setAreasVersion((n) => n + 1)} />`
        : !error && html`<${Loading} loc=${loc} />`}
    </section>`;
}
