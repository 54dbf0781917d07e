/**
 * CAP 1.2 XML out (src/alerts/cap/xml-write.ts): what is read is written
 * back unchanged, in the schema's element order. Validity against the OASIS
 * XSD itself is checked with lxml in test/integration/alerts-cap-schema.test.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { CapAlert } from '../../src/alerts/cap/model.js';
import { parseCapXml } from '../../src/alerts/cap/xml-parse.js';
import { readXmlTree, type XmlNode } from '../../src/alerts/cap/xml-tree.js';
import { writeCapXml } from '../../src/alerts/cap/xml-write.js';

const DIR = new URL('../fixtures/cap/', import.meta.url);
const FIXTURES = readdirSync(DIR).filter((f) => f.endsWith('.xml'));
const read = (f: string): CapAlert => parseCapXml(readFileSync(new URL(f, DIR))).alert;
const names = (n: XmlNode | undefined): string[] => (n ? n.children.map((c) => c.name) : []);
/** `names` in the order of `order`, repeats kept: what a sequence of the schema looks like. */
const inOrder = (got: string[], order: string[]): boolean => got.every((n, i) => i === 0 || order.indexOf(got[i - 1]!) <= order.indexOf(n));

// CAP-v1.2.xsd sequences.
const ALERT = ['identifier', 'sender', 'sent', 'status', 'msgType', 'source', 'scope', 'restriction', 'addresses', 'code', 'note', 'references', 'incidents', 'info'];
const INFO = ['language', 'category', 'event', 'responseType', 'urgency', 'severity', 'certainty', 'audience', 'eventCode', 'effective', 'onset', 'expires',
  'senderName', 'headline', 'description', 'instruction', 'web', 'contact', 'parameter', 'resource', 'area'];
const AREA = ['areaDesc', 'polygon', 'circle', 'geocode', 'altitude', 'ceiling'];

describe('writeCapXml', () => {
  it.each(FIXTURES)('%s: parse → write → parse gives the same alert', (f) => {
    const alert = read(f);
    expect(parseCapXml(writeCapXml(alert)).alert).toEqual(alert);
    expect(parseCapXml(writeCapXml(alert, { pretty: false })).alert).toEqual(alert);
  });

  it.each(FIXTURES)('%s: elements in the schema order', (f) => {
    const root = readXmlTree(writeCapXml(read(f)));
    expect(root).toMatchObject({ name: 'alert', ns: 'urn:oasis:names:tc:emergency:cap:1.2' });
    expect(inOrder(names(root), ALERT)).toBe(true);
    const info = root.children.find((c) => c.name === 'info');
    expect(inOrder(names(info), INFO)).toBe(true);
    for (const area of info!.children.filter((c) => c.name === 'area')) expect(inOrder(names(area), AREA)).toBe(true);
    // Every element is a CAP element: the namespace is inherited, never reset.
    const all = (n: XmlNode): XmlNode[] => [n, ...n.children.flatMap(all)];
    expect(all(root).filter((n) => n.ns !== 'urn:oasis:names:tc:emergency:cap:1.2')).toEqual([]);
  });

  it('writes the times in the given zone, UTC as -00:00 (CAP 1.2 §3.2.1)', () => {
    const alert = read('oasis-a2-severe-thunderstorm.xml');
    expect(writeCapXml(alert)).toContain('<sent>2003-06-18T04:57:00+07:00</sent>');
    const utc = writeCapXml(alert, { tz: 'UTC' });
    expect(utc).toContain('<sent>2003-06-17T21:57:00-00:00</sent>');
    expect(utc).toContain('<expires>2003-06-17T23:00:00-00:00</expires>');
  });

  it('writes Keng areas as keng:area geocodes, before the other geocodes', () => {
    const alert = read('oasis-a2-severe-thunderstorm.xml');
    alert.areas[0]!.areaCodes = ['tanlap.dong-gianh'];
    const area = readXmlTree(writeCapXml(alert)).children.find((c) => c.name === 'info')!.children.find((c) => c.name === 'area')!;
    const geocodes = area.children.filter((c) => c.name === 'geocode').map((g) => g.children.map((c) => c.text).join('='));
    expect(geocodes).toEqual(['keng:area=tanlap.dong-gianh', 'SAME=006109', 'SAME=006009', 'SAME=006003']);
  });

  it('writes what plays as keng:* parameters, after the other parameters', () => {
    const alert: CapAlert = { ...read('oasis-a1-homeland-security.xml'), repeat: 2, content: { ttsText: 'Sơ tán <ngay> & giữ bình tĩnh' } };
    const xml = writeCapXml(alert);
    expect(xml).toMatch(/HSAS[\s\S]*keng:repeat<\/valueName>\s*<value>2<[\s\S]*keng:ttsText<\/valueName>\s*<value>Sơ tán &lt;ngay&gt; &amp; giữ bình tĩnh</);
    expect(parseCapXml(xml).alert.content).toEqual({ ttsText: 'Sơ tán <ngay> & giữ bình tĩnh' });
  });

  it('refuses to write a character XML cannot carry', () => {
    expect(() => writeCapXml({ ...read('oasis-a1-homeland-security.xml'), note: 'a\u0007b' })).toThrow(/note holds a character/);
  });
});
