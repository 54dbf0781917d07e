/**
 * XXE and friends against a real listener: every way XML has of reaching out
 * (external entities, external DTDs, parameter entities, XInclude, a
 * stylesheet PI, xsi:schemaLocation) points at a local HTTP server that
 * records each request. The CAP reader must refuse them (or, for
 * schemaLocation, simply ignore it) and the server must see nothing. Two
 * controls show that silence means something: the server records a plain
 * request, and lxml told to resolve entities does fetch the payload's URL.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCapXml } from '../../src/alerts/cap/index.js';

const SECRET = 'KENG-XXE-CANARY-7f3a';
const BODY = readFileSync(new URL('../fixtures/cap/vn-flood-warning.xml', import.meta.url), 'utf8').replace(/^[\s\S]*?(?=<alert)/, '');

let server: Server;
let base = '';
const hits: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    res.setHeader('content-type', 'application/xml');
    res.end(req.url?.startsWith('/dtd') ? `<!ENTITY leak "${SECRET}">` : SECRET);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.close();
  await once(server, 'close');
});

/** The Vietnamese warning with `prolog` before <alert> and `inner` at the start of its headline. */
const doc = (prolog: string, inner = ''): string =>
  `<?xml version="1.0" encoding="UTF-8"?>\n${prolog}\n${BODY.replace('<headline>Cảnh báo', `<headline>${inner}Cảnh báo`)}`;

function outcome(xml: string): { code?: string; reason?: string; text: string } {
  try {
    const r = parseCapXml(xml);
    return { text: JSON.stringify(r) };
  } catch (e) {
    const err = e as { code: string; details?: { reason?: string }; message: string };
    return { code: err.code, reason: err.details?.reason, text: `${err.message} ${JSON.stringify(err)}` };
  }
}

describe('CAP XML never reaches the network or the file system', () => {
  const cases = (): Array<[string, string, string]> => [
    ['external general entity (http)', doc(`<!DOCTYPE alert [<!ENTITY xxe SYSTEM "${base}/entity">]>`, '&xxe;'), 'entity-declaration'],
    ['external general entity (file)', doc('<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', '&xxe;'), 'entity-declaration'],
    ['external DTD subset', doc(`<!DOCTYPE alert SYSTEM "${base}/dtd">`, '&leak;'), 'doctype'],
    ['public DTD with a system id', doc(`<!DOCTYPE alert PUBLIC "-//KENG//XXE//EN" "${base}/dtd-public">`), 'doctype'],
    ['parameter entity (out-of-band XXE)', doc(`<!DOCTYPE alert [<!ENTITY % p SYSTEM "${base}/param"> %p;]>`), 'parameter-entity'],
    ['parameter entity nesting an http entity', doc(
      `<!DOCTYPE alert [<!ENTITY % d "<!ENTITY x SYSTEM '${base}/nested'>"> %d;]>`, '&x;'), 'parameter-entity'],
    ['XInclude of a remote text', doc('', '').replace('<info>', `<info><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="${base}/xinclude" parse="text"/>`), 'xinclude'],
    ['xml-stylesheet processing instruction', doc(`<?xml-stylesheet type="text/xsl" href="${base}/xsl"?>`), 'processing-instruction'],
  ];

  it('refuses each with KENG_ERR_CAP_FORBIDDEN_XML, and no request reaches the server', async () => {
    const results = cases().map(([name, xml, reason]) => ({ name, expected: reason, ...outcome(xml) }));
    for (const r of results) {
      expect({ name: r.name, code: r.code, reason: r.reason }).toEqual({ name: r.name, code: 'KENG_ERR_CAP_FORBIDDEN_XML', reason: r.expected });
      expect(r.text).not.toContain(SECRET);
      expect(r.text).not.toMatch(/root:x:0:0|nologin/);
    }
    // Anything asynchronous (a lazy fetch, a timer) would have had time to arrive.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(hits).toEqual([]);
  });

  it('ignores xsi:schemaLocation: the message is read, the schema never fetched', async () => {
    const xml = doc('').replace('<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">',
      `<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="urn:oasis:names:tc:emergency:cap:1.2 ${base}/schema.xsd">`);
    expect(parseCapXml(xml).alert.identifier).toBe('vn.tanlap.2025-0917-001');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(hits).toEqual([]);
  });

  it('the canary server does record requests (so the silence above means something)', async () => {
    const res = await fetch(`${base}/control`);
    expect(await res.text()).toBe(SECRET);
    expect(hits).toEqual(['GET /control']);
  });

  it('the payloads are live: a parser told to resolve entities (lxml) does fetch and leak', async () => {
    hits.length = 0;
    const script = 'import sys\nfrom lxml import etree\n'
      + 'p = etree.XMLParser(resolve_entities=True, no_network=False, load_dtd=True)\n'
      + 'print("".join(etree.fromstring(sys.stdin.read().encode("utf-8"), p).itertext()))';
    const child = execFile('/usr/bin/python3', ['-c', script], { timeout: 20_000 });
    child.stdin!.end(doc(`<!DOCTYPE alert [<!ENTITY xxe SYSTEM "${base}/entity">]>`, '&xxe;'));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    const [status] = await once(child, 'close');
    expect(status).toBe(0);
    expect(out).toContain(SECRET);
    expect(hits).toEqual(['GET /entity']);
  });
});
