// What the three loudspeaker screens of the commune staff share: the area
// tree and the speakers of the user's areas, the states of a broadcast in
// words and colours, and the server's refusals said in plain words (which
// field, which clash), never as codes alone.
import { addStrings } from './i18n.js';
import { errorText, html, loadCss } from './ui.js';
import { request } from './op-api.js';

loadCss('op-common.css');

addStrings({
  vi: {
    'bstate.pending': 'Chờ gửi',
    'bstate.sent': 'Đã gửi lệnh',
    'bstate.accepted': 'Loa đã nhận',
    'bstate.playing': 'Đang phát',
    'bstate.completed': 'Đã phát xong',
    'bstate.failed': 'Lỗi, không phát được',
    'bstate.rejected': 'Loa từ chối',
    'bstate.offline': 'Loa mất kết nối, chờ',
    'bstate.expired': 'Quá hạn, không phát',
    'bstate.preempted': 'Bị tin khẩn cấp ngắt',
    'bstate.stopped': 'Đã dừng',
    'bstate.unconfirmed': 'Loa đã nhận, không báo phát xong',
    'bstate.missed': 'Bị lỡ (máy chủ tắt)',
    'priority.normal': 'Thông thường',
    'priority.priority': 'Ưu tiên',
    'priority.emergency': 'Khẩn cấp',
    'op.whole': 'Toàn {name}',
    'op.speakers': '{n} loa',
    'op.noSpeakers': 'Chưa có loa nào trong khu vực của bạn.',
    'op.problem': 'Cần sửa lại:',
    'op.err.forbidden': 'Bạn không có quyền làm việc này ở khu vực đó.',
    'op.err.notFound': 'Không tìm thấy — có thể nó không thuộc khu vực của bạn.',
    'op.err.tts': 'Máy chủ chưa đọc được văn bản thành tiếng (thiếu phần mềm đọc). Hãy tải lên tệp ghi âm.',
    'op.err.notAudio': 'Tệp này không phải âm thanh phát được. Hãy chọn tệp MP3, WAV hoặc OGG.',
    'op.err.tooLarge': 'Tệp quá lớn để tải lên.',
    'op.err.clash': 'Trùng giờ với lịch «{name}» trên {speakers} lúc {at}.',
    'op.err.clashHint': 'Hãy chọn giờ khác, hoặc chọn mức «Ưu tiên» nếu bản tin này quan trọng hơn.',
    'op.err.noSpeakers': 'Nơi được chọn chưa có loa nào.',
    'field.name': 'Tên lịch',
    'field.target': 'Nơi phát',
    'field.content': 'Nội dung',
    'field.at': 'Ngày giờ phát',
    'field.cron': 'Lặp lại',
    'field.volume': 'Âm lượng',
    'field.priority': 'Mức ưu tiên',
    'field.durationSec': 'Thời lượng',
    'field.startDate': 'Ngày bắt đầu',
    'field.endDate': 'Ngày kết thúc',
    'field.text': 'Văn bản',
    'field.file': 'Tệp âm thanh',
    'msg.required': 'chưa điền',
    'msg.past': 'đã qua, hãy chọn thời điểm sau bây giờ',
    'msg.noTarget': 'hãy chọn ít nhất một thôn hoặc một loa',
    'msg.textLength': 'cần từ 1 đến 5000 ký tự',
    'msg.volume': 'phải là số từ 0 đến 100',
    'msg.unknownMedia': 'không tìm thấy tệp âm thanh',
    'msg.unknown': 'không có hoặc không thuộc khu vực của bạn',
    'msg.never': 'không có lần phát nào sắp tới',
    'msg.tooLong': 'dài hơn khoảng cách giữa hai lần phát',
  },
  en: {
    'bstate.pending': 'Waiting to send',
    'bstate.sent': 'Command sent',
    'bstate.accepted': 'Speaker accepted',
    'bstate.playing': 'Playing',
    'bstate.completed': 'Played to the end',
    'bstate.failed': 'Failed to play',
    'bstate.rejected': 'Speaker refused',
    'bstate.offline': 'Speaker offline, waiting',
    'bstate.expired': 'Expired, not played',
    'bstate.preempted': 'Cut by an emergency',
    'bstate.stopped': 'Stopped',
    'bstate.unconfirmed': 'Accepted, end never reported',
    'bstate.missed': 'Missed (server was down)',
    'priority.normal': 'Normal',
    'priority.priority': 'Priority',
    'priority.emergency': 'Emergency',
    'op.whole': 'All of {name}',
    'op.speakers': '{n} speakers',
    'op.noSpeakers': 'There are no speakers in your areas yet.',
    'op.problem': 'Please fix:',
    'op.err.forbidden': 'You are not allowed to do this in that area.',
    'op.err.notFound': 'Not found — it may not be in your areas.',
    'op.err.tts': 'The server cannot turn text into speech (the reading software is missing). Upload a recording instead.',
    'op.err.notAudio': 'This file is not playable audio. Choose an MP3, WAV or OGG file.',
    'op.err.tooLarge': 'The file is too large to upload.',
    'op.err.clash': 'Clashes with schedule «{name}» on {speakers} at {at}.',
    'op.err.clashHint': 'Choose another time, or choose «Priority» if this bulletin matters more.',
    'op.err.noSpeakers': 'The chosen places have no speakers yet.',
    'field.name': 'Schedule name',
    'field.target': 'Where',
    'field.content': 'Content',
    'field.at': 'Date and time',
    'field.cron': 'Repeat',
    'field.volume': 'Volume',
    'field.priority': 'Priority',
    'field.durationSec': 'Length',
    'field.startDate': 'Start date',
    'field.endDate': 'End date',
    'field.text': 'Text',
    'field.file': 'Audio file',
    'msg.required': 'is missing',
    'msg.past': 'is in the past; choose a time after now',
    'msg.noTarget': 'choose at least one village or speaker',
    'msg.textLength': 'needs 1 to 5000 characters',
    'msg.volume': 'must be a number from 0 to 100',
    'msg.unknownMedia': 'audio file not found',
    'msg.unknown': 'does not exist or is not in your areas',
    'msg.never': 'has no coming occurrence',
    'msg.tooLong': 'is longer than the time between two runs',
  },
});

