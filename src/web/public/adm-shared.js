// Cài đặt gửi xuống thiết bị (shared attributes): the values a device gets
// (its own, else inherited from its village, commune, province; fw_… from an
// assigned firmware update), for one device or one area. Staff who may
// change the device or area set a key (the value is read as JSON when it is
// JSON: 60, true, {"a":1}; as text otherwise) or delete one of its own keys.
import { useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { ErrorNote, Loading, act, html, useApiData } from './ui.js';
import { Refusal, useAction } from './adm-common.js';

addStrings({
  vi: {
    'adm.shared.title': 'Cài đặt gửi xuống thiết bị',
    'adm.shared.hintDevice': 'Thiết bị nhận ngay khi giá trị đổi (kiểu ThingsBoard: thuộc tính dùng chung). Giá trị riêng của thiết bị thắng giá trị của khu vực.',
    'adm.shared.hintArea': 'Mọi thiết bị thuộc khu vực này và các khu vực con nhận các giá trị này, trừ khi khu vực gần hơn hoặc thiết bị đặt giá trị riêng.',
    'adm.shared.none': 'Chưa có cài đặt nào.',
    'adm.shared.own': 'riêng',
    'adm.shared.from': 'từ {area}',
    'adm.shared.firmware': 'bản cập nhật phần mềm',
    'adm.shared.key': 'Tên',
    'adm.shared.value': 'Giá trị',
    'adm.shared.valueHint': 'Số, true/false, chữ, hoặc JSON như {"min": 20}.',
    'adm.shared.set': 'Lưu',
    'adm.shared.remove': 'Xoá',
    'adm.shared.open': 'Cài đặt gửi xuống',
  },
  en: {
    'adm.shared.title': 'Settings sent to devices',
    'adm.shared.hintDevice': 'The device gets a value as soon as it changes (ThingsBoard shared attributes). A value set on the device wins over its area\'s.',
    'adm.shared.hintArea': 'Every device in this area and the areas below it gets these values, unless a nearer area or the device sets its own.',
    'adm.shared.none': 'No settings yet.',
    'adm.shared.own': 'own',
    'adm.shared.from': 'from {area}',
    'adm.shared.firmware': 'firmware update',
    'adm.shared.key': 'Name',
    'adm.shared.value': 'Value',
    'adm.shared.valueHint': 'A number, true/false, text, or JSON such as {"min": 20}.',
    'adm.shared.set': 'Save',
    'adm.shared.remove': 'Delete',
    'adm.shared.open': 'Device settings',
  },
});

/** What the input means: JSON when it parses (numbers, booleans, objects), else the text itself. */
function parseValue(text) {
  const t = text.trim();
  try { return JSON.parse(t); } catch { return text; }
}

function sourceLabel(src, loc, areaName) {
  if (src === 'device' || src === 'own') return loc.t('adm.shared.own');
  if (src.startsWith('area:')) return loc.t('adm.shared.from', { area: areaName(src.slice(5)) });
  if (src === 'firmware') return loc.t('adm.shared.firmware');
  return src;
}

/** `path`: `/devices/{id}` or `/areas/{code}`; `kind`: 'device' | 'area'; `self`: the area's code for an area. */
export function SharedAttributes({ session, loc, path, kind, self, areas, onUnauthorized }) {
  const url = `${path}/attributes/shared`;
  const { data, error, reload } = useApiData(session, [url], onUnauthorized, [url]);
  const [view, setView] = useState(null);
  const action = useAction(onUnauthorized);
  const shown = view ?? data?.[0];
  const areaName = (code) => areas?.find((a) => a.code === code)?.name ?? code;
  const send = async (body) => {
    const r = await action.run(() => act(session, url, { method: 'PUT', body }));
    if (r) setView(r);
    return r;
  };
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const key = String(f.get('key')).trim();
    if (await send({ [key]: parseValue(String(f.get('value'))) })) form.reset();
  };
  const keys = shown ? Object.keys(shown.shared).sort() : [];
  return html`
    <div class="adm-shared" data-shared=${kind}>
      <h3>${loc.t('adm.shared.title')}</h3>
      <p class="muted small">${loc.t(kind === 'device' ? 'adm.shared.hintDevice' : 'adm.shared.hintArea')}</p>
      <${ErrorNote} error=${error} loc=${loc} onRetry=${reload} />
      ${!shown ? !error && html`<${Loading} loc=${loc} />` : html`
        ${keys.length === 0 && html`<p class="muted small">${loc.t('adm.shared.none')}</p>`}
        <table class="adm-kv">
          <tbody>${keys.map((k) => {
            const src = kind === 'area' && shown.sources[k] === `area:${self}` ? 'own' : shown.sources[k];
            const own = Object.hasOwn(shown.own, k);
            return html`
              <tr key=${k} data-key=${k}>
                <th><code>${k}</code></th>
                <td><code data-value>${JSON.stringify(shown.shared[k])}</code></td>
                <td class="muted small" data-source>${sourceLabel(src, loc, areaName)}</td>
                <td>${own && html`<button type="button" class="plain danger-text" disabled=${action.busy}
                  onClick=${() => send({ [k]: null })}>${loc.t('adm.shared.remove')}</button>`}</td>
              </tr>`;
          })}</tbody>
        </table>`}
      <form class="adm-form inline" data-form="shared" onSubmit=${submit}>
        <div class="pair">
          <label>${loc.t('adm.shared.key')}
            <input name="key" required maxlength="64" pattern="[A-Za-z][A-Za-z0-9_]{0,63}" autocapitalize="none" spellcheck="false" autocomplete="off" />
          </label>
          <label>${loc.t('adm.shared.value')}
            <input name="value" required maxlength="4096" autocomplete="off" spellcheck="false" />
          </label>
        </div>
        <small class="hint">${loc.t('adm.shared.valueHint')}</small>
        <${Refusal} error=${action.error} loc=${loc} />
        <div class="actions"><button type="submit" class="primary" disabled=${action.busy}>${loc.t('adm.shared.set')}</button></div>
      </form>
    </div>`;
}
