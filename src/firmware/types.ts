import type { ChecksumAlgorithm } from './checksum.js';

/** The states ThingsBoard firmware reports in `fw_state` (telemetry), plus Keng's own before the first report. */
export const FW_STATES = ['DOWNLOADING', 'DOWNLOADED', 'VERIFIED', 'UPDATING', 'UPDATED', 'FAILED'] as const;
export type FwState = typeof FW_STATES[number];

export interface FirmwarePackage {
  id: string;
  title: string;
  version: string;
  model: string | null;
  size: number;
  checksumAlgorithm: ChecksumAlgorithm;
  checksum: string;
  sha256: string;
  createdAt: number;
  createdBy: string | null;
}

export interface Rollout {
  id: string;
  packageId: string;
  percent: number;
  /** Every device of the rollout, in pick order: the first `firstCount` get it in the first stage. */
  devices: string[];
  firstCount: number;
  /** The areas of its devices when it was made (who may see it). */
  areas: string[];
  stage: 'first' | 'all';
  createdAt: number;
  createdBy: string | null;
  completedAt: number | null;
}

export interface Assignment { deviceId: string; packageId: string; rolloutId: string | null; assignedAt: number }

export interface DeviceFwState {
  deviceId: string;
  state: string | null;
  error: string | null;
  currentTitle: string | null;
  currentVersion: string | null;
  updatedAt: number;
}
