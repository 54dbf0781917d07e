// Pieces the admin screens share: the server's refusals in words, area
// pickers from the tree, the box that shows a secret once, the confirmation
// step, a form's buttons, revoking a credential, and a hook for the
// busy/error state of an action.
import { useEffect, useRef, useState } from './hooks.mjs';
import { addStrings } from './i18n.js';
import { ErrorNote, Loading, act, errorText, html, treeOrder, useApiData } from './ui.js';

addStrings({
  vi: {
    'adm.save': 'Lưu',
    'adm.cancel': 'Huỷ',
    'adm.edit': 'Sửa',
    'adm.delete': 'Xoá',
    'adm.close': 'Đóng',
    'adm.saved': 'Đã lưu.',
    'adm.busy': 'Đang gửi…',
    'adm.required': 'bắt buộc',
    'adm.optional': 'không bắt buộc',
    'adm.none': '—',
    'adm.allAreas': 'Mọi khu vực (*)',
    'adm.everywhere': 'Mọi khu vực',
    'adm.allAreasHint': 'Toàn bộ hệ thống, kể cả khu vực tạo sau này.',
    'adm.pickAreas': 'Khu vực',
    'adm.pickAreasHint': 'Chọn một xã là gồm cả các thôn của xã.',
    'adm.noAreas': 'Chưa có khu vực nào: hãy tạo ở mục Khu vực trước.',
    'adm.chooseArea': 'Chọn khu vực…',
    'adm.level.province': 'Tỉnh',
    'adm.level.commune': 'Xã',
    'adm.level.village': 'Thôn',
    'adm.once.warn': 'Chỉ hiện MỘT LẦN. Hãy chép và cất ngay: sau khi đóng, không ai xem lại được, kể cả quản trị viên.',
    'adm.once.copy': 'Chép',
    'adm.once.copied': 'Đã chép',
    'adm.once.copyFailed': 'Không chép được: hãy chọn rồi chép tay.',
    'adm.once.done': 'Tôi đã cất xong',
    'adm.confirm': 'Xác nhận',
    'adm.err.userExists': 'Tên đăng nhập này đã có. Hãy chọn tên khác.',
    'adm.err.deviceExists': 'Mã thiết bị này đã có. Hãy chọn mã khác.',
    'adm.err.areaExists': 'Mã khu vực này đã có. Hãy chọn mã khác.',
    'adm.err.hierarchy': 'Cấp khu vực không hợp lệ: xã phải thuộc một tỉnh, thôn phải thuộc một xã, tỉnh không thuộc khu vực nào.',
    'adm.err.weakPassword': 'Mật khẩu chưa đạt: ít nhất 10 ký tự, không có dấu cách ở đầu hoặc cuối, khác tên đăng nhập và không dễ đoán (nên dùng một câu nhiều từ, ví dụ lua-nep-cai-hoa-vang).',
    'adm.err.usernameUnavailable': 'Không dùng được tên đăng nhập này. Hãy chọn tên khác.',
    'adm.err.unprocessable': 'Máy chủ không nhận: có chỗ tham chiếu tới thứ không tồn tại.',
    'adm.err.validation': 'Dữ liệu chưa hợp lệ, hãy kiểm tra lại các ô.',
    'adm.err.conflict': 'Máy chủ từ chối vì xung đột với dữ liệu hiện có.',
    'adm.err.inUse': 'Không xoá được vì còn đang được dùng.',
    'adm.err.notFound': 'Không còn thấy mục này (có thể người khác vừa xoá). Hãy tải lại.',
    'adm.err.detail': 'Chi tiết: {m}',
  },
  en: {
    'adm.save': 'Save',
    'adm.cancel': 'Cancel',
    'adm.edit': 'Edit',
    'adm.delete': 'Delete',
    'adm.close': 'Close',
    'adm.saved': 'Saved.',
    'adm.busy': 'Sending…',
    'adm.required': 'required',
    'adm.optional': 'optional',
    'adm.none': '—',
    'adm.allAreas': 'Every area (*)',
    'adm.everywhere': 'Every area',
    'adm.allAreasHint': 'The whole installation, areas created later included.',
    'adm.pickAreas': 'Areas',
    'adm.pickAreasHint': 'A commune includes its villages.',
    'adm.noAreas': 'No areas yet: create them under Areas first.',
    'adm.chooseArea': 'Choose an area…',
    'adm.level.province': 'Province',
    'adm.level.commune': 'Commune',
    'adm.level.village': 'Village',
    'adm.once.warn': 'Shown ONCE. Copy it and keep it safe now: once closed, nobody can see it again, administrators included.',
    'adm.once.copy': 'Copy',
    'adm.once.copied': 'Copied',
    'adm.once.copyFailed': 'Could not copy: select it and copy by hand.',
    'adm.once.done': 'I have stored it',
    'adm.confirm': 'Confirm',
    'adm.err.userExists': 'This username is taken. Choose another.',
    'adm.err.deviceExists': 'This device id is taken. Choose another.',
    'adm.err.areaExists': 'This area code is taken. Choose another.',
    'adm.err.hierarchy': 'Wrong level: a commune belongs to a province, a village to a commune, a province to nothing.',
    'adm.err.weakPassword': 'Password refused: at least 10 characters, no space at either end, not the username, and not easy to guess (a phrase of several words works well).',
    'adm.err.usernameUnavailable': 'This username cannot be used. Choose another.',
    'adm.err.unprocessable': 'The server refused it: something it refers to does not exist.',
    'adm.err.validation': 'Some fields are not valid; please check them.',
    'adm.err.conflict': 'The server refused it: it conflicts with existing data.',
    'adm.err.inUse': 'Cannot delete: still in use.',
    'adm.err.notFound': 'This item is gone (someone may have just deleted it). Reload.',
    'adm.err.detail': 'Details: {m}',
  },
});

