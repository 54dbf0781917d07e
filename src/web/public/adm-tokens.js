// Mã API: tokens for machines (the provincial IOC, a SCADA). The token is
// shown once, when it is made; the list carries its name, role, areas and
// dates only. Revoking stops it at once (its live-feed connection within 30 s).
import { useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { html } from './ui.js';
import { AreaPicker, CreateActions, OnceSecret, Refusal, RevocableList, RevokeStep, actorName, areaList, endOfDay, todayIn, useIssue } from './adm-common.js';
import { ROLES } from './adm-users.js';

addStrings({
  vi: {
    'adm.tokens.list': 'Mã API đã cấp',
    'adm.tokens.new': 'Cấp mã API mới',
    'adm.tokens.intro': 'Cho máy móc kết nối: trung tâm IOC của tỉnh, hệ thống SCADA. Người dùng thì tạo tài khoản.',
    'adm.tokens.name': 'Tên (dùng cho việc gì)',
    'adm.tokens.namePh': 'Ví dụ: IOC tỉnh Quảng Trị',
    'adm.tokens.role': 'Vai trò',
    'adm.tokens.expires': 'Hết hạn sau ngày',
    'adm.tokens.expiresHint': 'Để trống nếu không hết hạn.',
    'adm.tokens.create': 'Cấp mã',
    'adm.tokens.shownOnce': 'Mã API «{name}»',
    'adm.tokens.token': 'Mã API (gửi trong tiêu đề Authorization: Bearer …)',
    'adm.tokens.areas': 'Khu vực: {a}',
    'adm.tokens.made': 'Cấp {t} bởi {by}',
    'adm.tokens.expiresAt': 'Hết hạn {t}',
    'adm.tokens.never': 'Không hết hạn',
    'adm.tokens.lastUsed': 'Dùng lần cuối {t}',
    'adm.tokens.unused': 'Chưa dùng',
    'adm.tokens.revoked': 'Đã thu hồi {t}',
    'adm.tokens.expired': 'Đã hết hạn',
    'adm.tokens.revoke': 'Thu hồi',
    'adm.tokens.confirmRevoke': 'Thu hồi mã API «{name}»? Máy đang dùng mã này sẽ bị từ chối ngay lập tức; không thể hoàn tác.',
    'adm.tokens.none': 'Chưa cấp mã API nào.',
    'adm.tokens.noAreas': 'Hãy chọn ít nhất một khu vực.',
  },
  en: {
    'adm.tokens.list': 'API tokens issued',
    'adm.tokens.new': 'New API token',
    'adm.tokens.intro': 'For machines: the provincial IOC, a SCADA. People get accounts.',
    'adm.tokens.name': 'Name (what it is for)',
    'adm.tokens.namePh': 'E.g. Quảng Trị provincial IOC',
    'adm.tokens.role': 'Role',
    'adm.tokens.expires': 'Expires after',
    'adm.tokens.expiresHint': 'Leave empty for no expiry.',
    'adm.tokens.create': 'Create token',
    'adm.tokens.shownOnce': 'API token “{name}”',
    'adm.tokens.token': 'API token (send as Authorization: Bearer …)',
    'adm.tokens.areas': 'Areas: {a}',
    'adm.tokens.made': 'Made {t} by {by}',
    'adm.tokens.expiresAt': 'Expires {t}',
    'adm.tokens.never': 'No expiry',
    'adm.tokens.lastUsed': 'Last used {t}',
    'adm.tokens.unused': 'Never used',
    'adm.tokens.revoked': 'Revoked {t}',
    'adm.tokens.expired': 'Expired',
    'adm.tokens.revoke': 'Revoke',
    'adm.tokens.confirmRevoke': 'Revoke the API token “{name}”? Machines using it are refused at once; this cannot be undone.',
    'adm.tokens.none': 'No API tokens yet.',
    'adm.tokens.noAreas': 'Pick at least one area.',
  },
});

export default function Tokens(props) {
  return html`<${RevocableList} ...${props} path="/tokens" open="token" New=${NewToken} Item=${TokenItem}
    words=${{ new: 'adm.tokens.new', list: 'adm.tokens.list', none: 'adm.tokens.none' }} />`;
}

function NewToken({ session, loc, areas, onUnauthorized, onCreated, onClose }) {
  const [role, setRole] = useState('service');
  const [picked, setPicked] = useState([]);
  const { create, made, issue, stored } = useIssue({ session, path: '/tokens', onUnauthorized, onCreated, onClose });
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    if (role !== 'admin' && picked.length === 0) { create.setError({ code: 'LOCAL', message: '' }); return; }
    const day = String(f.get('expires') ?? '');
    const body = {
      name: String(f.get('name')).trim(), role,
      ...(role === 'admin' ? {} : { areas: picked }),
      ...(day ? { expiresAt: endOfDay(loc.tz, day) } : {}),
    };
    await issue(form, body, () => setPicked([]));
  };
  if (made) {
    return html`
      <div class="card">
        <${OnceSecret} title=${loc.t('adm.tokens.shownOnce', { name: made.name })} loc=${loc} onDone=${stored}
          items=${[{ key: 'token', label: loc.t('adm.tokens.token'), value: made.token }]} />
      </div>`;
  }
  const localError = create.error?.code === 'LOCAL';
  return html`
    <form class="card adm-form" data-form="token" onSubmit=${submit}>
      <h2>${loc.t('adm.tokens.new')}</h2>
      <p class="muted small">${loc.t('adm.tokens.intro')}</p>
      <label>${loc.t('adm.tokens.name')}
        <input name="name" required maxlength="100" placeholder=${loc.t('adm.tokens.namePh')} />
      </label>
      <label>${loc.t('adm.tokens.role')}
        <select name="role" value=${role} onChange=${(e) => setRole(e.currentTarget.value)}>
          ${ROLES.map((r) => html`<option value=${r}>${loc.t(`role.${r}`)}</option>`)}
        </select>
        <small class="hint">${loc.t(`adm.users.roleHint.${role}`)}</small>
      </label>
      ${role !== 'admin' && html`<${AreaPicker} areas=${areas} value=${picked} onChange=${setPicked} allowAll=${true} loc=${loc} name="token-areas" />`}
      <label>${loc.t('adm.tokens.expires')}
        <input name="expires" type="date" min=${todayIn(loc.tz)} />
        <small class="hint">${loc.t('adm.tokens.expiresHint')}</small>
      </label>
      ${localError ? html`<p class="error" role="alert">${loc.t('adm.tokens.noAreas')}</p>` : html`<${Refusal} error=${create.error} loc=${loc} />`}
      <${CreateActions} busy=${create.busy} label=${loc.t('adm.tokens.create')} loc=${loc} onClose=${onClose} />
    </form>`;
}

