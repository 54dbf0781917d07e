/**
 * The Atom 1.0 feed (RFC 4287) of the commune's active public alerts: the
 * index that alert aggregators (Google Public Alerts, the WMO Alert Hub) poll,
 * one <entry> per alert linking to its CAP message (type application/cap+xml),
 * as the OASIS "CAP feeds" note and the aggregators' guides describe. Nothing
 * of the CAP message is embedded: aggregators fetch it from the link.
 *
 * Pure: the alerts, the base URL and the current time in, the XML text out.
 */
import { create } from 'xmlbuilder2';
import { DEFAULT_TIME_ZONE, formatCapTime } from '../../core/time.js';
import type { CapAlert } from './model.js';

export const ATOM_NAMESPACE = 'http://www.w3.org/2005/Atom';
/** The media type of a CAP message (IANA registration by OASIS). */
export const CAP_MEDIA_TYPE = 'application/cap+xml';
export const DEFAULT_FEED_PATH = '/api/v1/alerts.atom';
export const DEFAULT_FEED_TITLE = 'Cảnh báo khẩn cấp';

export interface AtomOptions {
  /** Where Keng is reached from outside, e.g. "https://keng.tanlap.gov.vn" (a trailing "/" is dropped). */
  baseUrl: string;
  /** Current time, epoch ms: alerts that expired by then are left out. */
  now: number;
  /** Zone of the written times; default Asia/Ho_Chi_Minh (config.tz). */
  tz?: string;
  title?: string;
  /** Path of the feed itself (its id and rel="self" link). */
  feedPath?: string;
  /** Path of an alert's CAP message; default /api/v1/alerts/{identifier}.cap.xml. */
  capPath?: (alert: CapAlert) => string;
}

/**
 * Whether an alert belongs in the public feed: scope Public (§3.2.1: "For
 * general dissemination to unrestricted audiences"), status Actual (exercises
 * and tests must not reach the public through aggregators), not expired.
 * A Cancel stays until it expires: that is how aggregators learn of it.
 */
export function isActivePublic(a: CapAlert, now: number): boolean {
  return a.scope === 'Public' && a.status === 'Actual' && (a.expires === undefined || a.expires > now);
}

export const defaultCapPath = (a: CapAlert): string => `/api/v1/alerts/${encodeURIComponent(a.identifier)}.cap.xml`;

/** The feed, newest alert first. */
export function atomFeed(alerts: readonly CapAlert[], opts: AtomOptions): string {
  const tz = opts.tz ?? DEFAULT_TIME_ZONE;
  const base = opts.baseUrl.replace(/\/+$/, '');
  const selfUrl = base + (opts.feedPath ?? DEFAULT_FEED_PATH);
  const capPath = opts.capPath ?? defaultCapPath;
  const shown = alerts.filter((a) => isActivePublic(a, opts.now)).sort((x, y) => y.sent - x.sent);
  // RFC 4287 §4.2.15: the feed's updated is its latest significant change: the newest alert, or now when there is none.
  const updated = shown.length > 0 ? shown[0]!.sent : opts.now;

  const doc = create({ version: '1.0', encoding: 'UTF-8' });
  const feed = doc.ele(ATOM_NAMESPACE, 'feed');
  feed.ele('id').txt(selfUrl);
  feed.ele('title').txt(opts.title ?? DEFAULT_FEED_TITLE);
  feed.ele('updated').txt(formatCapTime(updated, tz));
  feed.ele('link', { rel: 'self', type: 'application/atom+xml', href: selfUrl });
  for (const a of shown) {
    const href = base + capPath(a);
    const entry = feed.ele('entry');
    // The CAP message's URL: unique and permanent, as RFC 4287 §4.2.6 asks of an entry id.
    entry.ele('id').txt(href);
    entry.ele('title').txt(a.headline ?? a.event);
    entry.ele('updated').txt(formatCapTime(a.sent, tz));
    entry.ele('author').ele('name').txt(a.sender);
    entry.ele('link', { rel: 'alternate', type: CAP_MEDIA_TYPE, href });
    entry.ele('summary').txt(a.description ?? a.headline ?? a.event);
  }
  return doc.end({ prettyPrint: true });
}