/** Refusals in words; the server's own message follows where it names the field or the missing thing. */
const REFUSALS = {
  KENG_ERR_USER_EXISTS: ['adm.err.userExists', false],
  KENG_ERR_DEVICE_EXISTS: ['adm.err.deviceExists', false],
  KENG_ERR_AREA_EXISTS: ['adm.err.areaExists', false],
  KENG_ERR_AREA_HIERARCHY: ['adm.err.hierarchy', true],
  KENG_ERR_WEAK_PASSWORD: ['adm.err.weakPassword', false],
  KENG_ERR_USERNAME_UNAVAILABLE: ['adm.err.usernameUnavailable', false],
  KENG_ERR_UNPROCESSABLE: ['adm.err.unprocessable', true],
  KENG_ERR_VALIDATION: ['adm.err.validation', true],
  KENG_ERR_CONFLICT: ['adm.err.conflict', true],
  KENG_ERR_AREA_IN_USE: ['adm.err.inUse', true],
  KENG_ERR_NOT_FOUND: ['adm.err.notFound', false],
};

export function refusal(err, loc) {
  const r = REFUSALS[err?.code];
  if (!r) return errorText(err, loc);
  return r[1] && err.message ? `${loc.t(r[0])} ${loc.t('adm.err.detail', { m: err.message })}` : loc.t(r[0]);
}

export function Refusal({ error, loc }) {
  return error ? html`<p class="error" role="alert">${refusal(error, loc)}</p>` : null;
}

/** busy/error of one action; a 401 ends the session instead of showing an error. */
export function useAction(onUnauthorized) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (fn) => {
    setBusy(true);
    setError(null);
    try {
      return await fn();
    } catch (err) {
      if (err?.code === 'KENG_ERR_UNAUTHENTICATED') onUnauthorized();
      else setError(err);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run, setError };
}


/**
 * An area in words: "Thôn Đông, Xã Hải Lăng" for a village (village names
 * repeat from commune to commune), the name otherwise, "every area" for "*",
 * the code itself when the area is not known here.
 */