/** Colour group of a broadcast state (op-common.css). */
export const STATE_TONE = {
  pending: 'wait', sent: 'wait', accepted: 'wait', offline: 'warn', playing: 'run', completed: 'ok',
  failed: 'bad', rejected: 'bad', expired: 'bad', missed: 'bad', preempted: 'warn', stopped: 'off',
  // May have played (firmware without playback events), but it is not proven.
  unconfirmed: 'warn',
};
/** States in which a speaker may still play: the broadcast can be stopped. */
export const ACTIVE_STATES = new Set(['pending', 'sent', 'accepted', 'playing', 'offline']);

export function StatePill({ state, loc }) {
  return html`<span class=${`pill ${STATE_TONE[state] ?? 'off'}`} data-state=${state}>${loc.t(`bstate.${state}`)}</span>`;
}

export function LiveBadge({ live, loc }) {
  return html`<span class=${live ? 'live on' : 'live'} role="status">${live ? loc.t('live.on') : loc.t('live.off')}</span>`;
}

// ---- places ------------------------------------------------------------------

/** The areas and speakers the user may see: `{areas, areaByCode, speakers}` (speakers sorted by area, then name). */
export async function loadPlaces(session, signal) {
  const [areas, speakers] = await Promise.all([
    request(session, '/areas', { signal }),
    request(session, '/devices?kind=speaker', { signal }),
  ]);
  const areaByCode = new Map(areas.map((a) => [a.code, a]));
  speakers.sort((a, b) => (areaByCode.get(a.area)?.name ?? a.area).localeCompare(areaByCode.get(b.area)?.name ?? b.area, 'vi')
    || a.name.localeCompare(b.name, 'vi'));
  return { areas, areaByCode, speakers };
}

/** Whether area `code` lies in the subtree of `top`. */
export function within(areaByCode, code, top) {
  for (let c = code, i = 0; c && i < 10; c = areaByCode.get(c)?.parent, i++) if (c === top) return true;
  return false;
}

/** The speakers a target `{areas?, devices?}` reaches (an area includes its villages), as a Set of ids. */
export function speakersOf(target, places) {
  const ids = new Set(target?.devices ?? []);
  for (const a of target?.areas ?? []) for (const s of places.speakers) if (within(places.areaByCode, s.area, a)) ids.add(s.id);
  return ids;
}

