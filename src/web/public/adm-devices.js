// Thiết bị: every device, with filters; register one (its MQTT secret and
// access token are shown once), change its name, area or location, disable
// and re-enable it, make a new secret or access token (shown once), delete
// it after a confirmation that names it.
import { useMemo, useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { ErrorNote, Loading, act, html, useApiData } from './ui.js';
import { AreaSelect, Confirm, CreateActions, OnceSecret, Refusal, SaveActions, areaLabel, useAction, wideScreen } from './adm-common.js';
import { SharedAttributes } from './adm-shared.js';

addStrings({
  vi: {
    'adm.dev.list': 'Thiết bị',
    'adm.dev.count': '{n} / {total} thiết bị',
    'adm.dev.search': 'Tìm theo tên hoặc mã',
    'adm.dev.area': 'Khu vực',
    'adm.dev.allAreas': 'Mọi khu vực',
    'adm.dev.kind': 'Loại',
    'adm.dev.allKinds': 'Tất cả',
    'adm.dev.kind.sensor': 'Cảm biến',
    'adm.dev.kind.speaker': 'Loa',
    'adm.dev.kind.gateway': 'Gateway',
    'adm.dev.state': 'Trạng thái',
    'adm.dev.allStates': 'Tất cả',
    'adm.dev.online': 'Trực tuyến',
    'adm.dev.offline': 'Mất kết nối',
    'adm.dev.disabled': 'Đã tắt',
    'adm.dev.never': 'Chưa từng kết nối',
    'adm.dev.seen': 'Lần cuối {t}',
    'adm.dev.more': 'Hiện thêm',
    'adm.dev.none': 'Không có thiết bị nào khớp.',
    'adm.dev.new': 'Thêm thiết bị',
    'adm.dev.id': 'Mã thiết bị (tên đăng nhập MQTT)',
    'adm.dev.idHint': 'Chữ thường không dấu, số, _ và - (2 đến 64 ký tự); không đổi được về sau.',
    'adm.dev.name': 'Tên hiển thị',
    'adm.dev.namePh': 'Ví dụ: Ruộng ông Ba',
    'adm.dev.lat': 'Vĩ độ',
    'adm.dev.lon': 'Kinh độ',
    'adm.dev.locHint': 'Ví dụ 16,75 và 107,19; để trống cả hai nếu chưa biết.',
    'adm.dev.locBoth': 'Hãy nhập cả vĩ độ và kinh độ, hoặc để trống cả hai.',
    'adm.dev.model': 'Model',
    'adm.dev.create': 'Thêm thiết bị',
    'adm.dev.created': 'Thông tin đăng nhập của «{name}» ({id})',
    'adm.dev.secret': 'Mật khẩu MQTT (tên đăng nhập là mã thiết bị)',
    'adm.dev.accessToken': 'Access token (kiểu ThingsBoard: dùng làm tên đăng nhập MQTT)',
    'adm.dev.mqttHint': 'Nạp vào thiết bị: máy chủ MQTT, tên đăng nhập {id}, mật khẩu ở trên.',
    'adm.dev.disable': 'Tắt',
    'adm.dev.enable': 'Bật lại',
    'adm.dev.rotateSecret': 'Đổi mật khẩu MQTT',
    'adm.dev.rotateToken': 'Đổi access token',
    'adm.dev.confirmDisable': 'Tắt thiết bị «{name}» ({id})? Thiết bị bị ngắt ngay và bị từ chối mỗi lần kết nối cho tới khi bật lại.',
    'adm.dev.confirmSecret': 'Tạo mật khẩu MQTT mới cho «{name}» ({id})? Mật khẩu cũ hết hiệu lực ngay; thiết bị cần được nạp mật khẩu mới.',
    'adm.dev.confirmToken': 'Tạo access token mới cho «{name}» ({id})? Token cũ hết hiệu lực ngay.',
    'adm.dev.confirmDelete': 'Xoá hẳn thiết bị «{name}» ({id})? Thiết bị bị ngắt và mất thông tin đăng nhập; số liệu đã lưu vẫn giữ tới hết hạn lưu trữ.',
    'adm.dev.newSecret': 'Mật khẩu MQTT mới của «{name}» ({id})',
    'adm.dev.newToken': 'Access token mới của «{name}» ({id})',
    'adm.dev.tools': 'Thao tác',
  },
  en: {
    'adm.dev.list': 'Devices',
    'adm.dev.count': '{n} of {total} devices',
    'adm.dev.search': 'Search by name or id',
    'adm.dev.area': 'Area',
    'adm.dev.allAreas': 'Every area',
    'adm.dev.kind': 'Kind',
    'adm.dev.allKinds': 'All',
    'adm.dev.kind.sensor': 'Sensor',
    'adm.dev.kind.speaker': 'Loudspeaker',
    'adm.dev.kind.gateway': 'Gateway',
    'adm.dev.state': 'State',
    'adm.dev.allStates': 'All',
    'adm.dev.online': 'Online',
    'adm.dev.offline': 'Offline',
    'adm.dev.disabled': 'Disabled',
    'adm.dev.never': 'Never connected',
    'adm.dev.seen': 'Last seen {t}',
    'adm.dev.more': 'Show more',
    'adm.dev.none': 'No device matches.',
    'adm.dev.new': 'Add a device',
    'adm.dev.id': 'Device id (MQTT username)',
    'adm.dev.idHint': 'Lower-case letters, digits, _ and - (2 to 64); cannot change later.',
    'adm.dev.name': 'Display name',
    'adm.dev.namePh': 'E.g. Mr Ba\'s field',
    'adm.dev.lat': 'Latitude',
    'adm.dev.lon': 'Longitude',
    'adm.dev.locHint': 'E.g. 16.75 and 107.19; leave both empty when unknown.',
    'adm.dev.locBoth': 'Give both latitude and longitude, or neither.',
    'adm.dev.model': 'Model',
    'adm.dev.create': 'Add device',
    'adm.dev.created': 'Credentials of “{name}” ({id})',
    'adm.dev.secret': 'MQTT password (the username is the device id)',
    'adm.dev.accessToken': 'Access token (ThingsBoard style: used as the MQTT username)',
    'adm.dev.mqttHint': 'Load into the device: the MQTT server, username {id}, the password above.',
    'adm.dev.disable': 'Disable',
    'adm.dev.enable': 'Enable',
    'adm.dev.rotateSecret': 'New MQTT password',
    'adm.dev.rotateToken': 'New access token',
    'adm.dev.confirmDisable': 'Disable “{name}” ({id})? It is disconnected at once and refused at every connection until enabled again.',
    'adm.dev.confirmSecret': 'Make a new MQTT password for “{name}” ({id})? The old one stops working at once; the device needs the new one.',
    'adm.dev.confirmToken': 'Make a new access token for “{name}” ({id})? The old one stops working at once.',
    'adm.dev.confirmDelete': 'Delete the device “{name}” ({id}) for good? It is disconnected and loses its credentials; stored readings stay until retention ends.',
    'adm.dev.newSecret': 'New MQTT password of “{name}” ({id})',
    'adm.dev.newToken': 'New access token of “{name}” ({id})',
    'adm.dev.tools': 'Actions',
  },
});

const KINDS = ['sensor', 'speaker', 'gateway'];
const PAGE = 60;

export default function Devices({ session, loc, onUnauthorized, areas }) {
  const [version, setVersion] = useState(0);
  const { data, error, reload } = useApiData(session, ['/devices'], onUnauthorized, [version]);
  const [filter, setFilter] = useState({ q: '', area: '', kind: '', state: '' });
  const [shown, setShown] = useState(PAGE);
  const [made, setMade] = useState(null);
  const [adding, setAdding] = useState(wideScreen);
  const changed = () => setVersion((n) => n + 1);
  const devices = data?.[0];

  // An area filter covers its subtree, as everywhere in Keng.
  const inArea = useMemo(() => {
    if (!filter.area) return null;
    const set = new Set([filter.area]);
    for (let grew = true; grew;) {
      grew = false;
      for (const a of areas) if (a.parent && set.has(a.parent) && !set.has(a.code)) { set.add(a.code); grew = true; }
    }
    return set;
  }, [filter.area, areas]);
  const list = useMemo(() => {
    if (!devices) return [];
    const q = filter.q.trim().toLocaleLowerCase('vi');
    return devices.filter((d) => (!q || d.id.includes(q) || d.name.toLocaleLowerCase('vi').includes(q))
      && (!inArea || inArea.has(d.area))
      && (!filter.kind || d.kind === filter.kind)
      && (!filter.state || stateOf(d) === filter.state))
      .sort((a, b) => a.name.localeCompare(b.name, 'vi'));
  }, [devices, filter, inArea]);
  const set = (k) => (v) => { setFilter((f) => ({ ...f, [k]: v })); setShown(PAGE); };

  const side = made
    ? html`<div class="card">
        <${OnceSecret} title=${loc.t('adm.dev.created', { name: made.name, id: made.id })} loc=${loc}
          onDone=${() => { setMade(null); if (!wideScreen()) setAdding(false); }} items=${[
            { key: 'secret', label: loc.t('adm.dev.secret'), value: made.secret },
            { key: 'accessToken', label: loc.t('adm.dev.accessToken'), value: made.accessToken },
          ]}><p class="small">${loc.t('adm.dev.mqttHint', { id: made.id })}</p></${OnceSecret}></div>`
    : adding
      ? html`<${NewDevice} session=${session} loc=${loc} areas=${areas} onUnauthorized=${onUnauthorized}
          onCreated=${(d) => { setMade(d); changed(); }} onClose=${() => setAdding(false)} />`
      : html`<button type="button" class="primary add" data-open="device" onClick=${() => setAdding(true)}>+ ${loc.t('adm.dev.new')}</button>`;

  return html`
    <div class="adm-cols">
      <div class="adm-side">${side}</div>
      <section class="card adm-main">
        <h2>${loc.t('adm.dev.list')}</h2>
        <div class="adm-filters">
          <label class="span">${loc.t('adm.dev.search')}<input type="search" name="q" value=${filter.q} onInput=${(e) => set('q')(e.currentTarget.value)} /></label>
          <label class="span">${loc.t('adm.dev.area')}
            <${AreaSelect} areas=${areas} name="filter-area" value=${filter.area} onChange=${set('area')} required=${false} emptyLabel=${loc.t('adm.dev.allAreas')} loc=${loc} />
          </label>
          <label>${loc.t('adm.dev.kind')}
            <select name="filter-kind" value=${filter.kind} onChange=${(e) => set('kind')(e.currentTarget.value)}>
              <option value="">${loc.t('adm.dev.allKinds')}</option>
              ${KINDS.map((k) => html`<option value=${k}>${loc.t(`adm.dev.kind.${k}`)}</option>`)}
            </select>
          </label>
          <label>${loc.t('adm.dev.state')}
            <select name="filter-state" value=${filter.state} onChange=${(e) => set('state')(e.currentTarget.value)}>
              <option value="">${loc.t('adm.dev.allStates')}</option>
              ${['online', 'offline', 'disabled'].map((x) => html`<option value=${x}>${loc.t(`adm.dev.${x}`)}</option>`)}
            </select>
          </label>
        </div>
        <${ErrorNote} error=${error} loc=${loc} onRetry=${reload} />
        ${!devices ? !error && html`<${Loading} loc=${loc} />` : html`
          <p class="muted small" data-count>${loc.t('adm.dev.count', { n: loc.number(list.length, 0), total: loc.number(devices.length, 0) })}</p>
          ${list.length === 0 && html`<p class="muted">${loc.t('adm.dev.none')}</p>`}
          <ul class="adm-list">${list.slice(0, shown).map((d) => html`
            <${DeviceItem} key=${d.id} device=${d} session=${session} loc=${loc} areas=${areas} onUnauthorized=${onUnauthorized} onChanged=${changed} />`)}</ul>
          ${list.length > shown && html`<button type="button" class="secondary" onClick=${() => setShown((n) => n + PAGE)}>${loc.t('adm.dev.more')}</button>`}`}
      </section>
    </div>`;
}

function stateOf(d) {
  return !d.enabled ? 'disabled' : d.online ? 'online' : 'offline';
}

/** {lat, lon} from the two fields, null when both are empty, undefined when only one is given. */
function locationOf(f) {
  const lat = String(f.get('lat') ?? '').trim().replace(',', '.');
  const lon = String(f.get('lon') ?? '').trim().replace(',', '.');
  if (!lat && !lon) return null;
  if (!lat || !lon) return undefined;
  return { lat: Number(lat), lon: Number(lon) };
}

/**
 * Latitude and longitude: text fields, so a Vietnamese phone's decimal comma
 * is accepted. Uncontrolled (defaultValue): the edit form re-renders when the
 * area is picked, and a controlled value would undo what was typed.
 */
function LocationFields({ loc, value }) {
  const show = (v) => (v === undefined || v === null ? '' : String(v));
  return html`
    <div class="pair">
      <label>${loc.t('adm.dev.lat')}
        <input name="lat" inputmode="decimal" pattern="-?[0-9]{1,2}([.,][0-9]+)?" defaultValue=${show(value?.lat)} autocomplete="off" />
      </label>
      <label>${loc.t('adm.dev.lon')}
        <input name="lon" inputmode="decimal" pattern="-?[0-9]{1,3}([.,][0-9]+)?" defaultValue=${show(value?.lon)} autocomplete="off" />
      </label>
    </div>
    <small class="hint">${loc.t('adm.dev.locHint')}</small>`;
}

function NewDevice({ session, loc, areas, onUnauthorized, onCreated, onClose }) {
  const create = useAction(onUnauthorized);
  const [area, setArea] = useState('');
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const location = locationOf(f);
    if (location === undefined) { create.setError({ code: 'LOCAL_LOCATION', message: '' }); return; }
    const model = String(f.get('model') ?? '').trim();
    const body = {
      id: String(f.get('id')).trim(), kind: String(f.get('kind')), name: String(f.get('name')).trim(), area,
      ...(location ? { location } : {}), ...(model ? { model } : {}),
    };
    const r = await create.run(() => act(session, '/devices', { method: 'POST', body }));
    if (r) { form.reset(); setArea(''); onCreated(r); }
  };
  return html`
    <form class="card adm-form" data-form="device" onSubmit=${submit}>
      <h2>${loc.t('adm.dev.new')}</h2>
      <label>${loc.t('adm.dev.id')}
        <input name="id" required minlength="2" maxlength="64" pattern="[a-z0-9][a-z0-9_\\-]{1,63}" autocapitalize="none" spellcheck="false" autocomplete="off" />
        <small class="hint">${loc.t('adm.dev.idHint')}</small>
      </label>
      <label>${loc.t('adm.dev.kind')}
        <select name="kind">${KINDS.map((k) => html`<option value=${k}>${loc.t(`adm.dev.kind.${k}`)}</option>`)}</select>
      </label>
      <label>${loc.t('adm.dev.name')}
        <input name="name" required maxlength="200" placeholder=${loc.t('adm.dev.namePh')} />
      </label>
      <label>${loc.t('adm.dev.area')}
        <${AreaSelect} areas=${areas} name="area" value=${area} onChange=${setArea} loc=${loc} />
      </label>
      <${LocationFields} loc=${loc} />
      <label>${loc.t('adm.dev.model')} <small>(${loc.t('adm.optional')})</small>
        <input name="model" maxlength="200" autocomplete="off" />
      </label>
      ${create.error?.code === 'LOCAL_LOCATION' ? html`<p class="error" role="alert">${loc.t('adm.dev.locBoth')}</p>` : html`<${Refusal} error=${create.error} loc=${loc} />`}
      <${CreateActions} busy=${create.busy} label=${loc.t('adm.dev.create')} loc=${loc} onClose=${onClose} />
    </form>`;
}

