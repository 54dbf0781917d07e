// Tài khoản: people who log in. Create with a role and areas picked from the
// tree, change role and areas, set a new password to hand over, unlock
// after failed logins, disable, delete. (docs/roles.md: an operator may also
// create viewers within its areas through the API; this screen is the
// admins'.)
import { useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { ErrorNote, Loading, act, html, useApiData } from './ui.js';
import { AreaPicker, Confirm, CreateActions, Refusal, SaveActions, areaList, newPassword, useAction, wideScreen } from './adm-common.js';

addStrings({
  vi: {
    'adm.users.list': 'Tài khoản',
    'adm.users.new': 'Thêm tài khoản',
    'adm.users.username': 'Tên đăng nhập',
    'adm.users.usernameHint': 'Chữ thường không dấu, số, dấu . _ - (3 đến 64 ký tự).',
    'adm.users.password': 'Mật khẩu',
    'adm.users.passwordHint': 'Ít nhất 10 ký tự. Hãy đưa tận tay người dùng.',
    'adm.users.generate': 'Tạo mật khẩu',
    'adm.users.role': 'Vai trò',
    'adm.users.roleHint.admin': 'Toàn quyền, mọi khu vực.',
    'adm.users.roleHint.operator': 'Cán bộ xã: thiết bị, lịch phát, phát thanh trong khu vực của mình.',
    'adm.users.roleHint.viewer': 'Nông dân, người dân: xem cảm biến trong khu vực.',
    'adm.users.roleHint.service': 'Trung tâm IOC: xem toàn cảnh, cảm biến, nhật ký phát (chỉ đọc).',
    'adm.users.create': 'Tạo tài khoản',
    'adm.users.created': 'Đã tạo tài khoản {u}.',
    'adm.users.areas': 'Khu vực: {a}',
    'adm.users.disabled': 'Đã tạm khoá',
    'adm.users.locked': 'Bị khoá do sai mật khẩu',
    'adm.users.you': 'bạn',
    'adm.users.resetPw': 'Đặt lại mật khẩu',
    'adm.users.newPw': 'Mật khẩu mới',
    'adm.users.setPw': 'Đặt mật khẩu này',
    'adm.users.pwSet': 'Đã đặt mật khẩu mới cho {u}. Các phiên đăng nhập cũ của người này đã kết thúc.',
    'adm.users.unlock': 'Mở khoá',
    'adm.users.disable': 'Tạm khoá',
    'adm.users.enable': 'Cho dùng lại',
    'adm.users.confirmDelete': 'Xoá tài khoản «{u}»? Người này sẽ bị đăng xuất ngay và không đăng nhập được nữa.',
    'adm.users.confirmDisable': 'Tạm khoá tài khoản «{u}»? Người này sẽ bị đăng xuất ngay.',
    'adm.users.none': 'Chưa có tài khoản nào.',
    'adm.users.noAreas': 'Hãy chọn ít nhất một khu vực.',
  },
  en: {
    'adm.users.list': 'Accounts',
    'adm.users.new': 'Add an account',
    'adm.users.username': 'Username',
    'adm.users.usernameHint': 'Lower-case letters, digits, . _ - (3 to 64 characters).',
    'adm.users.password': 'Password',
    'adm.users.passwordHint': 'At least 10 characters. Hand it to the person yourself.',
    'adm.users.generate': 'Make a password',
    'adm.users.role': 'Role',
    'adm.users.roleHint.admin': 'Everything, every area.',
    'adm.users.roleHint.operator': 'Commune staff: devices, schedules and broadcasts in their areas.',
    'adm.users.roleHint.viewer': 'Farmers, the public: read the sensors of their areas.',
    'adm.users.roleHint.service': 'The IOC: overview, sensors, broadcast log (read only).',
    'adm.users.create': 'Create account',
    'adm.users.created': 'Account {u} created.',
    'adm.users.areas': 'Areas: {a}',
    'adm.users.disabled': 'Disabled',
    'adm.users.locked': 'Locked after wrong passwords',
    'adm.users.you': 'you',
    'adm.users.resetPw': 'Reset password',
    'adm.users.newPw': 'New password',
    'adm.users.setPw': 'Set this password',
    'adm.users.pwSet': 'New password set for {u}. Their old sessions have ended.',
    'adm.users.unlock': 'Unlock',
    'adm.users.disable': 'Disable',
    'adm.users.enable': 'Enable',
    'adm.users.confirmDelete': 'Delete the account “{u}”? They are logged out at once and cannot log in again.',
    'adm.users.confirmDisable': 'Disable the account “{u}”? They are logged out at once.',
    'adm.users.none': 'No accounts yet.',
    'adm.users.noAreas': 'Pick at least one area.',
  },
});

export const ROLES = ['viewer', 'operator', 'service', 'admin'];

export default function Users({ session, loc, onUnauthorized, areas }) {
  const [version, setVersion] = useState(0);
  const { data, error, reload } = useApiData(session, ['/users'], onUnauthorized, [version]);
  const changed = () => setVersion((n) => n + 1);
  const users = data?.[0];
  const [adding, setAdding] = useState(wideScreen);
  return html`
    <div class="adm-cols">
      <div class="adm-side">
        ${adding
          ? html`<${NewUser} session=${session} loc=${loc} areas=${areas} onUnauthorized=${onUnauthorized} onCreated=${changed} onClose=${() => setAdding(false)} />`
          : html`<button type="button" class="primary add" data-open="user" onClick=${() => setAdding(true)}>+ ${loc.t('adm.users.new')}</button>`}
      </div>
      <section class="card adm-main">
        <h2>${loc.t('adm.users.list')}</h2>
        <${ErrorNote} error=${error} loc=${loc} onRetry=${reload} />
        ${!users ? !error && html`<${Loading} loc=${loc} />`
          : users.length === 0 ? html`<p class="muted">${loc.t('adm.users.none')}</p>`
            : html`<ul class="adm-list">${users.map((u) => html`
                <${UserItem} key=${u.username} user=${u} me=${session.username} session=${session} loc=${loc} areas=${areas}
                  onUnauthorized=${onUnauthorized} onChanged=${changed} />`)}</ul>`}
      </section>
    </div>`;
}

function RoleSelect({ value, onChange, loc }) {
  return html`
    <label>${loc.t('adm.users.role')}
      <select name="role" value=${value} onChange=${(e) => onChange(e.currentTarget.value)}>
        ${ROLES.map((r) => html`<option value=${r}>${loc.t(`role.${r}`)}</option>`)}
      </select>
      <small class="hint">${loc.t(`adm.users.roleHint.${value}`)}</small>
    </label>`;
}

function NewUser({ session, loc, areas, onUnauthorized, onCreated, onClose }) {
  const [role, setRole] = useState('viewer');
  const [picked, setPicked] = useState([]);
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(null);
  const create = useAction(onUnauthorized);
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const username = String(new FormData(form).get('username')).trim();
    setDone(null);
    if (role !== 'admin' && picked.length === 0) { create.setError({ code: 'LOCAL', message: '' }); return; }
    const body = { username, password, role, ...(role === 'admin' ? {} : { areas: picked }) };
    const r = await create.run(() => act(session, '/users', { method: 'POST', body }));
    if (r) {
      setDone(r.username);
      form.reset();
      setPassword('');
      setPicked([]);
      onCreated();
    }
  };
  const localError = create.error?.code === 'LOCAL';
  return html`
    <form class="card adm-form" data-form="user" onSubmit=${submit}>
      <h2>${loc.t('adm.users.new')}</h2>
      <label>${loc.t('adm.users.username')}
        <input name="username" required minlength="3" maxlength="64" pattern="[a-z0-9._\\-]{3,64}" autocapitalize="none" spellcheck="false" autocomplete="off" />
        <small class="hint">${loc.t('adm.users.usernameHint')}</small>
      </label>
      <label>${loc.t('adm.users.password')}
        <span class="with-button">
          <input name="password" required minlength="10" maxlength="1024" autocomplete="new-password" spellcheck="false"
            value=${password} onInput=${(e) => setPassword(e.currentTarget.value)} />
          <button type="button" class="plain" onClick=${() => setPassword(newPassword())}>${loc.t('adm.users.generate')}</button>
        </span>
        <small class="hint">${loc.t('adm.users.passwordHint')}</small>
      </label>
      <${RoleSelect} value=${role} onChange=${setRole} loc=${loc} />
      ${role !== 'admin' && html`<${AreaPicker} areas=${areas} value=${picked} onChange=${setPicked} allowAll=${true} loc=${loc} />`}
      ${localError ? html`<p class="error" role="alert">${loc.t('adm.users.noAreas')}</p>` : html`<${Refusal} error=${create.error} loc=${loc} />`}
      ${done && html`<p class="notice" role="status">${loc.t('adm.users.created', { u: done })}</p>`}
      <${CreateActions} busy=${create.busy} label=${loc.t('adm.users.create')} loc=${loc} onClose=${onClose} />
    </form>`;
}

