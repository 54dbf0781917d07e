/**
 * CAP 1.2 XML in (src/alerts/cap/xml-parse.ts): the OASIS appendix examples
 * and a Vietnamese warning read into CapAlert and area hints; invalid CAP
 * refused with every problem listed (KENG_ERR_CAP_INVALID), broken XML with
 * KENG_ERR_VALIDATION.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseCapXml } from '../../src/alerts/cap/xml-parse.js';

const fixture = (name: string): string => readFileSync(new URL(`../fixtures/cap/${name}`, import.meta.url), 'utf8');
const at = (iso: string): number => Date.parse(iso);

function refusal(xml: string | Uint8Array): { code: string; statusCode: number; message: string; details: any } {
  try {
    parseCapXml(xml);
  } catch (e) {
    return e as any;
  }
  throw new Error('parsed without error');
}

/** A minimal valid message with `info` and alert-level `extra` spliced in. */
function cap(info: string, extra = '', header = ''): string {
  return `<?xml version="1.0" encoding="UTF-8"?>${header}
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>KENG-1</identifier><sender>keng@example.vn</sender><sent>2025-09-17T05:30:00+07:00</sent>
  <status>Actual</status><msgType>Alert</msgType><scope>Public</scope>${extra}
  <info>${info}</info>
</alert>`;
}
const INFO = '<category>Met</category><event>Lũ</event><urgency>Immediate</urgency><severity>Severe</severity><certainty>Likely</certainty>';

describe('parseCapXml: the OASIS CAP 1.2 appendix examples', () => {
  it('A.1 homeland security advisory: alert fields, parameter, resource, an area without geometry', () => {
    const { alert, hints } = parseCapXml(fixture('oasis-a1-homeland-security.xml'));
    expect(alert).toMatchObject({
      identifier: '43b080713727', sender: 'hsas@dhs.gov', sent: at('2003-04-02T19:39:01Z'),
      status: 'Actual', msgType: 'Alert', scope: 'Public', language: 'en-US', categories: ['Security'],
      event: 'Homeland Security Advisory System Update', urgency: 'Immediate', severity: 'Severe', certainty: 'Likely',
      senderName: 'U.S. Government, Department of Homeland Security', headline: 'Homeland Security Sets Code ORANGE',
      web: 'http://www.dhs.gov/dhspublic/display?theme=29',
      parameters: [{ valueName: 'HSAS', value: 'ORANGE' }],
      resources: [{ resourceDesc: 'Image file (GIF)', mimeType: 'image/gif', uri: 'http://www.dhs.gov/dhspublic/getAdvisoryImage' }],
      repeat: 1,
    });
    expect(alert.instruction).toMatch(/^A High Condition/); // leading space trimmed
    expect(alert.expires).toBeUndefined();
    expect(alert.content).toBeUndefined();
    expect(hints).toEqual({ areaCodes: [], polygons: [], circles: [], descriptions: ['U.S. nationwide and interests worldwide'] });
  });

  it('A.2 severe thunderstorm: responseType, eventCode, expires, a polygon and SAME geocodes', () => {
    const { alert, hints } = parseCapXml(fixture('oasis-a2-severe-thunderstorm.xml'));
    expect(alert.responseTypes).toEqual(['Shelter']);
    expect(alert.eventCodes).toEqual([{ valueName: 'SAME', value: 'SVR' }]);
    expect(alert.expires).toBe(at('2003-06-17T23:00:00Z'));
    expect(alert.areas[0]!.geocodes.map((g) => g.value)).toEqual(['006109', '006009', '006003']);
    expect(alert.areas[0]!.areaCodes).toEqual([]);
    expect(hints.polygons).toEqual([[
      { lat: 38.47, lon: -120.14 }, { lat: 38.34, lon: -119.95 }, { lat: 38.52, lon: -119.74 }, { lat: 38.62, lon: -119.89 }, { lat: 38.47, lon: -120.14 },
    ]]);
  });

  it('A.3 earthquake update: references and a circle of radius 0', () => {
    const { alert, hints } = parseCapXml(fixture('oasis-a3-earthquake-update.xml'));
    expect(alert.msgType).toBe('Update');
    expect(alert.references).toEqual([{ sender: 'trinet@caltech.edu', identifier: 'TRI13970876.1', sent: '2003-06-11T20:30:00-07:00' }]);
    expect(alert.parameters.map((p) => p.valueName)).toEqual(['EventID', 'Version', 'Magnitude', 'Depth', 'Quality']);
    expect(hints.circles).toEqual([{ center: { lat: 32.9525, lon: -115.5527 }, radiusKm: 0 }]);
  });

  it('A.4 AMBER alert in two languages, none Vietnamese: the first <info> is kept', () => {
    const r = parseCapXml(fixture('oasis-a4-amber-multilingual.xml'));
    expect(r).toMatchObject({ infoCount: 2, infoIndex: 0 });
    expect(r.alert).toMatchObject({ source: 'SW', language: 'en-US', event: 'Child Abduction', headline: 'Amber Alert in Los Angeles County' });
  });
});

