// Khoá đăng ký thiết bị: provisioning keys. A key and secret put into a
// batch's firmware let each device register itself in one area (ThingsBoard
// device provisioning, firmware-protocols/provisioning.md). The secret is
// shown once, when the key is made; the list shows the area, kind, how many
// devices it registered and until when. Revoking stops it at once.
import { useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { html } from './ui.js';
import { AreaSelect, CreateActions, OnceSecret, Refusal, RevocableList, RevokeStep, actorName, areaLabel, endOfDay, todayIn, useIssue } from './adm-common.js';

addStrings({
  vi: {
    'adm.prov.list': 'Khoá đăng ký đã cấp',
    'adm.prov.new': 'Cấp khoá đăng ký mới',
    'adm.prov.intro': 'Nạp khoá và mật khẩu này vào firmware của một lô thiết bị (chuẩn ThingsBoard): mỗi thiết bị tự đăng ký vào khu vực đã chọn khi khởi động lần đầu.',
    'adm.prov.label': 'Tên lô (dùng cho việc gì)',
    'adm.prov.labelPh': 'Ví dụ: 40 cảm biến đất, lô tháng 3',
    'adm.prov.area': 'Thiết bị được đăng ký vào khu vực',
    'adm.prov.kind': 'Loại thiết bị',
    'adm.prov.model': 'Kiểu máy (không bắt buộc)',
    'adm.prov.max': 'Số thiết bị tối đa',
    'adm.prov.maxHint': 'Để trống nếu không giới hạn (không nên: một khoá bị lộ sẽ đăng ký được bao nhiêu thiết bị cũng được).',
    'adm.prov.expires': 'Hết hạn sau ngày',
    'adm.prov.expiresHint': 'Để trống: hết hạn sau 30 ngày.',
    'adm.prov.create': 'Cấp khoá',
    'adm.prov.shownOnce': 'Khoá đăng ký «{name}»',
    'adm.prov.key': 'provisionDeviceKey (khoá)',
    'adm.prov.secret': 'provisionDeviceSecret (mật khẩu)',
    'adm.prov.howto': 'Thiết bị kết nối MQTT với tên đăng nhập «provision», gửi yêu cầu tới /provision/request và nhận mã truy cập của mình.',
    'adm.prov.used': 'Đã đăng ký {n} thiết bị',
    'adm.prov.usedOf': 'Đã đăng ký {n}/{max} thiết bị',
    'adm.prov.made': 'Cấp {t} bởi {by}',
    'adm.prov.expiresAt': 'Hết hạn {t}',
    'adm.prov.never': 'Không hết hạn',
    'adm.prov.revoked': 'Đã thu hồi {t}',
    'adm.prov.expired': 'Đã hết hạn',
    'adm.prov.full': 'Đã dùng hết',
    'adm.prov.revoke': 'Thu hồi',
    'adm.prov.confirmRevoke': 'Thu hồi khoá «{name}»? Thiết bị chưa đăng ký sẽ bị từ chối ngay; thiết bị đã đăng ký vẫn hoạt động. Không thể hoàn tác.',
    'adm.prov.none': 'Chưa cấp khoá đăng ký nào.',
  },
  en: {
    'adm.prov.list': 'Provisioning keys issued',
    'adm.prov.new': 'New provisioning key',
    'adm.prov.intro': 'Put this key and secret into the firmware of a batch of devices (ThingsBoard standard): each device registers itself in the chosen area at first start.',
    'adm.prov.label': 'Batch name (what it is for)',
    'adm.prov.labelPh': 'E.g. 40 soil sensors, March batch',
    'adm.prov.area': 'Devices are registered in',
    'adm.prov.kind': 'Device kind',
    'adm.prov.model': 'Model (optional)',
    'adm.prov.max': 'Most devices',
    'adm.prov.maxHint': 'Leave empty for no limit (not advised: a leaked key would register any number of devices).',
    'adm.prov.expires': 'Expires after',
    'adm.prov.expiresHint': 'Empty: expires in 30 days.',
    'adm.prov.create': 'Issue key',
    'adm.prov.shownOnce': 'Provisioning key “{name}”',
    'adm.prov.key': 'provisionDeviceKey',
    'adm.prov.secret': 'provisionDeviceSecret',
    'adm.prov.howto': 'The device connects over MQTT with the username “provision”, sends its request to /provision/request and gets its own access token.',
    'adm.prov.used': '{n} devices registered',
    'adm.prov.usedOf': '{n} of {max} devices registered',
    'adm.prov.made': 'Issued {t} by {by}',
    'adm.prov.expiresAt': 'Expires {t}',
    'adm.prov.never': 'No expiry',
    'adm.prov.revoked': 'Revoked {t}',
    'adm.prov.expired': 'Expired',
    'adm.prov.full': 'Used up',
    'adm.prov.revoke': 'Revoke',
    'adm.prov.confirmRevoke': 'Revoke the key “{name}”? Devices not yet registered are refused at once; registered ones keep working. This cannot be undone.',
    'adm.prov.none': 'No provisioning keys yet.',
  },
});

const KINDS = ['sensor', 'speaker', 'gateway'];

/** What a key is called in the list: its label, else its area. */
const keyName = (k, areas, loc) => k.label || areaLabel(areas, k.area, loc);

export default function Provisioning(props) {
  return html`<${RevocableList} ...${props} path="/provisioning-keys" open="provisioning" New=${NewKey} Item=${KeyItem}
    words=${{ new: 'adm.prov.new', list: 'adm.prov.list', none: 'adm.prov.none' }} />`;
}

function NewKey({ session, loc, areas, onUnauthorized, onCreated, onClose }) {
  const [area, setArea] = useState('');
  const { create, made, issue, stored } = useIssue({ session, path: '/provisioning-keys', onUnauthorized, onCreated, onClose });
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const day = String(f.get('expires') ?? '');
    const max = String(f.get('maxDevices') ?? '').trim();
    const text = (k) => String(f.get(k) ?? '').trim() || undefined;
    const body = {
      area, kind: String(f.get('kind')), label: text('label'), model: text('model'),
      ...(max ? { maxDevices: Number(max) } : {}),
      ...(day ? { expiresAt: endOfDay(loc.tz, day) } : {}),
    };
    await issue(form, body, () => setArea(''));
  };
  if (made) {
    return html`
      <div class="card">
        <${OnceSecret} title=${loc.t('adm.prov.shownOnce', { name: keyName(made, areas, loc) })} loc=${loc} onDone=${stored}
          items=${[
            { key: 'key', label: loc.t('adm.prov.key'), value: made.provisionDeviceKey },
            { key: 'secret', label: loc.t('adm.prov.secret'), value: made.provisionDeviceSecret },
          ]}>
          <p class="muted small">${loc.t('adm.prov.howto')}</p>
        </${OnceSecret}>
      </div>`;
  }
  return html`
    <form class="card adm-form" data-form="provisioning" onSubmit=${submit}>
      <h2>${loc.t('adm.prov.new')}</h2>
      <p class="muted small">${loc.t('adm.prov.intro')}</p>
      <label>${loc.t('adm.prov.label')}
        <input name="label" maxlength="128" placeholder=${loc.t('adm.prov.labelPh')} />
      </label>
      <label>${loc.t('adm.prov.area')}
        <${AreaSelect} areas=${areas} name="area" value=${area} onChange=${setArea} loc=${loc} />
      </label>
      <label>${loc.t('adm.prov.kind')}
        <select name="kind">${KINDS.map((k) => html`<option value=${k}>${loc.t(`adm.dev.kind.${k}`)}</option>`)}</select>
      </label>
      <label>${loc.t('adm.prov.model')}
        <input name="model" maxlength="128" />
      </label>
      <label>${loc.t('adm.prov.max')}
        <input name="maxDevices" type="number" min="1" max="100000" inputmode="numeric" />
        <small class="hint">${loc.t('adm.prov.maxHint')}</small>
      </label>
      <label>${loc.t('adm.prov.expires')}
        <input name="expires" type="date" min=${todayIn(loc.tz)} />
        <small class="hint">${loc.t('adm.prov.expiresHint')}</small>
      </label>
      <${Refusal} error=${create.error} loc=${loc} />
      <${CreateActions} busy=${create.busy} label=${loc.t('adm.prov.create')} loc=${loc} onClose=${onClose} />
    </form>`;
}

