import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  CredentialsError, mergeCredentials, parseCredentials, readCredentials, selectCredentials, simDeviceIds, writeCredentials,
} from '../../src/sim/credentials.js';

let dir: string;
beforeEach(() => { dir = mkdtempSync(path.join(tmpdir(), 'sim-creds-')); });
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('simulated device ids', () => {
  it('are zero-padded and valid', () => {
    expect(simDeviceIds('sim-', 3)).toEqual(['sim-0001', 'sim-0002', 'sim-0003']);
    expect(simDeviceIds('x', 12_000).at(-1)).toBe('x12000');
  });
  it('refuse a prefix that makes invalid ids', () => {
    expect(() => simDeviceIds('Sim-', 1)).toThrow(/not a valid device id/);
  });
});

describe('credentials file', () => {
  const file = () => path.join(dir, 'creds.json');

  it('round-trips, written with mode 0600', () => {
    const f = mergeCredentials(null, [{ id: 'sim-0002', secret: 's2', accessToken: 't2', profile: 'air' }, { id: 'sim-0001', secret: 's1', accessToken: 't1', profile: 'soil' }], { api: 'http://x', area: 'sim' });
    writeCredentials(file(), f);
    expect(statSync(file()).mode & 0o777).toBe(0o600);
    const back = readCredentials(file());
    expect(back?.devices.map((d) => d.id)).toEqual(['sim-0001', 'sim-0002']);
    expect(back).toMatchObject({ version: 1, api: 'http://x', area: 'sim' });
    expect(back?.devices[1]).toEqual({ id: 'sim-0002', secret: 's2', accessToken: 't2', profile: 'air' });
  });

  it('is absent → null', () => {
    expect(readCredentials(file())).toBeNull();
  });

  it('refuses files that are not ours, naming the file', () => {
    writeFileSync(file(), '{"hello":1}');
    expect(() => readCredentials(file())).toThrow(CredentialsError);
    expect(() => readCredentials(file())).toThrow(/creds\.json/);
    expect(() => parseCredentials('{not json')).toThrow(/not valid JSON/);
    expect(() => parseCredentials('{"version":1,"devices":[{"id":"a1"}]}')).toThrow(/neither secret nor accessToken/);
    expect(() => parseCredentials('{"version":1,"devices":[{"id":"BAD ID","secret":"x"}]}')).toThrow(/no valid id/);
  });

  it('defaults an unknown profile to soil', () => {
    expect(parseCredentials('{"version":1,"devices":[{"id":"a1","secret":"x","profile":"lava"}]}').devices[0]!.profile).toBe('soil');
  });

  it('merges: new registrations replace old entries, others are kept', () => {
    const base = mergeCredentials(null, [{ id: 'a1', secret: 'old', profile: 'soil' }, { id: 'a2', secret: 'keep', profile: 'soil' }]);
    const merged = mergeCredentials(base, [{ id: 'a1', secret: 'new', profile: 'soil' }], {}, new Date(0));
    expect(merged.devices).toEqual([{ id: 'a1', secret: 'new', profile: 'soil' }, { id: 'a2', secret: 'keep', profile: 'soil' }]);
    expect(merged.updatedAt).toBe('1970-01-01T00:00:00.000Z');
  });

  it('selects requested ids in order, or names the missing ones', () => {
    const f = mergeCredentials(null, [{ id: 'a1', secret: 'x', profile: 'soil' }, { id: 'a2', secret: 'y', profile: 'water' }]);
    expect(selectCredentials(f, ['a2', 'a1']).map((d) => d.id)).toEqual(['a2', 'a1']);
    expect(() => selectCredentials(f, ['a1', 'a3'])).toThrow(/no credentials for a3/);
  });

  it('leaves no temporary file behind', () => {
    writeCredentials(file(), mergeCredentials(null, []));
    expect(JSON.parse(readFileSync(file(), 'utf8')).devices).toEqual([]);
    expect(readFileSync(file(), 'utf8').endsWith('\n')).toBe(true);
  });
});
