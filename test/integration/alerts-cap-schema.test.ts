/**
 * The CAP Keng writes is valid against the OASIS CAP 1.2 schema
 * (test/fixtures/cap/CAP-v1.2.xsd), checked by an independent validator:
 * libxml2 through python3-lxml (Debian's, run with /usr/bin/python3; in
 * scripts/system-deps.txt). Fails, never skips, when lxml is missing.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { newCapAlert, parseCapXml, validateAlertBody, writeCapXml } from '../../src/alerts/cap/index.js';

const PYTHON = '/usr/bin/python3';
const DIR = new URL('../fixtures/cap/', import.meta.url);
const XSD = fileURLToPath(new URL('CAP-v1.2.xsd', DIR));
const FIXTURES = readdirSync(DIR).filter((f) => f.endsWith('.xml'));

// Documents as a JSON list on stdin, one verdict per document on stdout. No network, no entities.
const SCRIPT = String.raw`
import json, sys
from lxml import etree
parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
schema = etree.XMLSchema(etree.parse(sys.argv[1], parser))
out = []
for doc in json.load(sys.stdin):
    ok = schema.validate(etree.fromstring(doc.encode('utf-8'), parser))
    out.append({'ok': ok, 'errors': [e.message for e in schema.error_log]})
print(json.dumps(out))
`;

function validate(docs: string[]): Array<{ ok: boolean; errors: string[] }> {
  return JSON.parse(execFileSync(PYTHON, ['-c', SCRIPT, XSD], { input: JSON.stringify(docs), encoding: 'utf8', timeout: 30_000 }));
}

const NOW = Date.parse('2025-09-17T05:00:00+07:00');
function fromJson(body: Record<string, unknown>) {
  const r = validateAlertBody(body, { now: NOW, areaName: (c) => `Thôn ${c}` });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return newCapAlert(r.value, { identifier: 'vn.tanlap.2025-0917-002', sender: 'canhbao@tanlap.phutho.gov.vn', sent: NOW });
}
const BODY = {
  status: 'Actual', msgType: 'Alert', event: 'Lũ quét', severity: 'Extreme', urgency: 'Immediate', certainty: 'Likely',
  headline: 'Cảnh báo lũ quét', areas: ['tanlap.dong-gianh'], expires: '2025-09-18T18:00:00+07:00',
};

describe('CAP 1.2 schema validity (lxml)', () => {
  it('the validator works: the vendored fixtures pass, a message out of order fails', () => {
    const fixtures = FIXTURES.map((f) => readFileSync(new URL(f, DIR), 'utf8'));
    const outOfOrder = fixtures[0]!.replace(/(<sender>.*<\/sender>)\s*(<sent>.*<\/sent>)/, '$2$1');
    const zulu = fixtures[0]!.replace('2003-04-02T14:39:01-05:00', '2003-04-02T19:39:01Z');
    const verdicts = validate([...fixtures, outOfOrder, zulu]);
    expect(verdicts.slice(0, fixtures.length).map((v) => v.ok)).toEqual(fixtures.map(() => true));
    expect(verdicts[fixtures.length]).toMatchObject({ ok: false, errors: [expect.stringContaining('sent')] });
    expect(verdicts[fixtures.length + 1]).toMatchObject({ ok: false, errors: [expect.stringContaining('pattern')] });
  });

  it('every fixture parsed and written again is valid, in the commune zone and in UTC', () => {
    const docs = FIXTURES.flatMap((f) => {
      const { alert } = parseCapXml(readFileSync(new URL(f, DIR)));
      return [writeCapXml(alert), writeCapXml(alert, { tz: 'UTC', pretty: false })];
    });
    const verdicts = validate(docs);
    expect(verdicts.map((v, i) => ({ doc: i, ...v }))).toEqual(docs.map((_, i) => ({ doc: i, ok: true, errors: [] })));
  });

  it('alerts made from JSON bodies are valid, the minimal one and one with every field', () => {
    const docs = [
      writeCapXml(fromJson(BODY)),
      writeCapXml(fromJson({
        ...BODY, msgType: 'Update', scope: 'Restricted', restriction: 'Cán bộ xã', category: ['Met', 'Safety'], responseType: ['Evacuate'],
        senderName: 'UBND xã Tân Lập', description: 'Nước lên nhanh', instruction: 'Sơ tán ngay', web: 'https://tanlap.gov.vn/a?x=1&y=2',
        contact: '0210 3888 115', note: 'Thay bản tin trước', effective: '2025-09-17T05:00:00+07:00', onset: '2025-09-17T08:00:00+07:00',
        language: 'vi', content: { ttsText: 'Lũ quét <khẩn> & sơ tán' }, repeat: 3, areas: ['tanlap.dong-gianh', 'tanlap.ben-dinh'],
        references: ['canhbao@tanlap.phutho.gov.vn,vn.tanlap.2025-0917-001,2025-09-17T04:30:00+07:00'],
      })),
      writeCapXml(fromJson({ ...BODY, scope: 'Private', addresses: 'ubnd@tanlap "Trưởng thôn"', content: { mediaId: 'media-1' } }), { tz: 'UTC' }),
    ];
    expect(validate(docs)).toEqual(docs.map(() => ({ ok: true, errors: [] })));
  });
});
