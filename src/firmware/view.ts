/** A device's update state as the API shows it, from its assignment, its reports and the package. */
import type { Assignment, DeviceFwState, FirmwarePackage } from './types.js';

/** A device's update as the API shows it. */
export interface DeviceFirmware {
  deviceId: string;
  /** The package assigned (null: none). */
  packageId: string | null;
  rolloutId: string | null;
  /** `PENDING` until the device reports after its assignment; then its fw_state (UPDATED when it runs the package). */
  state: string;
  error: string | null;
  currentTitle: string | null;
  currentVersion: string | null;
  reportedAt: number | null;
}

/** Assignments, states and packages read at one moment: many devices' updates (rollout progress) from three queries. */
export class FirmwareView {
  constructor(private readonly assignments: Map<string, Assignment>, private readonly states: Map<string, DeviceFwState>, private readonly packages: Map<string, FirmwarePackage>) {}
  package(id: string): FirmwarePackage | undefined { return this.packages.get(id); }
  device(deviceId: string): DeviceFirmware { return deviceFirmwareOf(deviceId, this.assignments.get(deviceId), this.states.get(deviceId), this.packages); }
}

export function deviceFirmwareOf(deviceId: string, a: Assignment | undefined, s: DeviceFwState | undefined, packages: Map<string, FirmwarePackage>): DeviceFirmware {
  const p = a && packages.get(a.packageId);
  let state = 'NONE';
  if (p) {
    if (s?.currentTitle === p.title && s.currentVersion === p.version) state = 'UPDATED';
    else if (s && s.updatedAt >= a.assignedAt && s.state) state = s.state;
    else state = 'PENDING';
  } else if (s?.state) {
    state = s.state;
  }
  return {
    deviceId, packageId: a?.packageId ?? null, rolloutId: a?.rolloutId ?? null, state, error: s?.error || null,
    currentTitle: s?.currentTitle ?? null, currentVersion: s?.currentVersion ?? null, reportedAt: s?.updatedAt ?? null,
  };
}

