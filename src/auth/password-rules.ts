/**
 * Which new passwords Keng accepts (user creation, admin reset, self-service
 * change, `keng users add/passwd`). A login is only as strong as the
 * password behind it: the login guard limits guessing to a few attempts an
 * hour per account, so a password has to survive far more guesses than that.
 *
 *  - at least 10 characters (code points: "mật khẩu" counts letters, not bytes), at most 256;
 *  - no space at the start or end (invisible when typed, so easily mistyped
 *    at the next login; also refuses passwords made of spaces only);
 *  - not the username;
 *  - strength score ≥ 3 of 4 from zxcvbn-ts (a maintained estimator of how
 *    many guesses a password takes, with common-password, English and
 *    keyboard-pattern dictionaries), given the username and Keng's own words
 *    as things an attacker would try first. Passphrases of several words
 *    ("lua-nep-cai-hoa-vang") pass; "password123", "12345678901" do not.
 *
 * Refusals are KENG_ERR_WEAK_PASSWORD (400) with a sentence saying what to
 * change and `details.reason` for programs (docs/errors.md).
 */
import { ZxcvbnFactory } from '@zxcvbn-ts/core';
import * as common from '@zxcvbn-ts/language-common';
import * as en from '@zxcvbn-ts/language-en';
import { Errors, withDetails } from '../core/errors.js';

export const PASSWORD_MIN_LENGTH = 10;
export const PASSWORD_MAX_LENGTH = 256;
/** zxcvbn score needed (0-4; 3 = "safely unguessable": about 10^8 guesses or more). */
export const PASSWORD_MIN_SCORE = 3;
/**
 * Only this many characters are scored. zxcvbn's matching grows faster than
 * linearly with length and runs on the event loop (a crafted 256-character
 * password took seconds); 64 characters that are strong are strong enough, and
 * a long password whose first 64 characters are weak ("1111…") is refused.
 */
const SCORED_LENGTH = 64;

/**
 * Words an attacker tries first against a Keng installation: the product, the
 * roles, Vietnamese words for password/admin/commune/loudspeaker, place names
 * and pet phrases that common-password lists (English) miss. Rank = position.
 */
const KENG_WORDS = [
  'keng', 'admin', 'administrator', 'operator', 'viewer', 'service', 'matkhau', 'mat-khau', 'quantri', 'quantrivien',
  'canbo', 'canboxa', 'xa', 'thon', 'loa', 'loaphat', 'phatthanh', 'truyenthanh', 'nongdan', 'nongnghiep',
  'vietnam', 'hanoi', 'saigon', 'hochiminh', 'anhyeuem', 'emyeuanh', 'yeuem', 'yeuanh', 'iloveyou', 'abc123',
];

export type PasswordReason = 'too-short' | 'too-long' | 'spaces' | 'username' | 'guessable';

export interface PasswordProblem {
  reason: PasswordReason;
  /** One sentence for people (English, like every API message). */
  message: string;
  /** For `guessable`: the score (0-4) and zxcvbn's advice. */
  score?: number;
  warning?: string | null;
  suggestions?: string[];
}

let estimator: ZxcvbnFactory | null = null;

/** Built on first use: the dictionaries take ~10 MB and ~0.1 s, needless for a server nobody changes passwords on. */
function zxcvbn(): ZxcvbnFactory {
  estimator ??= new ZxcvbnFactory({
    dictionary: { ...common.dictionary, ...en.dictionary, keng: KENG_WORDS },
    graphs: common.adjacencyGraphs,
    translations: en.translations,
    maxLength: SCORED_LENGTH,
    // The l33t matcher dominates the cost of crafted inputs; 10 substitutions still catch "p@$$w0rd".
    l33tMaxSubstitutions: 10,
  });
  return estimator;
}

/** What an attacker knows of this account: the username, joined up and in parts ("nguyen.van.an" → nguyenvanan, nguyen, van). */
function userInputs(username: string): string[] {
  const name = username.trim().toLowerCase();
  const parts = name.split(/[._-]+/);
  return [...new Set([name, parts.join(''), ...parts.filter((p) => p.length >= 3)])];
}

/** Why a new password is refused, or null when it is acceptable. */
export function checkPassword(username: string, password: string): PasswordProblem | null {
  const length = [...password].length;
  if (password.length > PASSWORD_MAX_LENGTH) return { reason: 'too-long', message: `password must have at most ${PASSWORD_MAX_LENGTH} characters` };
  if (length < PASSWORD_MIN_LENGTH) return { reason: 'too-short', message: `password must have at least ${PASSWORD_MIN_LENGTH} characters` };
  if (/^\s|\s$/u.test(password)) return { reason: 'spaces', message: 'password must not begin or end with a space' };
  const pw = password.normalize('NFC');
  if (pw.toLowerCase() === username.trim().toLowerCase()) return { reason: 'username', message: 'password must not equal the username' };
  const r = zxcvbn().check(pw, userInputs(username));
  if (r.score >= PASSWORD_MIN_SCORE) return null;
  const advice = [r.feedback.warning, ...r.feedback.suggestions].filter((s): s is string => Boolean(s));
  return {
    reason: 'guessable',
    message: `password is too easy to guess (strength ${r.score} of 4, at least ${PASSWORD_MIN_SCORE} needed)`
      + `${advice.length ? `: ${advice.join(' ')}` : ''} A phrase of four or more words is easy to remember and hard to guess.`,
    score: r.score, warning: r.feedback.warning, suggestions: r.feedback.suggestions,
  };
}

/** Why a password is refused (one sentence), or null. */
export function passwordProblem(username: string, password: string): string | null {
  return checkPassword(username, password)?.message ?? null;
}

/** Throws KENG_ERR_WEAK_PASSWORD (400, details.reason …) when the password is refused. */
export function assertPasswordAcceptable(username: string, password: string): void {
  const p = checkPassword(username, password);
  if (!p) return;
  const { message, ...details } = p;
  throw withDetails(Errors.WEAK_PASSWORD(message), { ...details, minLength: PASSWORD_MIN_LENGTH, minScore: PASSWORD_MIN_SCORE });
}