function UserItem({ user, me, session, loc, areas, onUnauthorized, onChanged }) {
  const [mode, setMode] = useState(null); // 'edit' | 'password' | 'delete' | 'disable'
  const [role, setRole] = useState(user.role);
  const [picked, setPicked] = useState(user.areas);
  const [password, setPassword] = useState('');
  const [pwSet, setPwSet] = useState(false);
  const action = useAction(onUnauthorized);
  const path = `/users/${encodeURIComponent(user.username)}`;
  const open = (m) => {
    action.setError(null);
    setPwSet(false);
    setRole(user.role);
    setPicked(user.areas);
    if (m === 'password') setPassword(newPassword());
    setMode(mode === m ? null : m);
  };
  const patch = async (body) => {
    const r = await action.run(() => act(session, path, { method: 'PATCH', body }));
    if (r) onChanged();
    return r;
  };
  const saveRole = async (e) => {
    e.preventDefault();
    if (role !== 'admin' && picked.length === 0) { action.setError({ code: 'LOCAL', message: '' }); return; }
    if (await patch(role === 'admin' ? { role } : { role, areas: picked })) setMode(null);
  };
  const savePassword = async (e) => {
    e.preventDefault();
    if (await patch({ password })) setPwSet(true);
  };
  const remove = async () => {
    const r = await action.run(() => act(session, path, { method: 'DELETE' }).then(() => true));
    if (r) onChanged();
  };
  const isMe = user.username === me;
  const localError = action.error?.code === 'LOCAL';
  return html`
    <li class="adm-item" data-user=${user.username}>
      <div class="line">
        <strong class="name">${user.username}</strong>
        <span class=${`badge role-${user.role}`}>${loc.t(`role.${user.role}`)}</span>
        ${isMe && html`<span class="badge">${loc.t('adm.users.you')}</span>`}
        ${user.disabled && html`<span class="badge bad">${loc.t('adm.users.disabled')}</span>`}
        ${user.locked && html`<span class="badge bad">${loc.t('adm.users.locked')}</span>`}
      </div>
      <p class="muted small">${loc.t('adm.users.areas', { a: areaList(areas, user.areas, loc) })}</p>
      <div class="actions">
        <button type="button" class="plain" aria-expanded=${mode === 'edit'} onClick=${() => open('edit')}>${loc.t('adm.edit')}</button>
        <button type="button" class="plain" aria-expanded=${mode === 'password'} onClick=${() => open('password')}>${loc.t('adm.users.resetPw')}</button>
        ${user.locked && html`<button type="button" class="plain" disabled=${action.busy} onClick=${() => patch({ unlock: true })}>${loc.t('adm.users.unlock')}</button>`}
        ${!isMe && (user.disabled
          ? html`<button type="button" class="plain" disabled=${action.busy} onClick=${() => patch({ disabled: false })}>${loc.t('adm.users.enable')}</button>`
          : html`<button type="button" class="plain" onClick=${() => open('disable')}>${loc.t('adm.users.disable')}</button>`)}
        ${!isMe && html`<button type="button" class="plain danger-text" onClick=${() => open('delete')}>${loc.t('adm.delete')}</button>`}
      </div>
      ${mode === 'edit' && html`
        <form class="adm-form inline" onSubmit=${saveRole}>
          <${RoleSelect} value=${role} onChange=${setRole} loc=${loc} />
          ${role !== 'admin' && html`<${AreaPicker} areas=${areas} value=${picked} onChange=${setPicked}
            allowAll=${true} loc=${loc} name=${`areas-${user.username}`} />`}
          ${localError ? html`<p class="error" role="alert">${loc.t('adm.users.noAreas')}</p>` : html`<${Refusal} error=${action.error} loc=${loc} />`}
          <${SaveActions} busy=${action.busy} loc=${loc} onCancel=${() => setMode(null)} />
        </form>`}
      ${mode === 'password' && html`
        <form class="adm-form inline" onSubmit=${savePassword}>
          <label>${loc.t('adm.users.newPw')}
            <span class="with-button">
              <input name="new-password" required minlength="10" maxlength="1024" spellcheck="false" autocomplete="new-password"
                value=${password} onInput=${(e) => { setPassword(e.currentTarget.value); setPwSet(false); }} />
              <button type="button" class="plain" onClick=${() => { setPassword(newPassword()); setPwSet(false); }}>${loc.t('adm.users.generate')}</button>
            </span>
            <small class="hint">${loc.t('adm.users.passwordHint')}</small>
          </label>
          <${Refusal} error=${action.error} loc=${loc} />
          ${pwSet && html`<p class="notice" role="status">${loc.t('adm.users.pwSet', { u: user.username })}</p>`}
          <div class="actions">
            <button type="submit" class="primary" disabled=${action.busy || pwSet}>${loc.t('adm.users.setPw')}</button>
            <button type="button" class="plain" onClick=${() => setMode(null)}>${loc.t(pwSet ? 'adm.close' : 'adm.cancel')}</button>
          </div>
        </form>`}
      ${mode === 'disable' && html`
        <${Confirm} text=${loc.t('adm.users.confirmDisable', { u: user.username })} action=${loc.t('adm.users.disable')} busy=${action.busy} error=${action.error} loc=${loc}
          onConfirm=${async () => { if (await patch({ disabled: true })) setMode(null); }} onCancel=${() => setMode(null)} />`}
      ${mode === 'delete' && html`
        <${Confirm} text=${loc.t('adm.users.confirmDelete', { u: user.username })} action=${loc.t('adm.delete')} busy=${action.busy} error=${action.error} loc=${loc}
          onConfirm=${remove} onCancel=${() => setMode(null)} />`}
    </li>`;
}
