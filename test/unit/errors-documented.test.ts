import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, Errors } from '../../src/core/errors.js';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

/** Rows of the table: `| \`KENG_…\` | status | …` */
const rows = new Map<string, number>();
for (const m of doc.matchAll(/^\|\s*`(KENG_[A-Z_]+)`\s*\|\s*(\d{3})\s*\|/gm)) rows.set(m[1]!, Number(m[2]));

describe('docs/errors.md', () => {
  it('has a table row for every registered error code', () => {
    const missing = ERROR_CODES.filter((c) => !rows.has(c));
    expect(missing).toEqual([]);
  });

  it('gives each code the HTTP status it is registered with', () => {
    for (const make of Object.values(Errors)) {
      const e = make();
      expect({ code: e.code, status: rows.get(e.code) }).toEqual({ code: e.code, status: e.statusCode });
    }
  });

  it('documents no code that does not exist', () => {
    expect([...rows.keys()].filter((c) => !ERROR_CODES.includes(c))).toEqual([]);
  });
});
