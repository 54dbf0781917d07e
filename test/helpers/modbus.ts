/**
 * Real Modbus servers for the tests: Debian's python3-pymodbus
 * (test/fixtures/modbus/modbus_server.py, TCP or RTU over a serial port),
 * modbus-serial's own ServerTCP, and pseudo-terminal pairs from socat for RTU.
 * Missing parts fail the test (scripts/setup-test-deps.sh installs them).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import ModbusSerial from 'modbus-serial';
import { ROOT, freePort } from './process.js';

export const PYTHON = '/usr/bin/python3';
export const SOCAT = '/usr/bin/socat';
const SCRIPT = path.join(ROOT, 'test/fixtures/modbus/modbus_server.py');

export interface PyRequest { unit: number; fc: number; address: number; count?: number; values?: unknown[]; at: number }
export type Tables = Partial<Record<'hr' | 'ir' | 'co' | 'di', Record<number, Array<number | boolean>>>>;

export interface PyServer {
  /** TCP port (null for RTU). */
  port: number | null;
  /** Every request received so far, in order. */
  requests: PyRequest[];
  /** Connections clients made so far (TCP). */
  connections(): number;
  /** Sends a command (modbus_server.py's docstring) and waits for its ack. */
  send(cmd: Record<string, unknown>): Promise<void>;
  stop(): Promise<void>;
  output(): string;
}

/** Starts modbus_server.py: `{tcp: 0}` or `{rtu: path}`. */
export async function startPymodbus(opts: { tcp?: number; rtu?: string; baud?: number; parity?: 'N' | 'E' | 'O'; units?: number[]; data?: Record<number, Tables>; missing?: 'exception' | 'silent' }): Promise<PyServer> {
  const args = [SCRIPT, '--units', (opts.units ?? [1]).join(','), '--data', JSON.stringify(opts.data ?? {})];
  if (opts.tcp !== undefined) args.push('--tcp', String(opts.tcp));
  if (opts.rtu !== undefined) args.push('--rtu', opts.rtu, '--baud', String(opts.baud ?? 9600), '--parity', opts.parity ?? 'N');
  if (opts.missing) args.push('--missing', opts.missing);
  const proc = spawn(PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d) => { log += d; });
  const requests: PyRequest[] = [];
  const acks: Array<() => void> = [];
  let connections = 0;
  let ready: (port: number | null) => void;
  const readyP = new Promise<number | null>((resolve, reject) => {
    ready = resolve;
    proc.once('exit', (code) => reject(new Error(`modbus_server.py exited (${code}) before it was ready:\n${log}`)));
  });
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    log += `${line}\n`;
    let e: { event: string; port?: number } & PyRequest;
    try { e = JSON.parse(line); } catch { return; }
    if (e.event === 'ready') ready(e.port ?? null);
    else if (e.event === 'request') requests.push({ unit: e.unit, fc: e.fc, address: e.address, count: e.count, values: e.values, at: Date.now() });
    else if (e.event === 'ack') acks.shift()?.();
    else if (e.event === 'connection') connections++;
  });
  const port = await withTimeout(readyP, 15_000, () => `modbus_server.py not ready:\n${log}`);
  return {
    port, requests, output: () => log, connections: () => connections,
    send(cmd) {
      return withTimeout(new Promise<void>((resolve) => { acks.push(resolve); proc.stdin!.write(`${JSON.stringify(cmd)}\n`); }), 5000, () => `no ack for ${JSON.stringify(cmd)}`);
    },
    stop: () => stopProcess(proc),
  };
}

