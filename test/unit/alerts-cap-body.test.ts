/**
 * The JSON body of POST /api/v1/alerts (src/alerts/cap/model.ts schema,
 * body.ts rules) and its trip through CAP XML and back.
 */
import { describe, expect, it } from 'vitest';
import { alertBodyError, newCapAlert, toAlertJson, validateAlertBody, type AlertDraft } from '../../src/alerts/cap/body.js';
import { AlertBodySchema, spokenContent, spokenText } from '../../src/alerts/cap/model.js';
import { parseCapXml } from '../../src/alerts/cap/xml-parse.js';
import { writeCapXml } from '../../src/alerts/cap/xml-write.js';

const VN = 'Asia/Ho_Chi_Minh';
const NOW = Date.parse('2025-09-17T05:00:00+07:00');
const BODY = {
  status: 'Actual', msgType: 'Alert', event: 'Lũ quét', severity: 'Extreme', urgency: 'Immediate', certainty: 'Likely',
  headline: 'Cảnh báo lũ quét tại thôn Đồng Gianh',
  description: 'Mực nước suối Ngòi Lao đang lên nhanh',
  instruction: 'Sơ tán ngay đến nhà văn hoá xã.',
  areas: ['tanlap.dong-gianh', 'tanlap.ben-dinh'],
  expires: '2025-09-18T18:00:00+07:00',
};

function ok(body: unknown, names?: Record<string, string>): AlertDraft {
  const r = validateAlertBody(body, { now: NOW, areaName: names ? (c) => names[c] : undefined });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}
function errors(body: unknown): Array<{ field: string; message: string }> {
  const r = validateAlertBody(body, { now: NOW });
  if (r.ok) throw new Error('accepted');
  return r.errors;
}

describe('validateAlertBody', () => {
  it('takes the minimal body and applies the defaults', () => {
    const d = ok(BODY, { 'tanlap.dong-gianh': 'Thôn Đồng Gianh' });
    expect(d).toMatchObject({
      status: 'Actual', msgType: 'Alert', scope: 'Public', language: 'vi-VN', categories: ['Safety'], responseTypes: [],
      event: 'Lũ quét', urgency: 'Immediate', severity: 'Extreme', certainty: 'Likely', repeat: 1, references: [],
      expires: Date.parse('2025-09-18T11:00:00Z'),
    });
    expect(d.content).toBeUndefined();
    expect(d.areas).toEqual([
      { areaDesc: 'Thôn Đồng Gianh', areaCodes: ['tanlap.dong-gianh'], polygons: [], circles: [], geocodes: [] },
      { areaDesc: 'tanlap.ben-dinh', areaCodes: ['tanlap.ben-dinh'], polygons: [], circles: [], geocodes: [] },
    ]);
  });

  it('takes every optional field', () => {
    const d = ok({
      ...BODY, scope: 'Restricted', restriction: 'Chỉ cán bộ xã', category: ['Met', 'Safety'], responseType: ['Evacuate'],
      senderName: 'UBND xã Tân Lập', web: 'https://tanlap.gov.vn/a/1', contact: '0210 3888 115', note: 'Bản tin thử',
      effective: 1758060000000, onset: '2025-09-17T08:00:00+07:00', language: 'vi',
      content: { mediaId: 'm-123' }, repeat: 3, references: ['keng@tanlap,A-1,2025-09-16T20:00:00+07:00'],
      identifier: 'ignored', sent: 'ignored',
    });
    expect(d).toMatchObject({
      scope: 'Restricted', restriction: 'Chỉ cán bộ xã', categories: ['Met', 'Safety'], responseTypes: ['Evacuate'], language: 'vi',
      effective: 1758060000000, onset: Date.parse('2025-09-17T01:00:00Z'), content: { mediaId: 'm-123' }, repeat: 3,
      references: [{ sender: 'keng@tanlap', identifier: 'A-1', sent: '2025-09-16T20:00:00+07:00' }],
    });
    expect(d).not.toHaveProperty('identifier');
  });

  it('cuts times to whole seconds, the precision of CAP', () => {
    expect(ok({ ...BODY, expires: '2025-09-18T18:00:00.999+07:00' }).expires).toBe(Date.parse('2025-09-18T11:00:00Z'));
  });

  it('lists every missing or ill-typed field at once', () => {
    const fields = errors({ status: 'Draft', msgType: 'Ack', areas: [], repeat: 11, content: { mediaId: 'a', ttsText: 'b' }, color: 1 })
      .map((e) => e.field);
    expect(fields).toEqual(expect.arrayContaining([
      'status', 'msgType', 'event', 'severity', 'urgency', 'certainty', 'headline', 'expires', 'areas', 'repeat', 'content', 'color',
    ]));
  });

  it('refuses a body that is not an object', () => {
    expect(errors('x')).toEqual([{ field: '', message: 'must be a JSON object' }]);
  });

  it.each([
    [{ expires: '2025-09-17T04:00:00+07:00' }, 'expires', 'is in the past'],
    [{ effective: '2025-09-19T00:00:00+07:00' }, 'expires', 'must be after effective'],
    [{ expires: 'tomorrow' }, 'expires', 'ISO 8601'],
    [{ headline: 'x'.repeat(161) }, 'headline', '1-160'],
    [{ headline: '   ' }, 'headline', 'not only spaces'],
    [{ areas: ['ok', 'ok'] }, 'areas', 'distinct'],
    [{ areas: ['bad code'] }, 'areas[0]', 'not a valid area code'],
    [{ category: ['Weather'] }, 'category[0]', 'must be one of'],
    [{ language: 'tiếng Việt' }, 'language', 'language tag'],
    [{ web: 'javascript:alert(1)' }, 'web', 'http'],
    [{ scope: 'Restricted' }, 'restriction', 'required when scope is Restricted'],
    [{ scope: 'Private' }, 'addresses', 'required when scope is Private'],
    [{ restriction: 'x' }, 'restriction', 'only for scope Restricted'],
    [{ references: ['A-1'] }, 'references[0]', 'sender,identifier,sent'],
    [{ references: ['a@b,A-1,2025-09-16T20:00:00Z'] }, 'references[0]', 'sender,identifier,sent'],
    [{ description: 'a\u0001b' }, 'description', 'control character'],
    [{ content: { ttsText: 'a\u0000' } }, 'content.ttsText', 'control character'],
    [{ content: { streamUrl: 'http://x' } }, 'content', 'exactly one of'],
    [{ repeat: 0 }, 'repeat', 'integer 1-10'],
  ])('refuses %j', (patch, field, message) => {
    expect(errors({ ...BODY, ...patch })).toEqual([{ field, message: expect.stringContaining(message) }]);
  });

  it('alertBodyError makes the standard 400 with the list as details', () => {
    const e = alertBodyError(errors({ ...BODY, repeat: 0 }));
    expect({ code: e.code, statusCode: e.statusCode, details: e.details }).toEqual({
      code: 'KENG_ERR_VALIDATION', statusCode: 400, details: [{ field: 'repeat', message: 'must be an integer 1-10' }],
    });
  });

  it('publishes the schema the route documents (OpenAPI)', () => {
    expect(AlertBodySchema.required).toEqual(expect.arrayContaining(['status', 'msgType', 'event', 'severity', 'urgency', 'certainty', 'headline', 'areas', 'expires']));
  });
});