export function areaLabel(areas, code, loc) {
  if (code === '*') return loc.t('adm.everywhere');
  const a = areas.find((x) => x.code === code);
  if (!a) return code;
  const parent = a.level === 'village' && a.parent ? areas.find((x) => x.code === a.parent) : null;
  return parent ? `${a.name}, ${parent.name}` : a.name;
}

/** Several areas in words, separated so that "Thôn Đông, Xã Hải Lăng" stays one item. */
export function areaList(areas, codes, loc) {
  return codes.length ? codes.map((c) => areaLabel(areas, c, loc)).join('; ') : loc.t('adm.none');
}

/** Who made something, from its audit actor ("user:lan" → "lan", "admin:admin" → "admin"). */
export function actorName(actor) {
  return String(actor ?? '').replace(/^(user|admin|token):/, '');
}

/** Wide screens show a section's form beside its list from the start; a phone opens it on demand. */
export function wideScreen() {
  return window.matchMedia?.('(min-width: 1000px)').matches ?? false;
}

/**
 * A select of areas in tree order; `levels` limits the choice (a village's
 * parent is a commune). Villages carry their commune's name: no indentation,
 * which a closed select would show as leading blanks.
 */
export function AreaSelect({ areas, name, value, onChange, levels, required = true, emptyLabel, loc, id }) {
  const rows = treeOrder(areas).filter(({ area }) => !levels || levels.includes(area.level));
  return html`
    <select name=${name} id=${id} required=${required} value=${value ?? ''} onChange=${onChange && ((e) => onChange(e.currentTarget.value))}>
      <option value="">${emptyLabel ?? loc.t('adm.chooseArea')}</option>
      ${rows.map(({ area }) => html`<option value=${area.code}>${areaLabel(areas, area.code, loc)} (${area.code})</option>`)}
    </select>`;
}

/**
 * Areas as a tree of checkboxes. Ticking an area covers its subtree (that
 * is what the server grants), so its children are shown ticked and locked.
 */
export function AreaPicker({ areas, value, onChange, allowAll, loc, name = 'areas' }) {
  const rows = treeOrder(areas);
  const chosen = new Set(value);
  const all = chosen.has('*');
  const parentOf = new Map(areas.map((a) => [a.code, a.parent]));
  const coveredByParent = (code) => {
    for (let p = parentOf.get(code); p; p = parentOf.get(p)) if (chosen.has(p)) return true;
    return false;
  };
  const toggle = (code, on) => {
    const next = new Set(chosen);
    if (on) next.add(code); else next.delete(code);
    if (code === '*' && on) { onChange(['*']); return; }
    // A ticked parent covers its children: keep only the top-most codes.
    const list = [...next].filter((c) => c !== '*');
    onChange(list.filter((c) => { for (let p = parentOf.get(c); p; p = parentOf.get(p)) if (next.has(p)) return false; return true; }));
  };
  return html`
    <fieldset class="adm-areas" data-picker=${name}>
      <legend>${loc.t('adm.pickAreas')}</legend>
      <p class="hint">${loc.t('adm.pickAreasHint')}</p>
      ${allowAll && html`
        <label class="check all"><input type="checkbox" checked=${all} onChange=${(e) => toggle('*', e.currentTarget.checked)} value="*" />
          <span>${loc.t('adm.allAreas')}<small>${loc.t('adm.allAreasHint')}</small></span></label>`}
      ${rows.length === 0 && html`<p class="muted">${loc.t('adm.noAreas')}</p>`}
      <div class="scroll">
      ${rows.map(({ area, depth }) => {
        const inherited = all || coveredByParent(area.code);
        return html`
          <label class=${`check depth-${Math.min(depth, 3)}`} key=${area.code}>
            <input type="checkbox" value=${area.code} checked=${inherited || chosen.has(area.code)} disabled=${inherited}
              onChange=${(e) => toggle(area.code, e.currentTarget.checked)} />
            <span>${area.name} <small>${loc.t(`adm.level.${area.level}`)} · ${area.code}</small></span>
          </label>`;
      })}
      </div>
    </fieldset>`;
}