/** modbus-serial's ServerTCP over plain tables (register words and bits), answering every unit in `units`. */
export async function startSerialServerTcp(tables: Required<Tables>, units: number[] = [1]): Promise<{ port: number; writes: Array<{ addr: number; value: unknown; unit: number }>; stop(): Promise<void> }> {
  const { ServerTCP } = ModbusSerial as unknown as { ServerTCP: new (v: object, o: object) => import('node:events').EventEmitter & { close(cb: () => void): void; _server?: import('node:net').Server } };
  const writes: Array<{ addr: number; value: unknown; unit: number }> = [];
  const check = (unit: number): void => {
    if (!units.includes(unit)) throw Object.assign(new Error('no such unit'), { modbusErrorCode: 0x0b });
  };
  const word = (t: Record<number, Array<number | boolean>>, addr: number): number => {
    const v = t[addr]?.[0];
    if (v === undefined) throw Object.assign(new Error('illegal address'), { modbusErrorCode: 0x02 });
    return Number(v);
  };
  const bit = (t: Record<number, Array<number | boolean>>, addr: number): boolean => {
    const v = t[addr]?.[0];
    if (v === undefined) throw Object.assign(new Error('illegal address'), { modbusErrorCode: 0x02 });
    return v === true || v === 1;
  };
  const vector = {
    getHoldingRegister: (addr: number, unit: number) => { check(unit); return word(tables.hr, addr); },
    getInputRegister: (addr: number, unit: number) => { check(unit); return word(tables.ir, addr); },
    getCoil: (addr: number, unit: number) => { check(unit); return bit(tables.co, addr); },
    getDiscreteInput: (addr: number, unit: number) => { check(unit); return bit(tables.di, addr); },
    setRegister: (addr: number, value: number, unit: number) => { check(unit); writes.push({ addr, value, unit }); tables.hr[addr] = [value]; },
    setCoil: (addr: number, value: boolean, unit: number) => { check(unit); writes.push({ addr, value, unit }); tables.co[addr] = [value]; },
  };
  // ServerTCP takes port 0 for "502": ask the system for a free port first.
  const port = await freePort();
  const server = new ServerTCP(vector, { host: '127.0.0.1', port, unitID: 255 });
  server.on('socketError', () => undefined);
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => { server.once('initialized', () => resolve()); server.once('serverError', reject); });
  return { port, writes, stop: () => new Promise<void>((r) => server.close(() => r())) };
}

/** A pseudo-terminal pair joined by socat: what one end writes, the other reads (an RS485 line with two ends). */
export async function ptyPair(): Promise<{ a: string; b: string; stop(): Promise<void> }> {
  if (!existsSync(SOCAT)) throw new Error(`${SOCAT} is missing (apt-get install socat)`);
  const dir = mkdtempSync(path.join(tmpdir(), 'keng-pty-'));
  const a = path.join(dir, 'a'), b = path.join(dir, 'b');
  const proc = spawn(SOCAT, ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d) => { log += d; });
  const t0 = Date.now();
  while (!(existsSync(a) && existsSync(b))) {
    if (proc.exitCode !== null || Date.now() - t0 > 10_000) { proc.kill('SIGKILL'); throw new Error(`socat gave no pty pair:\n${log}`); }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { a, b, stop: async () => { await stopProcess(proc); rmSync(dir, { recursive: true, force: true }); } };
}

/** Whether this machine can make a pty pair (reported by the RTU test instead of skipping silently). */
export function canMakePty(): boolean {
  return existsSync(SOCAT) && spawnSync(SOCAT, ['-V'], { timeout: 5000 }).status === 0;
}

/** The two registers of a 32-bit value, big (high word first) or little word order. */
export function words32(u32: number, order: 'big' | 'little' = 'big'): [number, number] {
  const u = u32 < 0 ? u32 + 0x1_0000_0000 : u32;
  const hi = Math.floor(u / 0x1_0000), lo = u % 0x1_0000;
  return order === 'big' ? [hi, lo] : [lo, hi];
}

export function floatWords(f: number, order: 'big' | 'little' = 'big'): [number, number] {
  const b = Buffer.alloc(4);
  b.writeFloatBE(f, 0);
  return words32(b.readUInt32BE(0), order);
}

async function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 3000);
  await gone;
  clearTimeout(t);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(what())), ms); })]).finally(() => clearTimeout(timer));
}
