import { describe, expect, it } from 'vitest';
import { ifRangeMatches, parseRange } from '../../src/media/range.js';
import { multipartError } from '../../src/api/routes/media.js';
import { classifyError } from '../../src/api/errors.js';

describe('parseRange (one byte range)', () => {
  const size = 1000;
  it.each([
    [undefined, { kind: 'full' }],
    ['bytes=0-99', { kind: 'partial', start: 0, end: 99 }],
    ['bytes=500-', { kind: 'partial', start: 500, end: 999 }],
    ['bytes=-100', { kind: 'partial', start: 900, end: 999 }],
    ['bytes=-5000', { kind: 'partial', start: 0, end: 999 }],
    ['bytes=990-5000', { kind: 'partial', start: 990, end: 999 }],
    ['bytes=999-999', { kind: 'partial', start: 999, end: 999 }],
    [' Bytes = 1 - 2 ', { kind: 'partial', start: 1, end: 2 }],
    ['bytes=1000-', { kind: 'unsatisfiable' }],
    ['bytes=2000-3000', { kind: 'unsatisfiable' }],
    ['bytes=-0', { kind: 'unsatisfiable' }],
    ['bytes=5-1', { kind: 'full' }],
    ['bytes=0-1,5-9', { kind: 'full' }],
    ['items=0-1', { kind: 'full' }],
    ['bytes=-', { kind: 'full' }],
    ['bytes=abc', { kind: 'full' }],
  ] as const)('%s', (header, want) => {
    expect(parseRange(header, size)).toEqual(want);
  });

  it('nothing is satisfiable in an empty file', () => {
    expect(parseRange('bytes=0-', 0)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=-1', 0)).toEqual({ kind: 'unsatisfiable' });
  });

  it('If-Range compares strong ETags', () => {
    expect(ifRangeMatches(undefined, '"a"')).toBe(true);
    expect(ifRangeMatches('"a"', '"a"')).toBe(true);
    expect(ifRangeMatches('"b"', '"a"')).toBe(false);
    expect(ifRangeMatches('Wed, 21 Oct 2015 07:28:00 GMT', '"a"')).toBe(false);
  });
});

describe('multipartError: @fastify/multipart errors in the one error shape', () => {
  it.each([
    ['FST_REQ_FILE_TOO_LARGE', 413, 'KENG_ERR_PAYLOAD_TOO_LARGE'],
    ['FST_FILES_LIMIT', 413, 'KENG_ERR_PAYLOAD_TOO_LARGE'],
    ['FST_PARTS_LIMIT', 413, 'KENG_ERR_PAYLOAD_TOO_LARGE'],
    ['FST_FIELDS_LIMIT', 413, 'KENG_ERR_PAYLOAD_TOO_LARGE'],
    ['FST_INVALID_MULTIPART_CONTENT_TYPE', 415, 'KENG_ERR_UNSUPPORTED_MEDIA_TYPE'],
    ['FST_ERR_CTP_INVALID_MEDIA_TYPE', 415, 'KENG_ERR_UNSUPPORTED_MEDIA_TYPE'],
    ['FST_PROTO_VIOLATION', 400, 'KENG_ERR_VALIDATION'],
  ])('%s → %i %s', (code, status, keng) => {
    const e = multipartError({ code }, 1234)!;
    expect(e).toBeDefined();
    const c = classifyError(e);
    expect(c.status).toBe(status);
    expect(c.body.error.code).toBe(keng);
  });

  it('names the limit', () => {
    expect(multipartError({ code: 'FST_REQ_FILE_TOO_LARGE' }, 52_428_800)!.message).toContain('52428800 bytes (media.maxUploadBytes)');
  });

  it('leaves other errors alone', () => {
    expect(multipartError(new Error('x'), 1)).toBeUndefined();
    expect(multipartError(null, 1)).toBeUndefined();
  });
});
