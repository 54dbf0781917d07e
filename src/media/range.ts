/**
 * HTTP Range (RFC 9110 §14) for one byte range: `bytes=a-b`, `bytes=a-`,
 * `bytes=-n`. Several ranges, or a header that does not parse, are ignored
 * (the whole file is sent, which the RFC allows).
 */
export type RangeResult =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' };

export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return { kind: 'full' };
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return { kind: 'full' };
  if (a === '') {
    const n = Number(b);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  if (start >= size) return { kind: 'unsatisfiable' };
  if (b === '') return { kind: 'partial', start, end: size - 1 };
  const end = Number(b);
  if (end < start) return { kind: 'full' }; // invalid: ignore the header
  return { kind: 'partial', start, end: Math.min(end, size - 1) };
}

/** Whether an If-Range validator still matches (only strong ETags; dates are not used). */
export function ifRangeMatches(ifRange: string | undefined, etag: string): boolean {
  return ifRange === undefined || ifRange.trim() === etag;
}
