// Khu vực: the area tree (province → commune → village; two-tier local
// government since July 2025, no districts), a form that adds one area
// under the right parent, and each area's settings sent to its devices
// (shared attributes). The API has no change or delete for areas.
import { useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { act, html, treeOrder } from './ui.js';
import { AreaSelect, Refusal, useAction, wideScreen } from './adm-common.js';
import { SharedAttributes } from './adm-shared.js';

addStrings({
  vi: {
    'adm.areas.tree': 'Cây khu vực',
    'adm.areas.new': 'Thêm khu vực',
    'adm.areas.level': 'Cấp',
    'adm.areas.parent': 'Thuộc',
    'adm.areas.code': 'Mã khu vực',
    'adm.areas.codeHint': 'Chữ, số, dấu _ . - (ví dụ mã hành chính); không đổi được về sau.',
    'adm.areas.name': 'Tên tiếng Việt',
    'adm.areas.namePh': 'Ví dụ: Xã Hải Phú',
    'adm.areas.create': 'Tạo khu vực',
    'adm.areas.created': 'Đã tạo {name}.',
    'adm.areas.empty': 'Chưa có khu vực nào. Hãy bắt đầu bằng một tỉnh.',
  },
  en: {
    'adm.areas.tree': 'Area tree',
    'adm.areas.new': 'Add an area',
    'adm.areas.level': 'Level',
    'adm.areas.parent': 'Belongs to',
    'adm.areas.code': 'Area code',
    'adm.areas.codeHint': 'Letters, digits, _ . - (an administrative code, say); cannot change later.',
    'adm.areas.name': 'Vietnamese name',
    'adm.areas.namePh': 'E.g. Xã Hải Phú',
    'adm.areas.create': 'Create area',
    'adm.areas.created': '{name} created.',
    'adm.areas.empty': 'No areas yet. Start with a province.',
  },
});

const PARENT_LEVEL = { commune: 'province', village: 'commune' };

export default function Areas({ session, loc, onUnauthorized, areas, reloadAreas }) {
  const [level, setLevel] = useState(() => (areas.some((a) => a.level === 'commune') ? 'village'
    : areas.some((a) => a.level === 'province') ? 'commune' : 'province'));
  const [parent, setParent] = useState('');
  const [done, setDone] = useState(null);
  const create = useAction(onUnauthorized);
  const [adding, setAdding] = useState(wideScreen);
  const [settings, setSettings] = useState(null);

  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const body = { code: String(f.get('code')).trim(), name: String(f.get('name')).trim(), level };
    if (level !== 'province') body.parent = parent;
    setDone(null);
    const r = await create.run(() => act(session, '/areas', { method: 'POST', body }));
    if (r) {
      setDone(r.name);
      form.reset();
      reloadAreas();
    }
  };

  const form = html`
      <form class="card adm-form" data-form="area" onSubmit=${submit}>
        <h2>${loc.t('adm.areas.new')}</h2>
        <label>${loc.t('adm.areas.level')}
          <select name="level" value=${level} onChange=${(e) => { setLevel(e.currentTarget.value); setParent(''); }}>
            ${['province', 'commune', 'village'].map((l) => html`<option value=${l}>${loc.t(`adm.level.${l}`)}</option>`)}
          </select>
        </label>
        ${level !== 'province' && html`
          <label>${loc.t('adm.areas.parent')} (${loc.t(`adm.level.${PARENT_LEVEL[level]}`)})
            <${AreaSelect} areas=${areas} name="parent" value=${parent} onChange=${setParent} levels=${[PARENT_LEVEL[level]]} loc=${loc} />
          </label>`}
        <label>${loc.t('adm.areas.code')}
          <input name="code" required maxlength="64" pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}" autocapitalize="none" spellcheck="false" />
          <small class="hint">${loc.t('adm.areas.codeHint')}</small>
        </label>
        <label>${loc.t('adm.areas.name')}
          <input name="name" required maxlength="200" placeholder=${loc.t('adm.areas.namePh')} />
        </label>
        <${Refusal} error=${create.error} loc=${loc} />
        ${done && html`<p class="notice" role="status">${loc.t('adm.areas.created', { name: done })}</p>`}
        <div class="actions">
          <button type="submit" class="primary" disabled=${create.busy}>${create.busy ? loc.t('adm.busy') : loc.t('adm.areas.create')}</button>
          <button type="button" class="plain" onClick=${() => setAdding(false)}>${loc.t('adm.close')}</button>
        </div>
      </form>`;
  return html`
    <div class="adm-cols">
      <div class="adm-side">
        ${adding ? form : html`<button type="button" class="primary add" data-open="area" onClick=${() => setAdding(true)}>+ ${loc.t('adm.areas.new')}</button>`}
      </div>
      <section class="card adm-main">
        <h2>${loc.t('adm.areas.tree')}</h2>
        ${areas.length === 0 && html`<p class="muted">${loc.t('adm.areas.empty')}</p>`}
        <ul class="adm-tree">
          ${treeOrder(areas).map(({ area, depth }) => html`
            <li key=${area.code} class=${`depth-${Math.min(depth, 3)}`} data-area=${area.code}>
              <span class="lvl">${loc.t(`adm.level.${area.level}`)}</span>
              <strong>${area.name}</strong> <code>${area.code}</code>
              <button type="button" class="plain" data-open="shared" aria-expanded=${settings === area.code}
                onClick=${() => setSettings(settings === area.code ? null : area.code)}>${loc.t('adm.shared.open')}</button>
              ${settings === area.code && html`
                <${SharedAttributes} session=${session} loc=${loc} path=${`/areas/${encodeURIComponent(area.code)}`} kind="area" self=${area.code}
                  areas=${areas} onUnauthorized=${onUnauthorized} />`}
            </li>`)}
        </ul>
      </section>
    </div>`;
}
