// Words and formats. Vietnamese is the default (the page is lang="vi"); the
// English switch is remembered on the phone. Numbers and times go through
// Intl, in the commune's zone given by the server (meta keng-tz), so a phone
// set to another zone still shows commune time.

const LANG_KEY = 'keng.lang';

const DICT = {
  vi: {
    appName: 'Kẻng',
    tagline: 'Cảm biến đồng ruộng của xã',
    loading: 'Đang tải…',
    'login.title': 'Đăng nhập',
    'login.username': 'Tên đăng nhập',
    'login.password': 'Mật khẩu',
    'login.submit': 'Đăng nhập',
    'login.busy': 'Đang đăng nhập…',
    'login.failed': 'Sai tên đăng nhập hoặc mật khẩu.',
    'login.locked': 'Tài khoản tạm khoá vì nhập sai quá nhiều lần. Hãy thử lại sau, hoặc nhờ cán bộ xã mở khoá.',
    'login.lockedFor': 'Tài khoản tạm khoá vì nhập sai quá nhiều lần. Hãy thử lại sau {m} phút, hoặc nhờ cán bộ xã mở khoá.',
    'login.wait': 'Bạn đã thử quá nhiều lần. Vui lòng chờ {s} giây rồi thử lại.',
    'login.waitShort': 'Vui lòng chờ {s} giây rồi thử lại.',
    'error.network': 'Không kết nối được máy chủ. Hãy kiểm tra mạng rồi thử lại.',
    'error.generic': 'Có lỗi xảy ra ({code}). Hãy thử lại.',
    'error.expired': 'Phiên đăng nhập đã hết hạn. Hãy đăng nhập lại.',
    'error.forbidden': 'Bạn không có quyền làm việc này.',
    logout: 'Đăng xuất',
    switchLang: 'English',
    switchLangLabel: 'Switch to English',
    'role.admin': 'Quản trị',
    'role.operator': 'Cán bộ xã',
    'role.viewer': 'Người xem',
    'role.service': 'Hệ thống',
    'nav.sensors': 'Cảm biến',
    'nav.speakers': 'Loa phát thanh',
    'nav.schedules': 'Lịch phát',
    'nav.users': 'Tài khoản',
    'nav.overview': 'Toàn cảnh',
    'nav.log': 'Nhật ký phát',
    'nav.alerts': 'Cảnh báo',
    'nav.admin': 'Quản trị',
    'stub.title': 'Phần này sắp có',
    'stub.body': 'Trang web chưa có phần này. Trong lúc chờ, hãy dùng API (xem /docs) hoặc lệnh npx keng trên máy chủ.',
    'sensors.title': 'Cảm biến của bạn',
    'sensors.none': 'Chưa có cảm biến nào trong khu vực của bạn.',
    'sensors.noValues': 'Chưa có số liệu.',
    'live.on': 'Đang cập nhật trực tiếp',
    'live.off': 'Mất kết nối máy chủ, đang thử lại…',
    'device.updated': 'Cập nhật {t}',
    'device.offlineSince': 'Mất kết nối từ {t}',
    'device.neverSeen': 'Chưa từng kết nối',
    'soil.dry': 'Đất khô',
    'soil.ok': 'Đất vừa',
    'soil.wet': 'Đất ẩm',
    'chart.show': 'Xem biểu đồ',
    'chart.hide': 'Ẩn biểu đồ',
    'chart.day': 'Ngày',
    'chart.week': 'Tuần',
    'chart.month': 'Tháng',
    'chart.empty': 'Chưa có số liệu trong khoảng này.',
    'chart.time': 'Thời gian',
    retry: 'Thử lại',
  },
  en: {
    appName: 'Keng',
    tagline: 'The commune\'s field sensors',
    loading: 'Loading…',
    'login.title': 'Log in',
    'login.username': 'Username',
    'login.password': 'Password',
    'login.submit': 'Log in',
    'login.busy': 'Logging in…',
    'login.failed': 'Wrong username or password.',
    'login.locked': 'This account is locked for a while after too many wrong passwords. Try again later, or ask the commune staff to unlock it.',
    'login.lockedFor': 'This account is locked for a while after too many wrong passwords. Try again in {m} minutes, or ask the commune staff to unlock it.',
    'login.wait': 'Too many attempts. Please wait {s} seconds and try again.',
    'login.waitShort': 'Please wait {s} seconds and try again.',
    'error.network': 'Cannot reach the server. Check the network and try again.',
    'error.generic': 'Something went wrong ({code}). Please try again.',
    'error.expired': 'Your session has ended. Please log in again.',
    'error.forbidden': 'You are not allowed to do this.',
    logout: 'Log out',
    switchLang: 'Tiếng Việt',
    switchLangLabel: 'Chuyển sang tiếng Việt',
    'role.admin': 'Administrator',
    'role.operator': 'Commune staff',
    'role.viewer': 'Viewer',
    'role.service': 'System',
    'nav.sensors': 'Sensors',
    'nav.speakers': 'Loudspeakers',
    'nav.schedules': 'Schedules',
    'nav.users': 'Accounts',
    'nav.overview': 'Overview',
    'nav.log': 'Broadcast log',
    'nav.alerts': 'Alerts',
    'nav.admin': 'Administration',
    'stub.title': 'Coming soon',
    'stub.body': 'The web app does not have this part yet. Meanwhile use the API (see /docs) or npx keng on the server.',
    'sensors.title': 'Your sensors',
    'sensors.none': 'There are no sensors in your areas yet.',
    'sensors.noValues': 'No readings yet.',
    'live.on': 'Updating live',
    'live.off': 'Lost the server, retrying…',
    'device.updated': 'Updated {t}',
    'device.offlineSince': 'Offline since {t}',
    'device.neverSeen': 'Never connected',
    'soil.dry': 'Soil dry',
    'soil.ok': 'Soil fine',
    'soil.wet': 'Soil wet',
    'chart.show': 'Show chart',
    'chart.hide': 'Hide chart',
    'chart.day': 'Day',
    'chart.week': 'Week',
    'chart.month': 'Month',
    'chart.empty': 'No readings in this period.',
    'chart.time': 'Time',
    retry: 'Try again',
  },
};