function KeyItem({ row: k, session, loc, areas, onUnauthorized, onChanged }) {
  const expired = !k.revoked && k.expiresAt && Date.parse(k.expiresAt) <= Date.now();
  const full = !k.revoked && k.maxDevices !== null && k.used >= k.maxDevices;
  const when = (iso) => loc.when(Date.parse(iso));
  const name = keyName(k, areas, loc);
  return html`
    <li class=${k.revoked || expired ? 'adm-item gone' : 'adm-item'} data-provisioning-key=${k.id}>
      <div class="line">
        <strong class="name">${name}</strong>
        <span class="badge">${loc.t(`adm.dev.kind.${k.kind}`)}</span>
        ${k.revoked && html`<span class="badge bad">${loc.t('adm.prov.revoked', { t: when(k.revokedAt) })}</span>`}
        ${expired && html`<span class="badge bad">${loc.t('adm.prov.expired')}</span>`}
        ${full && html`<span class="badge bad">${loc.t('adm.prov.full')}</span>`}
      </div>
      <p class="muted small">${areaLabel(areas, k.area, loc)} · <code>${k.provisionDeviceKey}</code>${k.model ? ` · ${k.model}` : ''}</p>
      <p class="muted small" data-used=${k.used}>${[
        k.maxDevices === null ? loc.t('adm.prov.used', { n: k.used }) : loc.t('adm.prov.usedOf', { n: k.used, max: k.maxDevices }),
        k.expiresAt ? loc.t('adm.prov.expiresAt', { t: when(k.expiresAt) }) : loc.t('adm.prov.never'),
        loc.t('adm.prov.made', { t: when(k.createdAt), by: actorName(k.createdBy) }),
      ].join(' · ')}</p>
      <${RevokeStep} revoked=${k.revoked} path=${`/provisioning-keys/${encodeURIComponent(k.id)}`} label=${loc.t('adm.prov.revoke')}
        text=${loc.t('adm.prov.confirmRevoke', { name })} session=${session} loc=${loc} onUnauthorized=${onUnauthorized} onChanged=${onChanged} />
    </li>`;
}
