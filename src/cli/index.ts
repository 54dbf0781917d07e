/**
 * `keng` command line: areas, devices, users (users.ts), straight on the state store under
 * KENG_DATA_DIR (settings through loadConfig(), so KENG_CONFIG and KENG_*
 * variables apply). Safe while the server runs: SQLite WAL + busy_timeout,
 * and the server's registry picks up what the CLI changed (see
 * DeviceRegistry: PRAGMA data_version). The CLI never writes presence, and
 * does not take the server's data directory lock (that is for servers only).
 *
 * The CLI never creates state: pointed at a directory without a state
 * database (a typo in KENG_DATA_DIR, the wrong working directory) it says so
 * instead of working on a new empty database the server never sees.
 *
 * Errors: one line `keng: KENG_ERR_...: message` on stderr, exit status 1
 * (78 for a bad setting, like the server, and for a missing or wrong audit
 * key; 66 for a directory without state; 73 for a backup directory that is
 * not empty).
 */
import path from 'node:path';
import { Command, Option } from 'commander';
import { loadConfig } from '../config/index.js';
import { Errors, systemClock } from '../core/index.js';
import type { Area, AreaLevel, Device, DeviceKind, DeviceRegistry, DeviceView } from '../devices/index.js';
import type { Db } from '../storage/sql/index.js';
import { registerSimulate } from './simulate.js';
import { backupDataDir, MANIFEST_FILE } from './backup.js';
import { action, cliActor, json, out, table, withRegistry, withStateSql } from './common.js';
import { formatTimeOrNull } from '../core/time.js';
import { cliAuditKey, registerAudit } from './audit.js';
import { AuditLog } from '../audit/index.js';
import { PurgeJobs } from '../devices/index.js';
import { registerUsers } from './users.js';
import { registerCluster } from './cluster-import.js';
import { MapCatalog, ModbusDevices } from '../modbus/index.js';
import { addModbusOptions, modbusInput, registerModbus, type ModbusOpts } from './modbus.js';

function areaJson(a: Area, tz: string): Record<string, unknown> {
  return { ...a, createdAt: formatTimeOrNull(a.createdAt, tz) };
}

function deviceJson(d: Device | DeviceView, tz: string): Record<string, unknown> {
  return { ...d, createdAt: formatTimeOrNull(d.createdAt, tz), ...('lastSeen' in d ? { lastSeen: formatTimeOrNull(d.lastSeen, tz) } : {}) };
}

function printDevice(d: Device, tz: string): void {
  const loc = d.location ? `${d.location.lat}, ${d.location.lon}` : '-';
  table(['field', 'value'], [
    ['id', d.id], ['kind', d.kind], ['name', d.name], ['area', d.area], ['location', loc],
    ['model', d.model ?? '-'], ['enabled', String(d.enabled)], ['created', formatTimeOrNull(d.createdAt, tz) ?? '-'],
  ].map(([k, v]) => [k!, v!]));
}

function parseCoordinate(v: string): number {
  return v.trim() === '' ? Number.NaN : Number(v);
}

function registerAreas(program: Command): void {
  const areas = program.command('areas').description('administrative areas: province → commune → village');
  areas.command('add')
    .description('add an area')
    .requiredOption('--code <code>', 'area code, e.g. an administrative code ("01", "00004") or "thon-3"')
    .requiredOption('--name <name>', 'display name')
    .requiredOption('--level <level>', 'province | commune | village')
    .option('--parent <code>', 'parent area: a province for a commune, a commune for a village')
    .option('--json', 'print JSON')
    .action(action(async (o: { code: string; name: string; level: string; parent?: string; json?: boolean }) => {
      const { area, tz } = await withRegistry(async (reg, _db, config) => ({
        area: await reg.createArea({ code: o.code, name: o.name, level: o.level as AreaLevel, parent: o.parent ?? null }), tz: config.tz,
      }));
      if (o.json) json(areaJson(area, tz));
      else out(`Area ${area.code} added: ${area.level} "${area.name}"${area.parent ? `, in ${area.parent}` : ''}`);
    }));
  areas.command('list')
    .description('list areas')
    .option('--json', 'print JSON')
    .action(action(async (o: { json?: boolean }) => {
      const { list, tz } = await withRegistry((reg, _db, config) => ({ list: reg.listAreas(), tz: config.tz }));
      if (o.json) return json(list.map((a) => areaJson(a, tz)));
      table(['CODE', 'LEVEL', 'PARENT', 'NAME'], list.map((a) => [a.code, a.level, a.parent ?? '-', a.name]));
    }));
}

interface DeviceAddOpts extends ModbusOpts { id: string; kind: string; name: string; area: string; lat?: number; lon?: number; model?: string; json?: boolean }

