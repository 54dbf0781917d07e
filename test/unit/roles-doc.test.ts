/**
 * docs/roles.md holds the role × action matrix staff and integrators read:
 * parse its table and compare it with what the policy answers, so that the
 * page cannot drift from src/auth/policy.ts.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ACTIONS, AREA_SCOPED, roleAllows, type Action } from '../../src/auth/policy.js';
import { ROLES, type Role } from '../../src/auth/types.js';

interface Row { action: string; roles: Record<string, string>; areaScoped: string }

/** The table whose header starts with `| action |`: one row per action. */
function matrix(doc: string): { header: string[]; rows: Row[] } {
  const lines = doc.split('\n');
  const start = lines.findIndex((l) => /^\|\s*action\s*\|/.test(l));
  if (start < 0) throw new Error('docs/roles.md has no "| action |" table');
  const cells = (l: string): string[] => l.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());
  const header = cells(lines[start]!);
  const rows: Row[] = [];
  for (const l of lines.slice(start + 2)) {
    if (!l.startsWith('|')) break;
    const c = cells(l);
    const roles: Record<string, string> = {};
    for (const r of ROLES) roles[r] = c[header.indexOf(r)] ?? '';
    rows.push({ action: c[0]!.replace(/`/g, ''), roles, areaScoped: c[header.indexOf('area-scoped')] ?? '' });
  }
  return { header, rows };
}

describe('docs/roles.md', () => {
  const { header, rows } = matrix(readFileSync(new URL('../../docs/roles.md', import.meta.url), 'utf8'));

  it('has a column per role and a row per action, in the code\'s order', () => {
    for (const r of ROLES) expect(header).toContain(r);
    expect(header).toContain('area-scoped');
    expect(rows.map((r) => r.action)).toEqual([...ACTIONS]);
  });

  it('says yes exactly where roleAllows(role, action) does', () => {
    const wrong: string[] = [];
    for (const row of rows) {
      for (const role of ROLES) {
        const cell = row.roles[role];
        if (cell !== 'yes' && cell !== 'no') { wrong.push(`${row.action} × ${role}: "${cell}" (write yes or no)`); continue; }
        const allowed = roleAllows(role as Role, row.action as Action);
        if ((cell === 'yes') !== allowed) wrong.push(`${row.action} × ${role}: doc says ${cell}, policy says ${allowed ? 'yes' : 'no'}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('marks exactly the area-scoped actions', () => {
    const wrong = rows.filter((r) => (r.areaScoped === 'yes') !== AREA_SCOPED.has(r.action as Action)).map((r) => r.action);
    expect(wrong).toEqual([]);
  });
});