describe('parseCapXml: a Vietnamese commune warning', () => {
  const r = parseCapXml(fixture('vn-flood-warning.xml'));

  it('keeps the Vietnamese <info> although English comes first', () => {
    expect(r).toMatchObject({ infoCount: 2, infoIndex: 1 });
    expect(r.alert.language).toBe('vi-VN');
    expect(r.alert.event).toBe('Lũ quét và sạt lở đất');
    expect(r.alert.headline).toBe('Cảnh báo khẩn cấp: lũ quét, sạt lở đất tại các thôn ven suối Ngòi Lao');
    expect(r.alert.categories).toEqual(['Met', 'Safety']);
  });

  it('reads times, keng:repeat and the area hints (codes, polygon, circle)', () => {
    expect(r.alert).toMatchObject({
      sent: at('2025-09-16T22:30:00Z'), effective: at('2025-09-16T22:30:00Z'), onset: at('2025-09-17T01:00:00Z'), expires: at('2025-09-18T11:00:00Z'),
      repeat: 3, parameters: [],
    });
    expect(r.hints.areaCodes).toEqual(['tanlap.dong-gianh', 'tanlap.ben-dinh']);
    expect(r.hints.polygons).toHaveLength(1);
    expect(r.hints.polygons[0]).toHaveLength(6);
    expect(r.hints.circles).toEqual([{ center: { lat: 21.3289, lon: 105.1342 }, radiusKm: 1.5 }]);
    expect(r.hints.descriptions).toEqual(['Thôn Đồng Gianh, xã Tân Lập', 'Thôn Bến Đình, xã Tân Lập']);
  });

  it('takes bytes as UTF-8, with or without a BOM', () => {
    const bytes = Buffer.from(fixture('vn-flood-warning.xml'), 'utf8');
    expect(parseCapXml(bytes).alert.event).toBe('Lũ quét và sạt lở đất');
    expect(parseCapXml(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes])).alert.event).toBe('Lũ quét và sạt lở đất');
  });
});