/** Modbus settings where the server keeps them (same rules as the API): PostgreSQL in cluster mode, else the state store. */
function modbusDevices(reg: DeviceRegistry, db: Db<unknown>): ModbusDevices {
  return new ModbusDevices({
    db, registry: reg, catalog: MapCatalog.shipped(), clock: systemClock, serialPathPrefixes: loadConfig().modbus.serialPathPrefixes,
  });
}

function registerDevices(program: Command): void {
  const devices = program.command('devices').description('field devices: sensors, loudspeakers, gateways');
  addModbusOptions(devices.command('add'))
    .description('register a device; prints its secret and access token once (with --modbus-tcp or --modbus-rtu: a Modbus sensor Keng polls)')
    .requiredOption('--id <id>', 'device id: ^[a-z0-9][a-z0-9_-]{1,63}$ (the MQTT username)')
    .requiredOption('--kind <kind>', 'sensor | speaker | gateway')
    .requiredOption('--name <name>', 'display name')
    .requiredOption('--area <code>', 'area the device belongs to')
    .addOption(new Option('--lat <lat>', 'latitude').argParser(parseCoordinate))
    .addOption(new Option('--lon <lon>', 'longitude').argParser(parseCoordinate))
    .option('--model <model>', 'device model')
    .option('--json', 'print JSON (device, secret and accessToken) for scripts')
    .action(action(async (o: DeviceAddOpts) => {
      if ((o.lat === undefined) !== (o.lon === undefined)) throw Errors.VALIDATION('--lat and --lon go together');
      const location = o.lat !== undefined && o.lon !== undefined ? { lat: o.lat, lon: o.lon } : null;
      const modbus = modbusInput(o);
      const { device, credentials, settings, tz } = await withRegistry(async (reg, db, config) => {
        const d = { id: o.id, kind: o.kind as DeviceKind, name: o.name, area: o.area, location, model: o.model ?? null };
        const made = modbus
          ? await withStateSql(config, db, (sqlDb) => modbusDevices(reg, sqlDb).create(d, modbus))
          : { ...(await reg.createDevice(d)), settings: undefined };
        return { ...made, tz: config.tz };
      });
      const warning = 'The secret and access token are shown only now: they are stored hashed and cannot be shown again.';
      const polled = settings ? { transport: settings.transport, registerMap: settings.registerMap, pollIntervalSec: settings.pollIntervalSec } : {};
      if (o.json) {
        json({ ...deviceJson(device, tz), ...polled, secret: credentials.secret, accessToken: credentials.accessToken });
        process.stderr.write(`keng: ${warning}\n`);
        return;
      }
      printDevice(device, tz);
      if (settings) {
        const t = settings.transport;
        out(`Modbus: ${t.type === 'modbus-tcp' ? `gateway ${t.host}:${t.port}` : `${t.path} ${t.baudRate} baud, parity ${t.parity}`}, unit ${t.unitId}, `
          + `map ${typeof settings.registerMap === 'string' ? settings.registerMap : `inline (${settings.registerMap.registers.length} registers)`}, `
          + `every ${settings.pollIntervalSec} s (the server polls it from its next reload, within seconds)`);
      }
      out();
      out(`secret:       ${credentials.secret}`);
      out(`access token: ${credentials.accessToken}`);
      out();
      out(`WARNING: ${warning}`);
      out(`MQTT login: username "${device.id}" + the secret, or username = the access token (ThingsBoard style).`);
    }));
  devices.command('list')
    .description('list devices (presence as last saved by the server)')
    .option('--area <code>', 'only this area and the areas under it')
    .option('--kind <kind>', 'sensor | speaker | gateway')
    .option('--json', 'print JSON')
    .action(action(async (o: { area?: string; kind?: string; json?: boolean }) => {
      const { views, modbus, tz } = await withRegistry(async (reg, db, config) => {
        if (o.area !== undefined && !reg.getArea(o.area)) throw Errors.NOT_FOUND(`Area "${o.area}"`);
        const all = new Map((await withStateSql(config, db, (sqlDb) => modbusDevices(reg, sqlDb).all())).map((s) => [s.deviceId, s]));
        return { views: reg.views({ area: o.area, kind: o.kind as DeviceKind | undefined }), modbus: all, tz: config.tz };
      });
      if (o.json) {
        return json(views.map((v) => {
          const s = modbus.get(v.id);
          return { ...deviceJson(v, tz), ...(s ? { transport: s.transport, registerMap: s.registerMap, pollIntervalSec: s.pollIntervalSec } : {}) };
        }));
      }
      table(['ID', 'KIND', 'AREA', 'ONLINE', 'LAST SEEN', 'NAME'],
        views.map((v) => [v.id, v.kind, v.area, v.enabled ? (v.online ? 'yes' : 'no') : 'disabled', formatTimeOrNull(v.lastSeen, tz) ?? '-', v.name]));
    }));
  devices.command('delete')
    .description('delete a device (its credentials stop working)')
    .argument('<id>', 'device id')
    .action(action(async (id: string) => {
      const { removed, purge } = await withRegistry(async (reg, _db, config) => ({
        removed: await reg.deleteDevice(id, cliActor()), purge: config.telemetry.onDeviceDelete === 'purge',
      }));
      if (!removed) throw Errors.NOT_FOUND(`Device "${id}"`);
      out(`Device ${id} deleted${purge ? '; the server purges its readings in the background (telemetry.onDeviceDelete = purge)' : ''}`);
    }));
  devices.command('purge')
    .description('remove the stored readings of a device deleted earlier (also when its id was registered again: only the old device\'s); the server does it in the background')
    .argument('<id>', 'device id')
    .action(action(async (id: string) => {
      await withRegistry(async (reg, db, config, sql) => {
        const by = cliActor();
        const audit = new AuditLog({ db: sql, clock: systemClock });
        const key = cliAuditKey(config);
        if (key) audit.useKey(key);
        // Recorded and audited together, or neither.
        const asked = await reg.requestPurge(id, by, (trx) => audit.record({ actor: by, action: 'device.purge_requested', target: `device:${id}` }, trx));
        if (!asked) throw Errors.NOT_FOUND(`Deleted device "${id}"`);
      });
      out(`Purge of ${id}'s readings recorded; the server runs it (see \`keng devices purges\`, and device.purge in the audit log when done)`);
    }));
  devices.command('purges')
    .description('purges of deleted devices\' readings not finished yet (retrying while a store is unreachable)')
    .option('--json', 'print JSON')
    .action(action(async (o: { json?: boolean }) => {
      const { jobs, tz } = await withRegistry(async (_reg, _db, config, sql) => ({ jobs: await new PurgeJobs(sql).list(), tz: config.tz }));
      if (o.json) return json(jobs);
      table(['ID', 'DELETED', 'REQUESTED BY', 'STAGE', 'ATTEMPTS', 'NEXT TRY', 'LAST ERROR'],
        jobs.map((j) => [j.deviceId, formatTimeOrNull(j.deletedAt, tz) ?? '-', j.requestedBy, j.stage, String(j.attempts), formatTimeOrNull(j.nextAt, tz) ?? '-', j.lastError ?? '-']));
    }));
}