/** A target in words: "Thôn A1, Loa đình làng" (areas by name, then speakers by name). */
export function targetWords(target, places, loc) {
  const names = [
    ...(target?.areas ?? []).map((a) => {
      const area = places.areaByCode.get(a);
      return area ? (area.level === 'village' ? area.name : loc.t('op.whole', { name: area.name })) : a;
    }),
    ...(target?.devices ?? []).map((id) => places.speakers.find((s) => s.id === id)?.name ?? id),
  ];
  return names.join(', ');
}

// ---- refusals in words -----------------------------------------------------------

const FIELD_MESSAGES = [
  [/^(is required|required\b)/, 'msg.required'],
  [/in the past/, 'msg.past'],
  [/at least one area or device/, 'msg.noTarget'],
  [/1-5000 characters/, 'msg.textLength'],
  [/integer 0-100/, 'msg.volume'],
  [/unknown media/, 'msg.unknownMedia'],
  [/does not exist/, 'msg.unknown'],
  [/never runs/, 'msg.never'],
  [/longer than the time between/, 'msg.tooLong'],
];

function fieldLine(d, loc) {
  const field = String(d.field ?? '');
  const top = /^[A-Za-z]+/.exec(field)?.[0] ?? '';
  const label = loc.t(`field.${top}`) === `field.${top}` ? field : loc.t(`field.${top}`);
  const known = FIELD_MESSAGES.find(([re]) => re.test(d.message ?? ''));
  return `${label ? `${label}: ` : ''}${known ? loc.t(known[1]) : d.message}`;
}

/** The words for a refused action: a list of lines (each failing field, or the clash), the first being the gist. */
export function problemLines(err, loc, nameOf = (id) => id) {
  if (!err) return [];
  const details = Array.isArray(err.details) ? err.details : null;
  switch (err.code) {
    case 'KENG_ERR_VALIDATION':
    case 'KENG_ERR_UNPROCESSABLE':
      if (details?.length) return [loc.t('op.problem'), ...details.map((d) => fieldLine(d, loc))];
      if (/no speakers/.test(err.message ?? '')) return [loc.t('op.err.noSpeakers')];
      break;
    case 'KENG_ERR_CONFLICT': {
      const c = err.details?.clashes?.[0];
      if (c) {
        const at = Date.parse(c.at);
        const speakers = c.deviceCount === 1 ? nameOf(c.deviceIds[0]) : loc.t('op.speakers', { n: c.deviceCount });
        return [loc.t('op.err.clash', { name: c.name, speakers, at: Number.isFinite(at) ? loc.dateTime(at) : c.at }), loc.t('op.err.clashHint')];
      }
      break;
    }
    case 'KENG_ERR_FORBIDDEN': return [loc.t('op.err.forbidden')];
    case 'KENG_ERR_NOT_FOUND': return [loc.t('op.err.notFound')];
    case 'KENG_ERR_TTS_UNAVAILABLE': return [loc.t('op.err.tts')];
    case 'KENG_ERR_MEDIA_NOT_AUDIO': return [loc.t('op.err.notAudio')];
    case 'KENG_ERR_PAYLOAD_TOO_LARGE': return [loc.t('op.err.tooLarge')];
    default: break;
  }
  return [errorText(err, loc)];
}

/** A refusal shown under the form or button that caused it. */
export function Problem({ error, loc, nameOf }) {
  if (!error) return null;
  const [first, ...rest] = problemLines(error, loc, nameOf);
  // Field errors are a list to work through; anything else is a sentence and its advice.
  const asList = Array.isArray(error.details) && error.details.length > 0;
  return html`<div class="error problem" role="alert" data-code=${error.code}>
    <p>${first}</p>${rest.length > 0 && (asList ? html`<ul>${rest.map((l) => html`<li>${l}</li>`)}</ul>` : rest.map((l) => html`<p class="advice">${l}</p>`))}</div>`;
}

/** True when the error means the session is over (the caller logs out). */
export const isUnauthorized = (err) => err?.code === 'KENG_ERR_UNAUTHENTICATED';
