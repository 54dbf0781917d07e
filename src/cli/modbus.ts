/**
 * `keng` and Modbus: the options of `keng devices add` that register a
 * Modbus sensor (the same rules as POST /api/v1/devices), and
 * `keng modbus maps`, the register maps Keng ships.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { Errors } from '../core/index.js';
import { MapCatalog, type ModbusInput, type ModbusTransport } from '../modbus/index.js';

export interface ModbusOpts {
  modbusTcp?: string; modbusRtu?: string; baud?: number; parity?: string; unitId?: number;
  map?: string; mapFile?: string; poll?: number;
}

const int = (v: string): number => (/^\d+$/.test(v.trim()) ? Number(v) : Number.NaN);

/** Adds the Modbus options to `keng devices add`. */
export function addModbusOptions(cmd: Command): Command {
  return cmd
    .option('--modbus-tcp <host:port>', 'Modbus sensor behind a Modbus TCP gateway (port 502 if omitted)')
    .option('--modbus-rtu <path>', 'Modbus sensor on a serial line (RS485 adapter), e.g. /dev/ttyUSB0')
    .addOption(new Option('--baud <rate>', 'serial line baud rate (with --modbus-rtu)').argParser(int).default(9600))
    .addOption(new Option('--parity <parity>', 'serial line parity (with --modbus-rtu)').choices(['none', 'even', 'odd']).default('none'))
    .addOption(new Option('--unit-id <id>', 'Modbus unit id (RS485 address) of the sensor').argParser(int))
    .option('--map <name>', 'a register map Keng ships (keng modbus maps)')
    .option('--map-file <file>', 'an inline register map: a JSON file {"registers": [...]}')
    .addOption(new Option('--poll <seconds>', 'seconds between polls (default 60)').argParser(int));
}

/** The Modbus part of `keng devices add`, or undefined for an MQTT device. */
export function modbusInput(o: ModbusOpts): ModbusInput | undefined {
  const given = o.modbusTcp !== undefined || o.modbusRtu !== undefined || o.map !== undefined || o.mapFile !== undefined || o.unitId !== undefined;
  if (!given) return undefined;
  if ((o.modbusTcp === undefined) === (o.modbusRtu === undefined)) throw Errors.VALIDATION('a Modbus device needs exactly one of --modbus-tcp and --modbus-rtu');
  if ((o.map === undefined) === (o.mapFile === undefined)) throw Errors.VALIDATION('a Modbus device needs exactly one of --map and --map-file');
  if (o.unitId === undefined) throw Errors.VALIDATION('a Modbus device needs --unit-id');
  let transport: ModbusTransport;
  if (o.modbusTcp !== undefined) {
    const m = /^(.+?)(?::(\d+))?$/.exec(o.modbusTcp.trim());
    transport = { type: 'modbus-tcp', host: m?.[1] ?? '', port: m?.[2] ? Number(m[2]) : 502, unitId: o.unitId };
  } else {
    transport = { type: 'modbus-rtu', path: o.modbusRtu!, baudRate: o.baud ?? 9600, parity: (o.parity ?? 'none') as 'none', unitId: o.unitId };
  }
  let registerMap: unknown = o.map;
  if (o.mapFile !== undefined) {
    try {
      registerMap = JSON.parse(readFileSync(o.mapFile, 'utf8'));
    } catch (err) {
      throw Errors.VALIDATION(`--map-file ${o.mapFile}: ${(err as Error).message}`);
    }
  }
  return { transport, registerMap, pollIntervalSec: o.poll };
}

/** `keng modbus maps`: the shipped register maps. */
export function registerModbus(program: Command, wrap: <A extends unknown[]>(fn: (...args: A) => Promise<void>) => (...args: A) => Promise<void>): void {
  const modbus = program.command('modbus').description('Modbus field sensors (RS485, via a TCP gateway or a serial line)');
  modbus.command('maps')
    .description('the register maps Keng ships (use a name with `keng devices add --map`)')
    .option('--json', 'print JSON')
    .action(wrap(async (o: { json?: boolean }) => {
      const maps = MapCatalog.shipped().list().sort((a, b) => (a.name < b.name ? -1 : 1));
      if (o.json) {
        process.stdout.write(`${JSON.stringify(maps, null, 2)}\n`);
        return;
      }
      for (const m of maps) {
        process.stdout.write(`${m.name}\n  ${m.title}\n  fields: ${m.registers.map((r) => r.field + (r.unit ? ` (${r.unit})` : '')).join(', ')}\n`);
        if (m.defaults) process.stdout.write(`  factory settings: ${Object.entries(m.defaults).map(([k, v]) => `${k} ${v}`).join(', ')}\n`);
        process.stdout.write(`  source: ${m.source}\n`);
      }
    }));
}
