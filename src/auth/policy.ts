/**
 * Who may do what (docs/roles.md). Routes ask `policy.can(...)` /
 * `policy.assert(...)`; they never look at roles themselves.
 *
 *  - admin:    everything, every area.
 *  - operator: commune staff: devices, media, schedules, broadcasts and alerts
 *              within their areas (plus reading areas and telemetry; may
 *              create viewer accounts within their areas). Media belongs to
 *              areas (src/media/access.ts: an item's areas overlap the scope
 *              to be seen, lie wholly in it to be changed or deleted).
 *  - viewer:   farmers and the public: read devices' telemetry within their areas.
 *  - service:  machines such as the IOC: read telemetry, status and broadcast
 *              logs within their areas.
 *
 * An area scope is the area's subtree: a principal scoped to a commune sees
 * the commune and its villages. `"*"` scopes to every area.
 *
 * Accounts (src/auth/users.ts, api/routes/users.ts, tokens.ts, audit.ts):
 *  - users.*: admin; an operator only for viewers wholly within its scope
 *    (canGrant), others are 404 to it. Anyone changes their own password.
 *  - tokens.*: admin only (a machine token outlives the person who made it).
 *  - audit.read: admin only.
 *  - cluster.read: admin only (the nodes and their leases: an installation-wide view).
 *  - commandKeys.read: every role (public keys, device protocol §11.6); commandKeys.write
 *    (rotate, retire): admin only, like the other installation-wide secrets.
 * Objects outside the caller's scope answer 404 (existence does not leak);
 * 403 means the role may not do this at all, or may not target that area.
 */
import { Errors } from '../core/errors.js';
import { ALL_AREAS, type Principal, type Role } from './types.js';

export type Action =
  | 'areas.read' | 'areas.write'
  | 'devices.read' | 'devices.write'
  | 'telemetry.read'
  | 'media.read' | 'media.write'
  | 'schedules.read' | 'schedules.write'
  | 'broadcasts.read' | 'broadcasts.write'
  | 'alerts.read' | 'alerts.write'
  | 'users.read' | 'users.write'
  | 'tokens.read' | 'tokens.write'
  | 'audit.read'
  | 'cluster.read'
  | 'commandKeys.read' | 'commandKeys.write'
  | 'firmware.write';

export const ACTIONS: readonly Action[] = [
  'areas.read', 'areas.write', 'devices.read', 'devices.write', 'telemetry.read', 'media.read', 'media.write',
  'schedules.read', 'schedules.write', 'broadcasts.read', 'broadcasts.write', 'alerts.read', 'alerts.write',
  'users.read', 'users.write', 'tokens.read', 'tokens.write', 'audit.read', 'commandKeys.read', 'commandKeys.write',
  'firmware.write', 'cluster.read',
];

/** Actions whose objects belong to an area (checked against the principal's scope). */
export const AREA_SCOPED: ReadonlySet<Action> = new Set<Action>([
  'areas.read', 'devices.read', 'devices.write', 'telemetry.read', 'media.read', 'media.write', 'schedules.read', 'schedules.write',
  'broadcasts.read', 'broadcasts.write', 'alerts.read', 'alerts.write', 'users.read', 'users.write',
]);

const GRANTS: Record<Exclude<Role, 'admin'>, ReadonlySet<Action>> = {
  operator: new Set<Action>([
    'areas.read', 'devices.read', 'devices.write', 'telemetry.read', 'media.read', 'media.write',
    'schedules.read', 'schedules.write', 'broadcasts.read', 'broadcasts.write', 'alerts.read', 'alerts.write',
    'users.read', 'users.write', 'commandKeys.read',
  ]),
  viewer: new Set<Action>(['areas.read', 'devices.read', 'telemetry.read', 'commandKeys.read']),
  service: new Set<Action>(['areas.read', 'devices.read', 'telemetry.read', 'broadcasts.read', 'alerts.read', 'commandKeys.read']),
};

/** Whether the role may perform the action at all (somewhere). */
export function roleAllows(role: Role, action: Action): boolean {
  // Defensive: an unknown role (bad stored data) may do nothing.
  return role === 'admin' || (GRANTS[role as Exclude<Role, 'admin'>]?.has(action) ?? false);
}

/** What the policy needs from the area tree (the device registry provides it). */
export interface AreaTree {
  /** The area and all its descendants' codes (empty or just the code when unknown). */
  subtree(code: string): string[];
}

export type Scope = 'all' | ReadonlySet<string>;

export class Policy {
  constructor(private readonly tree: AreaTree) {}

  /** Every area code the principal covers, or 'all'. */
  scope(p: Principal): Scope {
    if (p.role === 'admin' || p.areas.includes(ALL_AREAS)) return 'all';
    const codes = new Set<string>();
    for (const a of p.areas) {
      codes.add(a);
      for (const c of this.tree.subtree(a)) codes.add(c);
    }
    return codes;
  }

  /** Whether the area lies within the principal's scope (its areas' subtrees). */
  inScope(p: Principal, areaCode: string, scope: Scope = this.scope(p)): boolean {
    return scope === 'all' || scope.has(areaCode);
  }

  /**
   * May the principal perform `action`? With `areaCode`, also checks that the
   * object's area is in scope (for area-scoped actions); without it, answers
   * whether the role allows the action at all (list routes then filter).
   */
  can(p: Principal, action: Action, areaCode?: string): boolean {
    if (!roleAllows(p.role, action)) return false;
    if (areaCode === undefined || !AREA_SCOPED.has(action)) return true;
    return this.inScope(p, areaCode);
  }

  /** As `can`, throwing KENG_ERR_FORBIDDEN (403). */
  assert(p: Principal, action: Action, areaCode?: string): void {
    if (!this.can(p, action, areaCode)) {
      throw Errors.FORBIDDEN(areaCode === undefined ? `role ${p.role} may not ${action}` : `role ${p.role} may not ${action} in area "${areaCode}"`);
    }
  }

  /** Keep the items whose area is in the principal's scope. */
  filter<T>(p: Principal, items: T[], areaOf: (item: T) => string): T[] {
    const scope = this.scope(p);
    return scope === 'all' ? items : items.filter((i) => scope.has(areaOf(i)));
  }

  /**
   * May the principal create an account or API token with `role` over `areas`?
   * Admin: anything. Operator: only viewers, only within their own scope. Others: nothing.
   */
  canGrant(p: Principal, role: Role, areas: string[]): boolean {
    if (p.role === 'admin') return true;
    if (p.role !== 'operator' || role !== 'viewer' || areas.length === 0 || areas.includes(ALL_AREAS)) return false;
    const scope = this.scope(p);
    return areas.every((a) => this.inScope(p, a, scope));
  }
}