/**
 * Words of a view module, added when it loads (each view owns its words, so
 * the farmer's first visit does not carry the staff screens' dictionary).
 * A key already defined is kept: a view cannot change the shell's words.
 */
export function addStrings(more) {
  for (const lang of Object.keys(DICT)) {
    const into = DICT[lang];
    for (const [k, v] of Object.entries(more[lang] ?? {})) if (!(k in into)) into[k] = v;
  }
}

export function storedLang() {
  try {
    return localStorage.getItem(LANG_KEY) === 'en' ? 'en' : 'vi';
  } catch {
    return 'vi';
  }
}

export function storeLang(lang) {
  try { localStorage.setItem(LANG_KEY, lang); } catch { /* private mode: the switch lasts for this page only */ }
}

/** The commune's time zone, written into the page by the server. */
export function communeTz() {
  return document.querySelector('meta[name="keng-tz"]')?.content || 'Asia/Ho_Chi_Minh';
}

/** Everything that depends on the language: t(key, params) and the formatters. */
export function makeLocale(lang, tz) {
  const dict = DICT[lang] ?? DICT.vi;
  const locale = lang === 'en' ? 'en-GB' : 'vi-VN';
  const numberFormats = new Map();
  const nf = (digits) => {
    let f = numberFormats.get(digits);
    if (!f) numberFormats.set(digits, f = new Intl.NumberFormat(locale, { maximumFractionDigits: digits }));
    return f;
  };
  // Date and time separately: vi-VN's own order is "14:05 06/12/2026", the commune's habit is date first.
  const dateF = new Intl.DateTimeFormat(locale, { timeZone: tz, day: '2-digit', month: '2-digit', year: 'numeric' });
  const dayMonthF = new Intl.DateTimeFormat(locale, { timeZone: tz, day: '2-digit', month: '2-digit' });
  const timeF = new Intl.DateTimeFormat(locale, { timeZone: tz, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  const date = (ms) => dateF.format(ms);
  const time = (ms) => timeF.format(ms);
  return {
    lang,
    locale,
    tz,
    t(key, params) {
      const s = dict[key] ?? DICT.vi[key] ?? key;
      return params ? s.replace(/\{(\w+)\}/g, (_, k) => String(params[k] ?? '')) : s;
    },
    number: (v, digits = 1) => nf(digits).format(v),
    date,
    time,
    dayMonth: (ms) => dayMonthF.format(ms),
    dateTime: (ms) => `${date(ms)} ${time(ms)}`,
    /** "14:05" today, "06/12/2026 14:05" on another day (commune time). */
    when: (ms, now = Date.now()) => (date(ms) === date(now) ? time(ms) : `${date(ms)} ${time(ms)}`),
  };
}
