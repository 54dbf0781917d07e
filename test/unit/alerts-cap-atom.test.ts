/**
 * The Atom 1.0 feed of active public alerts (src/alerts/cap/atom.ts), the
 * index CAP aggregators poll (RFC 4287).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ATOM_NAMESPACE, atomFeed, isActivePublic } from '../../src/alerts/cap/atom.js';
import type { CapAlert } from '../../src/alerts/cap/model.js';
import { parseCapXml } from '../../src/alerts/cap/xml-parse.js';
import { readXmlTree, type XmlNode } from '../../src/alerts/cap/xml-tree.js';

const VN_ALERT = parseCapXml(readFileSync(new URL('../fixtures/cap/vn-flood-warning.xml', import.meta.url))).alert;
const NOW = Date.parse('2025-09-17T06:00:00+07:00');
const alert = (patch: Partial<CapAlert>): CapAlert => ({ ...VN_ALERT, ...patch });
const child = (n: XmlNode, name: string): XmlNode | undefined => n.children.find((c) => c.name === name);
const text = (n: XmlNode | undefined): string | undefined => n?.text.trim();

describe('isActivePublic', () => {
  it.each([
    [{}, true],
    [{ scope: 'Restricted' as const, restriction: 'x' }, false],
    [{ status: 'Test' as const }, false],
    [{ status: 'Exercise' as const }, false],
    [{ expires: NOW }, false],
    [{ expires: undefined }, true],
    [{ msgType: 'Cancel' as const }, true],
  ])('%j → %s', (patch, expected) => {
    expect(isActivePublic(alert(patch), NOW)).toBe(expected);
  });
});

describe('atomFeed', () => {
  const older = alert({ identifier: 'A/1 x', sent: NOW - 3_600_000, headline: undefined, description: undefined });
  const newer = alert({ identifier: 'A-2', sent: NOW - 60_000 });
  const xml = atomFeed([older, newer, alert({ identifier: 'T-1', status: 'Test' }), alert({ identifier: 'E-1', expires: NOW - 1 })], {
    baseUrl: 'https://keng.tanlap.gov.vn/', now: NOW,
  });
  const feed = readXmlTree(xml);
  const entries = feed.children.filter((c) => c.name === 'entry');

  it('is an Atom feed with id, title, updated (the newest alert) and a self link', () => {
    expect(feed).toMatchObject({ name: 'feed', ns: ATOM_NAMESPACE });
    expect(text(child(feed, 'id'))).toBe('https://keng.tanlap.gov.vn/api/v1/alerts.atom');
    expect(text(child(feed, 'title'))).toBe('Cảnh báo khẩn cấp');
    expect(text(child(feed, 'updated'))).toBe('2025-09-17T05:59:00+07:00');
    expect(xml).toContain('<link rel="self" type="application/atom+xml" href="https://keng.tanlap.gov.vn/api/v1/alerts.atom"/>');
  });

  it('has one entry per active public alert, newest first', () => {
    expect(entries.map((e) => text(child(e, 'id')))).toEqual([
      'https://keng.tanlap.gov.vn/api/v1/alerts/A-2.cap.xml',
      'https://keng.tanlap.gov.vn/api/v1/alerts/A%2F1%20x.cap.xml',
    ]);
  });

  it('gives each entry title = headline, updated = sent, author = sender, a CAP link and a summary', () => {
    const e = entries[0]!;
    expect(text(child(e, 'title'))).toBe(VN_ALERT.headline);
    expect(text(child(e, 'updated'))).toBe('2025-09-17T05:59:00+07:00');
    expect(text(child(child(e, 'author')!, 'name'))).toBe('canhbao@tanlap.phutho.gov.vn');
    expect(text(child(e, 'summary'))).toBe(VN_ALERT.description);
    expect(xml).toContain('<link rel="alternate" type="application/cap+xml" href="https://keng.tanlap.gov.vn/api/v1/alerts/A-2.cap.xml"/>');
    expect(e.children.map((c) => c.name)).toEqual(['id', 'title', 'updated', 'author', 'link', 'summary']);
  });

  it('falls back to the event when an alert has no headline or description', () => {
    expect(text(child(entries[1]!, 'title'))).toBe('Lũ quét và sạt lở đất');
    expect(text(child(entries[1]!, 'summary'))).toBe('Lũ quét và sạt lở đất');
  });

  it('is valid with no alert at all (updated = now), and takes its own paths and title', () => {
    const empty = readXmlTree(atomFeed([], {
      baseUrl: 'http://x', now: NOW, tz: 'UTC', title: 'Tân Lập', feedPath: '/feed', capPath: (a) => `/cap/${a.identifier}`,
    }));
    expect(empty.children.map((c) => c.name)).toEqual(['id', 'title', 'updated', 'link']);
    expect(text(child(empty, 'updated'))).toBe('2025-09-16T23:00:00-00:00');
    expect(text(child(empty, 'id'))).toBe('http://x/feed');
    expect(atomFeed([newer], { baseUrl: 'http://x', now: NOW, capPath: (a) => `/cap/${a.identifier}` })).toContain('href="http://x/cap/A-2"');
  });
});