function TokenItem({ row: t, session, loc, areas, onUnauthorized, onChanged }) {
  const expired = !t.revoked && t.expiresAt && Date.parse(t.expiresAt) <= Date.now();
  const when = (iso) => loc.when(Date.parse(iso));
  return html`
    <li class=${t.revoked || expired ? 'adm-item gone' : 'adm-item'} data-token=${t.id} data-token-name=${t.name}>
      <div class="line">
        <strong class="name">${t.name}</strong>
        <span class=${`badge role-${t.role}`}>${loc.t(`role.${t.role}`)}</span>
        ${t.revoked && html`<span class="badge bad">${loc.t('adm.tokens.revoked', { t: when(t.revokedAt) })}</span>`}
        ${expired && html`<span class="badge bad">${loc.t('adm.tokens.expired')}</span>`}
      </div>
      <p class="muted small">${loc.t('adm.tokens.areas', { a: areaList(areas, t.areas, loc) })}</p>
      <p class="muted small">${[
        loc.t('adm.tokens.made', { t: when(t.createdAt), by: actorName(t.createdBy) }),
        t.expiresAt ? loc.t('adm.tokens.expiresAt', { t: when(t.expiresAt) }) : loc.t('adm.tokens.never'),
        t.lastUsedAt ? loc.t('adm.tokens.lastUsed', { t: when(t.lastUsedAt) }) : loc.t('adm.tokens.unused'),
      ].join(' · ')}</p>
      <${RevokeStep} revoked=${t.revoked} path=${`/tokens/${encodeURIComponent(t.id)}`} label=${loc.t('adm.tokens.revoke')}
        text=${loc.t('adm.tokens.confirmRevoke', { name: t.name })} session=${session} loc=${loc} onUnauthorized=${onUnauthorized} onChanged=${onChanged} />
    </li>`;
}