function DeviceItem({ device: d, session, loc, areas, onUnauthorized, onChanged }) {
  // null | 'edit' | 'shared' | 'disable' | 'secret' | 'token' | 'delete'
  const [mode, setMode] = useState(null);
  const [area, setArea] = useState(d.area);
  const [fresh, setFresh] = useState(null);
  const [tools, setTools] = useState(false);
  const action = useAction(onUnauthorized);
  const path = `/devices/${encodeURIComponent(d.id)}`;
  const open = (m) => { action.setError(null); setArea(d.area); setMode(mode === m ? null : m); };
  const names = { name: d.name, id: d.id };

  const patch = async (body) => {
    const r = await action.run(() => act(session, path, { method: 'PATCH', body }));
    if (r) { setMode(null); onChanged(); }
  };
  const save = async (e) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const location = locationOf(f);
    if (location === undefined) { action.setError({ code: 'LOCAL_LOCATION', message: '' }); return; }
    const body = {};
    const name = String(f.get('name')).trim();
    if (name !== d.name) body.name = name;
    if (area !== d.area) body.area = area;
    if (JSON.stringify(location) !== JSON.stringify(d.location ?? null)) body.location = location;
    if (Object.keys(body).length === 0) { setMode(null); return; }
    await patch(body);
  };
  const rotate = async (kind) => {
    const r = await action.run(() => act(session, `${path}/${kind === 'secret' ? 'secret' : 'token'}`, { method: 'POST' }));
    if (r) { setMode(null); setFresh({ kind, value: kind === 'secret' ? r.secret : r.accessToken }); }
  };
  const remove = async () => {
    const ok = await action.run(() => act(session, path, { method: 'DELETE' }).then(() => true));
    if (ok) onChanged();
  };
  const state = stateOf(d);
  const seen = d.lastSeen ? loc.t('adm.dev.seen', { t: loc.when(Date.parse(d.lastSeen)) }) : loc.t('adm.dev.never');
  return html`
    <li class=${`adm-item dev-${state}`} data-adm-device=${d.id}>
      <div class="line">
        <strong class="name">${d.name}</strong>
        <span class="badge">${loc.t(`adm.dev.kind.${d.kind}`)}</span>
        <span class=${`badge state-${state}`} data-state=${state}>${loc.t(`adm.dev.${state}`)}</span>
      </div>
      <p class="muted small">
        <code>${d.id}</code> · <span data-area-name>${areaLabel(areas, d.area, loc)}</span>${d.model ? ` · ${d.model}` : ''}
        ${d.location && html` · <span data-location>${loc.number(d.location.lat, 5)}; ${loc.number(d.location.lon, 5)}</span>`} · ${seen}
      </p>
      ${fresh && html`
        <${OnceSecret} title=${loc.t(fresh.kind === 'secret' ? 'adm.dev.newSecret' : 'adm.dev.newToken', names)} loc=${loc} onDone=${() => setFresh(null)}
          items=${[{ key: fresh.kind === 'secret' ? 'secret' : 'accessToken', label: loc.t(fresh.kind === 'secret' ? 'adm.dev.secret' : 'adm.dev.accessToken'), value: fresh.value }]} />`}
      <button type="button" class="plain tools-toggle" aria-expanded=${tools} onClick=${() => setTools((x) => !x)}>${loc.t('adm.dev.tools')}</button>
      <div class="actions tools" hidden=${!tools}>
        <button type="button" class="plain" aria-expanded=${mode === 'edit'} onClick=${() => open('edit')}>${loc.t('adm.edit')}</button>
        <button type="button" class="plain" data-open="shared" aria-expanded=${mode === 'shared'} onClick=${() => open('shared')}>${loc.t('adm.shared.open')}</button>
        ${d.enabled
          ? html`<button type="button" class="plain" onClick=${() => open('disable')}>${loc.t('adm.dev.disable')}</button>`
          : html`<button type="button" class="plain" disabled=${action.busy} onClick=${() => patch({ enabled: true })}>${loc.t('adm.dev.enable')}</button>`}
        <button type="button" class="plain" onClick=${() => open('secret')}>${loc.t('adm.dev.rotateSecret')}</button>
        <button type="button" class="plain" onClick=${() => open('token')}>${loc.t('adm.dev.rotateToken')}</button>
        <button type="button" class="plain danger-text" onClick=${() => open('delete')}>${loc.t('adm.delete')}</button>
      </div>
      ${mode === null && action.error && html`<${Refusal} error=${action.error} loc=${loc} />`}
      ${mode === 'edit' && html`
        <form class="adm-form inline" onSubmit=${save}>
          <label>${loc.t('adm.dev.name')}<input name="name" required maxlength="200" defaultValue=${d.name} /></label>
          <label>${loc.t('adm.dev.area')}
            <${AreaSelect} areas=${areas} name="area" value=${area} onChange=${setArea} loc=${loc} />
          </label>
          <${LocationFields} loc=${loc} value=${d.location} />
          ${action.error?.code === 'LOCAL_LOCATION' ? html`<p class="error" role="alert">${loc.t('adm.dev.locBoth')}</p>` : html`<${Refusal} error=${action.error} loc=${loc} />`}
          <${SaveActions} busy=${action.busy} loc=${loc} onCancel=${() => setMode(null)} />
        </form>`}
      ${mode === 'shared' && html`
        <${SharedAttributes} session=${session} loc=${loc} path=${path} kind="device" areas=${areas} onUnauthorized=${onUnauthorized} />`}
      ${mode === 'disable' && html`
        <${Confirm} text=${loc.t('adm.dev.confirmDisable', names)} action=${loc.t('adm.dev.disable')} busy=${action.busy} error=${action.error} loc=${loc}
          onConfirm=${() => patch({ enabled: false })} onCancel=${() => setMode(null)} />`}
      ${mode === 'secret' && html`
        <${Confirm} text=${loc.t('adm.dev.confirmSecret', names)} action=${loc.t('adm.dev.rotateSecret')} busy=${action.busy} error=${action.error} loc=${loc}
          onConfirm=${() => rotate('secret')} onCancel=${() => setMode(null)} />`}
      ${mode === 'token' && html`
        <${Confirm} text=${loc.t('adm.dev.confirmToken', names)} action=${loc.t('adm.dev.rotateToken')} busy=${action.busy} error=${action.error} loc=${loc}
          onConfirm=${() => rotate('token')} onCancel=${() => setMode(null)} />`}
      ${mode === 'delete' && html`
        <${Confirm} text=${loc.t('adm.dev.confirmDelete', names)} action=${loc.t('adm.delete')} busy=${action.busy} error=${action.error} loc=${loc}
          onConfirm=${remove} onCancel=${() => setMode(null)} />`}
    </li>`;
}