/** A secret shown once: a clear warning, the value selectable, a copy button, and a "stored it" button that closes it. */
export function OnceSecret({ title, items, loc, onDone, children }) {
  const box = useRef(null);
  // It may appear below the fold of a phone: bring it into view, it must not be missed.
  useEffect(() => { box.current?.scrollIntoView?.({ block: 'start', behavior: 'smooth' }); }, []);
  return html`
    <section class="adm-once" role="alertdialog" aria-label=${title} ref=${box}>
      <h3>${title}</h3>
      <p class="warn">${loc.t('adm.once.warn')}</p>
      ${items.map((it) => html`<${SecretLine} key=${it.key} item=${it} loc=${loc} />`)}
      ${children}
      <button type="button" class="primary" onClick=${onDone}>${loc.t('adm.once.done')}</button>
    </section>`;
}

function SecretLine({ item, loc }) {
  const input = useRef(null);
  const [copied, setCopied] = useState(null);
  const copy = async () => {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(item.value); ok = true; }
    } catch { /* no permission: the selection below */ }
    if (!ok && input.current) {
      // Plain http on the commune LAN has no clipboard API: select the text and copy the old way.
      input.current.focus();
      input.current.select();
      try { ok = document.execCommand('copy'); } catch { ok = false; }
    }
    setCopied(ok);
  };
  return html`
    <div class="secret" data-secret=${item.key}>
      <label for=${`secret-${item.key}`}>${item.label}</label>
      <div class="secret-row">
        <input id=${`secret-${item.key}`} ref=${input} readonly value=${item.value} spellcheck="false" autocomplete="off"
          onFocus=${(e) => e.currentTarget.select()} />
        <button type="button" class="copy" onClick=${copy}>${copied ? loc.t('adm.once.copied') : loc.t('adm.once.copy')}</button>
      </div>
      ${copied === false && html`<p class="hint">${loc.t('adm.once.copyFailed')}</p>`}
    </div>`;
}

/** "Are you sure" in the page, naming what is about to go; the dangerous button is red. */
export function Confirm({ text, action, busy, error, loc, onConfirm, onCancel }) {
  return html`
    <div class="adm-confirm" role="alertdialog" aria-label=${text}>
      <p>${text}</p>
      <${Refusal} error=${error} loc=${loc} />
      <div class="actions">
        <button type="button" class="danger" disabled=${busy} onClick=${onConfirm}>${busy ? loc.t('adm.busy') : action}</button>
        <button type="button" class="plain" onClick=${onCancel}>${loc.t('adm.cancel')}</button>
      </div>
    </div>`;
}

/**
 * A creation form's buttons. While the request is out the button says so and
 * cannot be pressed twice (a second press would make a second one).
 */
export function CreateActions({ busy, label, loc, onClose }) {
  return html`
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>${busy ? loc.t('adm.busy') : label}</button>
      <button type="button" class="plain" onClick=${onClose}>${loc.t('adm.close')}</button>
    </div>`;
}

/** An edit form's buttons: save, or cancel and fold the form away. */
export function SaveActions({ busy, loc, onCancel }) {
  return html`
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>${loc.t('adm.save')}</button>
      <button type="button" class="plain" onClick=${onCancel}>${loc.t('adm.cancel')}</button>
    </div>`;
}

/**
 * Issuing a credential (an API token, a provisioning key): the action, and
 * what the server made, secret included, until the admin says it is stored.
 * `issue(form, body, reset)` POSTs `body` to `path`; once it is made the form
 * is cleared (`reset` clears what the form keeps outside its fields) and the
 * list reloads. `stored()` puts the secret away, and on a phone the form too.
 */
export function useIssue({ session, path, onUnauthorized, onCreated, onClose }) {
  const [made, setMade] = useState(null);
  const create = useAction(onUnauthorized);
  const issue = async (form, body, reset) => {
    const r = await create.run(() => act(session, path, { method: 'POST', body }));
    if (r) {
      setMade(r);
      form.reset();
      reset();
      onCreated();
    }
  };
  const stored = () => { setMade(null); if (!wideScreen()) onClose(); };
  return { create, made, issue, stored };
}

