import { describe, expect, it } from 'vitest';
import { ACTIONS, Policy, roleAllows, type Action, type AreaTree, type Principal, type Role } from '../../src/auth/index.js';

// Province P1 → communes C1, C2; C1 → villages V1, V2.
const PARENT: Record<string, string | null> = { P1: null, C1: 'P1', C2: 'P1', V1: 'C1', V2: 'C1' };
const tree: AreaTree = {
  subtree(code) {
    if (!(code in PARENT)) return [];
    const out = [code];
    for (const [c, p] of Object.entries(PARENT)) if (p === code) out.push(...this.subtree(c));
    return out;
  },
};
const policy = new Policy(tree);
const who = (role: Role, areas: string[] = ['C1']): Principal => ({ kind: role === 'admin' ? 'admin' : 'user', id: `${role}-1`, role, areas });

/** Expected grants per role (docs/roles.md). */
const EXPECTED: Record<Role, Action[]> = {
  admin: [...ACTIONS],
  operator: ['areas.read', 'devices.read', 'devices.write', 'telemetry.read', 'media.read', 'media.write',
    'schedules.read', 'schedules.write', 'broadcasts.read', 'broadcasts.write', 'alerts.read', 'alerts.write', 'users.read', 'users.write',
    'commandKeys.read'],
  viewer: ['areas.read', 'devices.read', 'telemetry.read', 'commandKeys.read'],
  service: ['areas.read', 'devices.read', 'telemetry.read', 'broadcasts.read', 'alerts.read', 'commandKeys.read'],
};

/** The media library, accounts' tokens, the audit log, the command keys and the area tree itself are not per area. */
const NOT_AREA_SCOPED: Action[] = ['areas.write', 'tokens.read', 'tokens.write', 'audit.read', 'commandKeys.read', 'commandKeys.write', 'cluster.read'];

describe('policy matrix: four roles × actions × inside/outside area', () => {
  for (const role of Object.keys(EXPECTED) as Role[]) {
    for (const action of ACTIONS) {
      const granted = EXPECTED[role].includes(action);
      it(`${role} ${granted ? 'may' : 'may not'} ${action}`, () => {
        expect(roleAllows(role, action)).toBe(granted);
        expect(policy.can(who(role), action)).toBe(granted);
        // inside the scope: a village of the principal's commune
        expect(policy.can(who(role), action, 'V2')).toBe(granted);
        // outside: the neighbouring commune and the parent province
        // (admin has every area; actions not tied to an area ignore it)
        const outside = role === 'admin' || (granted && NOT_AREA_SCOPED.includes(action));
        expect(policy.can(who(role), action, 'C2')).toBe(outside);
        expect(policy.can(who(role), action, 'P1')).toBe(outside);
      });
    }
  }
});

describe('scope', () => {
  it('is the subtree of each of the principal\'s areas', () => {
    expect([...(policy.scope(who('viewer', ['C1'])) as Set<string>)].sort()).toEqual(['C1', 'V1', 'V2']);
    expect([...(policy.scope(who('operator', ['V1', 'C2'])) as Set<string>)].sort()).toEqual(['C2', 'V1']);
    expect([...(policy.scope(who('service', ['P1'])) as Set<string>)].sort()).toEqual(['C1', 'C2', 'P1', 'V1', 'V2']);
  });

  it('is everything for admin (whatever its areas) and for "*"', () => {
    expect(policy.scope(who('admin', []))).toBe('all');
    expect(policy.scope(who('service', ['*']))).toBe('all');
    expect(policy.can(who('service', ['*']), 'telemetry.read', 'C2')).toBe(true);
  });

  it('is empty for a principal without areas', () => {
    expect(policy.can(who('viewer', []), 'telemetry.read', 'C1')).toBe(false);
    expect(policy.can(who('viewer', []), 'telemetry.read')).toBe(true); // the role allows it; lists come back empty
  });

  it('filters lists to the scope', () => {
    const items = ['P1', 'C1', 'C2', 'V1', 'V2'].map((area) => ({ area }));
    expect(policy.filter(who('viewer', ['C1']), items, (i) => i.area).map((i) => i.area)).toEqual(['C1', 'V1', 'V2']);
    expect(policy.filter(who('admin'), items, (i) => i.area)).toHaveLength(5);
  });

  it('assert throws KENG_ERR_FORBIDDEN (403)', () => {
    expect(() => policy.assert(who('viewer'), 'devices.write', 'C1')).toThrow(expect.objectContaining({ code: 'KENG_ERR_FORBIDDEN', statusCode: 403 }));
    expect(() => policy.assert(who('operator'), 'devices.write', 'C2')).toThrow(expect.objectContaining({ code: 'KENG_ERR_FORBIDDEN' }));
    expect(() => policy.assert(who('operator'), 'devices.write', 'V1')).not.toThrow();
  });
});

describe('canGrant (accounts and API tokens)', () => {
  it('admin may grant any role anywhere', () => {
    for (const r of ['admin', 'operator', 'viewer', 'service'] as Role[]) expect(policy.canGrant(who('admin'), r, ['C2'])).toBe(true);
  });
  it('an operator may create viewers only within their areas', () => {
    const op = who('operator', ['C1']);
    expect(policy.canGrant(op, 'viewer', ['V1'])).toBe(true);
    expect(policy.canGrant(op, 'viewer', ['C1', 'V2'])).toBe(true);
    expect(policy.canGrant(op, 'viewer', ['C2'])).toBe(false);
    expect(policy.canGrant(op, 'viewer', ['P1'])).toBe(false);
    expect(policy.canGrant(op, 'viewer', [])).toBe(false);
    expect(policy.canGrant(op, 'viewer', ['*'])).toBe(false);
    expect(policy.canGrant(op, 'operator', ['V1'])).toBe(false);
    expect(policy.canGrant(op, 'service', ['V1'])).toBe(false);
  });
  it('viewers and services grant nothing', () => {
    expect(policy.canGrant(who('viewer'), 'viewer', ['V1'])).toBe(false);
    expect(policy.canGrant(who('service'), 'viewer', ['V1'])).toBe(false);
  });
});