describe('parseCapXml: invalid CAP (422, every problem listed)', () => {
  const fields = (xml: string): string[] => {
    const e = refusal(xml);
    expect(e.code).toBe('KENG_ERR_CAP_INVALID');
    expect(e.statusCode).toBe(422);
    return e.details.map((d: { field: string }) => d.field);
  };

  it('a minimal message is accepted', () => {
    expect(parseCapXml(cap(INFO)).alert.event).toBe('Lũ');
  });

  it('lists missing required elements and bad code values together', () => {
    const xml = `<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><sender>a@b</sender><sent>2025-09-17T05:30:00+07:00</sent>
      <status>Real</status><msgType>Alert</msgType><scope>Public</scope>
      <info><category>Weather</category><event>x</event><urgency>Now</urgency><severity>Severe</severity></info></alert>`;
    const e = refusal(xml);
    expect(e.details).toEqual(expect.arrayContaining([
      { field: 'identifier', message: 'is required' },
      { field: 'status', message: expect.stringContaining('"Real" is not one of: Actual, Exercise, System, Test, Draft') },
      { field: 'info.certainty', message: 'is required' },
      { field: 'info.category[0]', message: expect.stringContaining('"Weather" is not one of') },
      { field: 'info.urgency', message: expect.stringContaining('"Now" is not one of') },
    ]));
    expect(e.message).toContain('identifier: is required');
  });

  it.each([
    ['2025-09-17T05:30:00Z', 'a "Z"'],
    ['2025-09-17T05:30:00.000+07:00', 'a fraction'],
    ['2025-09-17T05:30:00', 'no offset'],
    ['17/09/2025 05:30', 'not ISO'],
  ])('refuses sent %s (%s): CAP 1.2 §3.3.2', (sent) => {
    const e = refusal(cap(INFO).replace('2025-09-17T05:30:00+07:00', sent));
    expect(e.details).toEqual([{ field: 'sent', message: expect.stringContaining('YYYY-MM-DDThh:mm:ss±hh:mm') }]);
  });

  it('names CAP values Keng does not take (System, Draft, Ack, Error) as such', () => {
    const e = refusal(cap(INFO).replace('<status>Actual</status>', '<status>Draft</status>').replace('<msgType>Alert</msgType>', '<msgType>Ack</msgType>'));
    expect(e.details).toEqual([
      { field: 'status', message: '"Draft" is valid CAP but Keng takes only Actual, Exercise, Test' },
      { field: 'msgType', message: '"Ack" is valid CAP but Keng takes only Alert, Update, Cancel' },
    ]);
  });

  it('refuses another root or namespace (e.g. CAP 1.1)', () => {
    expect(fields(cap(INFO).replace('emergency:cap:1.2', 'emergency:cap:1.1'))).toEqual(['']);
    expect(refusal('<feed xmlns="http://www.w3.org/2005/Atom"/>').message).toContain('root element must be <alert>');
  });

  it('refuses repeated, unknown and foreign elements, and stray text', () => {
    expect(fields(cap(INFO, '<scope>Public</scope><color>red</color><x:y xmlns:x="urn:x"/>'))).toEqual(['color', 'y', 'scope']);
    expect(fields(cap(`${INFO}<headline>a</headline><headline>b</headline>`))).toEqual(['info.headline']);
    expect(fields(cap(`${INFO}stray`))).toEqual(['info']);
    expect(fields(cap(INFO.replace('<event>Lũ</event>', '<event><b>Lũ</b></event>')))).toEqual(['info.event']);
  });

  it('accepts an XML signature after <info> (not verified, not kept)', () => {
    const sig = '<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/></Signature>';
    expect(parseCapXml(cap(INFO).replace('</alert>', `${sig}</alert>`)).alert.identifier).toBe('KENG-1');
  });

  it('checks identifier, sender and references (CAP 1.2 §3.2.1)', () => {
    const e = refusal(cap(INFO, '<references>a@b,ID-1,2025-09-17T05:30:00+07:00 a@b,ID-2 a b c</references>')
      .replace('<identifier>KENG-1</identifier>', '<identifier>KENG 1</identifier>').replace('keng@example.vn', 'keng,example'));
    expect(e.details.map((d: { field: string }) => d.field)).toEqual(['identifier', 'sender', 'references[1]', 'references[2]', 'references[3]', 'references[4]']);
  });

  it('checks scope Restricted/Private against restriction/addresses', () => {
    expect(fields(cap(INFO).replace('<scope>Public</scope>', '<scope>Restricted</scope>'))).toEqual(['restriction']);
    expect(fields(cap(INFO).replace('<scope>Public</scope>', '<scope>Private</scope>'))).toEqual(['addresses']);
    expect(parseCapXml(cap(INFO).replace('<scope>Public</scope>', '<scope>Private</scope><addresses>ubnd@tanlap</addresses>')).alert.addresses).toBe('ubnd@tanlap');
  });

  it('checks areas: areaDesc, polygon ring, circle, keng:area codes, ceiling without altitude', () => {
    const area = `<area><polygon>21,105 21,106 22,106 21,105</polygon><polygon>21,105 21,106 22,106 22,105</polygon>
      <circle>21,105</circle><geocode><valueName>keng:area</valueName><value>bad code!</value></geocode><ceiling>10</ceiling></area>`;
    const e = refusal(cap(`${INFO}${area}`));
    expect(e.details).toEqual([
      { field: 'info.area[0].areaDesc', message: 'is required' },
      { field: 'info.area[0].polygon[1]', message: expect.stringContaining('closed ring') },
      { field: 'info.area[0].circle[0]', message: expect.stringContaining('lat,lon radiusKm') },
      { field: 'info.area[0].geocode[0].value', message: '"bad code!" is not a Keng area code' },
      { field: 'info.area[0].ceiling', message: 'is only allowed together with altitude' },
    ]);
  });

  it('checks Keng parameters: repeat 1-10, one content', () => {
    const p = (n: string, v: string) => `<parameter><valueName>${n}</valueName><value>${v}</value></parameter>`;
    expect(fields(cap(`${INFO}${p('keng:repeat', '11')}`))).toEqual(['info.parameter[0]']);
    expect(fields(cap(`${INFO}${p('keng:mediaId', 'm1')}${p('keng:ttsText', 'Sơ tán')}`))).toEqual(['info.parameter[1]']);
    const ok = parseCapXml(cap(`${INFO}${p('keng:repeat', '2')}${p('keng:ttsText', 'Sơ tán ngay')}${p('other', '')}`)).alert;
    expect(ok).toMatchObject({ repeat: 2, content: { ttsText: 'Sơ tán ngay' }, parameters: [{ valueName: 'other', value: '' }] });
  });

  it('requires an <info>: Keng broadcasts what it says', () => {
    expect(fields(cap(INFO).replace(/<info>.*<\/info>/s, ''))).toEqual(['info']);
  });

  it('reports the kept block by index when there are several', () => {
    const xml = cap(`${INFO}<language>en</language>`).replace('</alert>', `<info><language>vi</language>${INFO.replace('Immediate', 'Soon')}</info></alert>`);
    expect(fields(xml)).toEqual(['info[1].urgency']);
  });
});

describe('parseCapXml: XML that is not well-formed (400)', () => {
  it.each([
    ['<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>x</alert>', 'unclosed element'],
    ['', 'empty'],
    ['not xml at all', 'text'],
    ['<a:alert/>', 'unbound prefix'],
    ['<alert>&#0;</alert>', 'bad character reference'],
  ])('%j (%s) → KENG_ERR_VALIDATION', (xml) => {
    const e = refusal(xml);
    expect(e.code).toBe('KENG_ERR_VALIDATION');
    expect(e.statusCode).toBe(400);
    expect(e.message).toContain('not well-formed XML');
  });

  it('refuses bytes that are not UTF-8 and other declared encodings', () => {
    expect(refusal(Buffer.from([0x3c, 0x61, 0xff, 0x3e])).message).toContain('not UTF-8');
    expect(refusal('<?xml version="1.0" encoding="ISO-8859-1"?><alert/>').message).toContain('send UTF-8');
  });
});