/**
 * Revoking a credential (an API token, a provisioning key): a button, then a
 * confirmation naming it, then DELETE `path`. Nothing once it is revoked:
 * revoking cannot be undone, so there is nothing more to offer.
 */
export function RevokeStep({ revoked, path, label, text, session, loc, onUnauthorized, onChanged }) {
  const [confirming, setConfirming] = useState(false);
  const revoke = useAction(onUnauthorized);
  const doRevoke = async () => {
    const ok = await revoke.run(() => act(session, path, { method: 'DELETE' }).then(() => true));
    if (ok) { setConfirming(false); onChanged(); }
  };
  return html`
    ${!revoked && !confirming && html`
      <div class="actions"><button type="button" class="plain danger-text" onClick=${() => setConfirming(true)}>${label}</button></div>`}
    ${confirming && html`
      <${Confirm} text=${text} action=${label} busy=${revoke.busy} error=${revoke.error}
        loc=${loc} onConfirm=${doRevoke} onCancel=${() => setConfirming(false)} />`}`;
}

/** A password to hand to a person: 15 letters and digits without look-alikes (l/1, O/0), in groups. */
export function newPassword() {
  const abc = 'abcdefghjkmnpqrstuvwxyz23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(15));
  const s = [...bytes].map((b) => abc[b % abc.length]).join('');
  return `${s.slice(0, 5)}-${s.slice(5, 10)}-${s.slice(10)}`;
}

/** The commune zone's UTC offset on a date ("+07:00"), for an end-of-day time the server accepts. */
export function zoneOffset(tz, ymd) {
  const part = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset' })
    .formatToParts(new Date(`${ymd}T12:00:00Z`)).find((p) => p.type === 'timeZoneName')?.value ?? 'GMT';
  const m = /GMT([+-]\d{2}:\d{2})/.exec(part);
  return m ? m[1] : '+00:00';
}

/** The end of a chosen day (yyyy-mm-dd) in the commune's zone, as the server takes an expiry. */
export function endOfDay(tz, ymd) {
  return `${ymd}T23:59:59${zoneOffset(tz, ymd)}`;
}

/** Today in the commune's zone as yyyy-mm-dd (the min of a date input). */
export function todayIn(tz) {
  return new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' }).format(Date.now());
}

/**
 * The page of a kind of revocable credential (API tokens, provisioning keys):
 * the form to make one beside the list, live ones first, newest first, revoked
 * ones after them. `New` and `Item` are the kind's own form and row.
 */
export function RevocableList({ session, loc, onUnauthorized, areas, path, open, words, New, Item }) {
  const [version, setVersion] = useState(0);
  const { data, error, reload } = useApiData(session, [path], onUnauthorized, [version]);
  const changed = () => setVersion((n) => n + 1);
  const rows = data?.[0] && [...data[0]].sort((a, b) => Number(a.revoked) - Number(b.revoked) || Date.parse(b.createdAt) - Date.parse(a.createdAt));
  const [adding, setAdding] = useState(wideScreen);
  return html`
    <div class="adm-cols">
      <div class="adm-side">
        ${adding
          ? html`<${New} session=${session} loc=${loc} areas=${areas} onUnauthorized=${onUnauthorized} onCreated=${changed} onClose=${() => setAdding(false)} />`
          : html`<button type="button" class="primary add" data-open=${open} onClick=${() => setAdding(true)}>+ ${loc.t(words.new)}</button>`}
      </div>
      <section class="card adm-main">
        <h2>${loc.t(words.list)}</h2>
        <${ErrorNote} error=${error} loc=${loc} onRetry=${reload} />
        ${!rows ? !error && html`<${Loading} loc=${loc} />`
          : rows.length === 0 ? html`<p class="muted">${loc.t(words.none)}</p>`
            : html`<ul class="adm-list">${rows.map((r) => html`
                <${Item} key=${r.id} row=${r} session=${session} loc=${loc} areas=${areas} onUnauthorized=${onUnauthorized} onChanged=${changed} />`)}</ul>`}
      </section>
    </div>`;
}