describe('what plays', () => {
  it('defaults to TTS of headline, description and instruction, one sentence each', () => {
    const d = ok(BODY);
    expect(spokenText(d)).toBe('Cảnh báo lũ quét tại thôn Đồng Gianh. Mực nước suối Ngòi Lao đang lên nhanh. Sơ tán ngay đến nhà văn hoá xã.');
    expect(spokenContent(d)).toEqual({ ttsText: spokenText(d) });
    expect(spokenContent(ok({ ...BODY, content: { ttsText: ' Sơ tán! ' } }))).toEqual({ ttsText: 'Sơ tán!' });
  });
});

describe('JSON → CAP XML → JSON', () => {
  const meta = { identifier: 'vn.tanlap.2025-0917-001', sender: 'canhbao@tanlap.phutho.gov.vn', sent: Date.parse('2025-09-17T05:30:00.456+07:00') };

  it.each([
    ['the minimal body', BODY],
    ['every field', {
      ...BODY, scope: 'Restricted', restriction: 'Chỉ cán bộ xã', category: ['Met', 'Safety'], responseType: ['Evacuate', 'Monitor'],
      senderName: 'Ban Chỉ huy PCTT xã Tân Lập', web: 'https://tanlap.gov.vn/a/1?x=1&y=<2>', contact: '0210 3888 115', note: 'Cập nhật & thay thế',
      effective: '2025-09-17T05:30:00+07:00', onset: '2025-09-17T08:00:00+07:00', msgType: 'Update',
      content: { ttsText: 'Lũ quét! Sơ tán ngay.' }, repeat: 5, references: ['canhbao@tanlap.phutho.gov.vn,vn.tanlap.2025-0916-009,2025-09-16T20:00:00+07:00'],
    }],
    ['media content', { ...BODY, status: 'Exercise', content: { mediaId: 'media-42' }, repeat: 10 }],
  ])('%s keeps its fields', (_name, body) => {
    const alert = newCapAlert(ok(body), meta);
    expect(alert.sent).toBe(Date.parse('2025-09-17T05:30:00+07:00'));
    const back = parseCapXml(writeCapXml(alert, { tz: VN })).alert;
    expect(back).toEqual(alert);
    const json = toAlertJson(back, VN);
    expect(json).toEqual(toAlertJson(alert, VN));
    // Every field of the body comes back as it was sent (times in the zone's form).
    for (const [k, v] of Object.entries(body)) {
      if (['expires', 'effective', 'onset'].includes(k)) expect(Date.parse((json as any)[k])).toBe(Date.parse(v as string));
      else expect((json as any)[k]).toEqual(v);
    }
    expect(json).toMatchObject({ identifier: meta.identifier, sender: meta.sender, sent: '2025-09-17T05:30:00.000+07:00' });
  });
});