function registerBackup(program: Command): void {
  program.command('backup')
    .description('copy the data directory consistently, also while the server runs (state, telemetry, media, admin token); restore: README')
    .argument('<dir>', 'a new or empty directory for the copy')
    .option('--json', 'print the manifest as JSON')
    .action(action(async (dir: string, o: { json?: boolean }) => {
      const config = loadConfig();
      const url = config.cluster.databaseUrl;
      const m = await backupDataDir({ dataDir: config.dataDir, target: dir, ...(url !== undefined ? { database: { url } } : {}) });
      if (o.json) return json(m);
      const bytes = m.files.reduce((n, f) => n + f.bytes, 0);
      out(`Backup of ${m.source} written to ${path.resolve(dir)}: ${m.files.length} files, ${bytes} bytes (manifest ${MANIFEST_FILE})`);
      if (m.database) out(`The cluster database (PostgreSQL ${m.database.server}) is in ${m.database.file}: restore it with pg_restore (README "Back up, restore, upgrade").`);
      if (m.missingMedia.length) out(`Note: ${m.missingMedia.length} media file(s) were deleted while the backup ran and are not in it: ${m.missingMedia.join(', ')}`);
      if (m.missingFirmware.length) out(`Note: ${m.missingFirmware.length} firmware package(s) had no file in the data directory and are not in it: ${m.missingFirmware.join(', ')}`);
    }));
}

export function createProgram(): Command {
  const program = new Command('keng')
    .description('Keng: commune sensors and loudspeakers controller. Works on the state under KENG_DATA_DIR (default ./data).')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ outputError: (str, write) => write(`keng: ${str.replace(/^error: /, '')}`) });
  registerAreas(program);
  registerDevices(program);
  registerUsers(program);
  registerAudit(program, { withState: (fn) => withRegistry((_reg, db) => fn(db)), action });
  registerBackup(program);
  registerCluster(program);
  registerModbus(program, action);
  registerSimulate(program);
  return program;
}

export async function runCli(argv: string[] = process.argv): Promise<void> {
  await createProgram().parseAsync(argv);
}
