/**
 * Hostile XML (src/alerts/cap/xml-tree.ts): nothing is resolved, everything
 * dangerous is refused with KENG_ERR_CAP_FORBIDDEN_XML (400) and a reason.
 * The network side (an entity or XInclude aimed at a local HTTP server that
 * records hits) is test/integration/alerts-cap-xxe.test.ts.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MAX_CAP_XML_BYTES, MAX_XML_DEPTH, parseCapXml } from '../../src/alerts/cap/xml-parse.js';

const VALID = readFileSync(new URL('../fixtures/cap/vn-flood-warning.xml', import.meta.url), 'utf8');
const DECL = '<?xml version="1.0" encoding="UTF-8"?>';
const BODY = VALID.slice(VALID.indexOf('<alert'));

/** The valid message with `prolog` before <alert> and `text` put into the Vietnamese headline. */
const hostile = (prolog: string, text = ''): string =>
  `${DECL}\n${prolog}\n${BODY.replace('<headline>Cảnh báo khẩn cấp', `<headline>${text}Cảnh báo khẩn cấp`)}`;

function refusal(xml: string): { code: string; statusCode: number; message: string; details: any } {
  try {
    parseCapXml(xml);
  } catch (e) {
    return e as any;
  }
  throw new Error('parsed without error');
}

function expectForbidden(xml: string, reason: string): void {
  const e = refusal(xml);
  expect({ code: e.code, statusCode: e.statusCode, reason: e.details?.reason }).toEqual({ code: 'KENG_ERR_CAP_FORBIDDEN_XML', statusCode: 400, reason });
}

describe('CAP XML: DTDs and entities are refused, never resolved', () => {
  it('a plain DOCTYPE, even without any declaration', () => {
    expectForbidden(hostile('<!DOCTYPE alert>'), 'doctype');
    expectForbidden(hostile('<!DOCTYPE alert PUBLIC "-//X//DTD CAP//EN" "cap.dtd">'), 'doctype');
  });

  it('an external entity pointing at /etc/passwd (XXE): refused, the file never read', () => {
    const e = refusal(hostile('<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', '&xxe;'));
    expect(e.details).toEqual({ reason: 'entity-declaration' });
    expect(JSON.stringify(e)).not.toMatch(/root:|nologin/);
    expect(e.message).not.toMatch(/root:|nologin/);
  });

  it('billion laughs (nested internal entities): refused at once', () => {
    const lol = ['<!ENTITY lol0 "lol">'];
    for (let i = 1; i <= 9; i++) lol.push(`<!ENTITY lol${i} "${`&lol${i - 1};`.repeat(10)}">`);
    const started = process.hrtime.bigint();
    expectForbidden(hostile(`<!DOCTYPE alert [${lol.join('')}]>`, '&lol9;'), 'entity-declaration');
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(1000);
  });

  it('parameter entities (the out-of-band XXE route)', () => {
    expectForbidden(hostile('<!DOCTYPE alert [<!ENTITY % ext SYSTEM "file:///etc/hostname"> %ext;]>'), 'parameter-entity');
    expectForbidden(hostile('<!DOCTYPE alert [%ext;]>'), 'parameter-entity');
  });

  it('a reference to an undeclared entity (HTML habits such as &nbsp;)', () => {
    expectForbidden(hostile('', '&nbsp;'), 'entity-reference');
    expectForbidden(hostile('').replace('<alert ', '<alert data="&x;" '), 'entity-reference');
  });

  it('keeps the five predefined entities and character references working', () => {
    const { alert } = parseCapXml(hostile('', 'A &amp; B &lt;&gt; &quot;&apos; &#x1EA1;&#7841; '));
    expect(alert.headline).toMatch(/^A & B <> "' ạạ Cảnh báo/);
  });
});

describe('CAP XML: other constructs that fetch or process', () => {
  it('processing instructions other than the XML declaration', () => {
    expectForbidden(hostile('<?xml-stylesheet type="text/xsl" href="http://127.0.0.1/x.xsl"?>'), 'processing-instruction');
    expectForbidden(hostile('').replace('<info>', '<info><?php system("id"); ?>'), 'processing-instruction');
  });

  it('XInclude elements (2001 and the 2003 draft namespace) and XInclude attributes', () => {
    const inc = (ns: string) => hostile('').replace('<info>', `<info><xi:include xmlns:xi="${ns}" href="file:///etc/passwd" parse="text"/>`);
    expectForbidden(inc('http://www.w3.org/2001/XInclude'), 'xinclude');
    expectForbidden(inc('http://www.w3.org/2003/XInclude'), 'xinclude');
    expectForbidden(hostile('').replace('<info>', '<info xmlns:xi="http://www.w3.org/2001/XInclude" xi:href="x">'), 'xinclude');
  });

  it(`nesting deeper than ${MAX_XML_DEPTH} levels`, () => {
    const deep = `${'<x>'.repeat(10_000)}${'</x>'.repeat(10_000)}`;
    expectForbidden(hostile('').replace('<info>', `<info>${deep}`), 'too-deep');
    expectForbidden(`<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">${'<x>'.repeat(MAX_XML_DEPTH)}${'</x>'.repeat(MAX_XML_DEPTH)}</alert>`, 'too-deep');
  });

  it(`input over ${MAX_CAP_XML_BYTES} bytes: 413 before parsing`, () => {
    const big = hostile('', 'x'.repeat(MAX_CAP_XML_BYTES));
    const e = refusal(big);
    expect({ code: e.code, statusCode: e.statusCode }).toEqual({ code: 'KENG_ERR_PAYLOAD_TOO_LARGE', statusCode: 413 });
    expect(e.details).toEqual({ size: Buffer.byteLength(big), limit: MAX_CAP_XML_BYTES });
    // Counted in bytes: Vietnamese letters take 2-3 bytes of UTF-8 each.
    expect(refusal(hostile('', 'ạ'.repeat(MAX_CAP_XML_BYTES / 3))).code).toBe('KENG_ERR_PAYLOAD_TOO_LARGE');
  });
});
