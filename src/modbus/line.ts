/**
 * One Modbus line: a TCP connection to a gateway, or a serial port (RS485
 * adapter) under Modbus RTU. All devices behind it share it, so:
 *
 *  - requests are serialised (exclusive(): one job at a time, FIFO). An RS485
 *    bus is half-duplex with one master, and most TCP-to-RTU gateways forward
 *    one request at a time anyway;
 *  - every request has a timeout. modbus-serial waits forever unless
 *    setTimeout() is called, and a lost TCP connection never settles the
 *    requests it had in flight; on top of its timeout a guard timer drops the
 *    connection if the library did not settle either;
 *  - a lost or refused connection is made again on the next request, with
 *    exponential back-off between attempts (reconnectMinMs … reconnectMaxMs);
 *    meanwhile requests fail at once (not_connected) instead of waiting;
 *  - a TCP connection that only times out (a gateway that went away without
 *    closing it) is dropped after a few timeouts in a row and made again;
 *  - on a serial line, a late answer must not be taken for the next one
 *    (RTU frames carry no transaction id): after a timeout or a garbled
 *    answer the line stays quiet a moment and unread bytes are discarded.
 */
import ModbusSerial from 'modbus-serial';
import type { Logger } from '../core/logger.js';
import type { ModbusMetrics, RequestResult } from './metrics.js';
import type { ModbusTransport, RegisterFunction } from './types.js';

export type ModbusErrorKind = Exclude<RequestResult, 'ok'>;

export class ModbusError extends Error {
  constructor(readonly kind: ModbusErrorKind, message: string, readonly exceptionCode?: number) {
    super(message);
    this.name = 'ModbusError';
  }
}

/** Modbus spec §7, exception codes. 10 and 11 come from a gateway: the device behind it did not answer. */
export const EXCEPTION_NAMES: Readonly<Record<number, string>> = {
  1: 'illegal function', 2: 'illegal data address', 3: 'illegal data value', 4: 'server device failure', 5: 'acknowledge',
  6: 'server device busy', 8: 'memory parity error', 10: 'gateway path unavailable', 11: 'gateway target device failed to respond',
};

export interface ReadOp { fn: RegisterFunction; unitId: number; address: number; count: number }
export type WriteOp =
  | { fn: 'holding'; unitId: number; address: number; words: number[] }
  | { fn: 'coil'; unitId: number; address: number; bit: boolean };

/** What a job may do while it holds the line. */
export interface LineIo {
  /** Register words (holding, input) or bits (coil, discrete), `count` of them. */
  read(op: ReadOp): Promise<(number | boolean)[]>;
  /** The device's echo of the write (function 5, 6 or 16). */
  write(op: WriteOp): Promise<Record<string, unknown>>;
}

export interface LineOptions {
  transport: ModbusTransport;
  requestTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  logger: Logger;
  metrics: ModbusMetrics;
  /** Timeouts in a row after which a TCP connection is made again (default 3). */
  dropAfterTimeouts?: number;
}

// modbus-serial is CommonJS; its module.exports is the client class, also exported as `default`.
const ModbusRTU = ModbusSerial.default;
type ModbusRTU = InstanceType<typeof ModbusRTU>;

/** How long past its own timeout modbus-serial may take to settle a request before the guard gives up on the connection. */
const GUARD_MS = 500;

/** The longest a connection attempt may take before it counts as failed (connection()). */
const connectLimitMs = (requestTimeoutMs: number): number => Math.max(1000, 2 * requestTimeoutMs);

/**
 * The longest one request can hold the line once it is its turn: a connection made first, then
 * the request and its guard. Cluster mode sizes its forwarding timeout on it (writes.ts).
 */
export function worstRequestMs(requestTimeoutMs: number): number {
  return connectLimitMs(requestTimeoutMs) + requestTimeoutMs + GUARD_MS;
}

export class ModbusLine {
  private client: ModbusRTU | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private backoffMs = 0;
  private retryAt = 0;
  private timeoutsInARow = 0;
  private quietUntil = 0;
  private readonly io: LineIo;
  readonly name: string;

  constructor(private readonly opts: LineOptions) {
    const t = opts.transport;
    this.name = t.type === 'modbus-tcp' ? `gateway ${t.host}:${t.port}` : `serial line ${t.path}`;
    this.io = { read: (op) => this.read(op), write: (op) => this.write(op) };
  }

  private get serial(): boolean { return this.opts.transport.type === 'modbus-rtu'; }

  /** Runs `job` when every job queued before it is done; the line is its alone meanwhile. */
  exclusive<T>(job: (io: LineIo) => Promise<T>): Promise<T> {
    const run = this.tail.then(() => {
      if (this.closed) throw new ModbusError('not_connected', `${this.name} is closed`);
      return job(this.io);
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Closes the connection now (a request under way fails); the next request
   * opens a new one. `why` is logged and counted as a disconnect.
   */
  disconnect(why?: string): Promise<void> { return this.drop(why); }

  /** Refuses further jobs, waits for the one running, closes the connection. */
  async close(): Promise<void> {
    this.closed = true;
    await this.tail;
    await this.drop();
  }

  // ---- requests ----------------------------------------------------------

  private async read(op: ReadOp): Promise<(number | boolean)[]> {
    const res = await this.request(op.unitId, (c): Promise<{ data: (number | boolean)[] }> => {
      switch (op.fn) {
        case 'holding': return c.readHoldingRegisters(op.address, op.count);
        case 'input': return c.readInputRegisters(op.address, op.count);
        case 'coil': return c.readCoils(op.address, op.count);
        case 'discrete': return c.readDiscreteInputs(op.address, op.count);
      }
    });
    // Bits come back padded to whole bytes; registers exactly `count`.
    if (res.data.length < op.count) throw new ModbusError('error', `short answer: ${res.data.length} of ${op.count} values`);
    return res.data.slice(0, op.count);
  }

  private async write(op: WriteOp): Promise<Record<string, unknown>> {
    const echo = await this.request(op.unitId, (c): Promise<object> => {
      if (op.fn === 'coil') return c.writeCoil(op.address, op.bit); // function 5
      // Function 6 for one register: many small sensors implement 6 but not 16.
      return op.words.length === 1 ? c.writeRegister(op.address, op.words[0]!) : c.writeRegisters(op.address, op.words);
    });
    return { ...echo };
  }

  private async request<T>(unitId: number, call: (c: ModbusRTU) => Promise<T>): Promise<T> {
    let c: ModbusRTU;
    try {
      c = await this.connection();
    } catch (err) {
      this.opts.metrics.requests.labels('not_connected').inc();
      throw err;
    }
    if (this.serial) await this.settle(c);
    c.setID(unitId);
    const t0 = performance.now();
    try {
      const res = await guard(call(c), this.opts.requestTimeoutMs + GUARD_MS);
      this.opts.metrics.requests.labels('ok').inc();
      this.opts.metrics.requestSeconds.observe((performance.now() - t0) / 1000);
      this.timeoutsInARow = 0;
      return res;
    } catch (err) {
      const e = this.classify(err);
      this.opts.metrics.requests.labels(e.kind).inc();
      throw e;
    }
  }

  private classify(err: unknown): ModbusError {
    const e = err as { name?: string; errno?: string; message?: string; modbusCode?: number };
    const t = this.opts.requestTimeoutMs;
    if (err === GUARD_FIRED) {
      void this.drop('the driver settled no request');
      return new ModbusError('timeout', `no answer within ${t} ms`);
    }
    if (typeof e.modbusCode === 'number') {
      this.timeoutsInARow = 0;
      return new ModbusError('exception', `exception ${e.modbusCode} (${EXCEPTION_NAMES[e.modbusCode] ?? 'unknown'})`, e.modbusCode);
    }
    if (e.name === 'TransactionTimedOutError' || e.errno === 'ETIMEDOUT') {
      this.timeoutsInARow++;
      if (this.serial) this.quietUntil = Date.now() + quietMs(this.opts.transport);
      else if (this.timeoutsInARow >= (this.opts.dropAfterTimeouts ?? 3)) void this.drop(`${this.timeoutsInARow} timeouts in a row`);
      return new ModbusError('timeout', `no answer within ${t} ms`);
    }
    if (e.name === 'PortNotOpenError') {
      void this.drop('port not open');
      return new ModbusError('not_connected', `${this.name} is not connected`);
    }
    if (this.serial) this.quietUntil = Date.now() + quietMs(this.opts.transport);
    return new ModbusError('error', e.message ?? String(err));
  }

  /** Serial line: after a timeout or a garbled answer, wait for silence and forget what arrived meanwhile. */
  private async settle(c: ModbusRTU): Promise<void> {
    const wait = this.quietUntil - Date.now();
    if (wait <= 0) return;
    await new Promise((r) => setTimeout(r, wait));
    this.quietUntil = 0;
    // modbus-serial 8's RTUBufferedPort keeps unmatched bytes in `_buffer` and matches the next answer against them.
    const port = (c as unknown as { _port?: { _buffer?: unknown } })._port;
    if (port && Buffer.isBuffer(port._buffer)) port._buffer = Buffer.alloc(0);
  }

  // ---- connection --------------------------------------------------------

  private async connection(): Promise<ModbusRTU> {
    if (this.client?.isOpen) return this.client;
    if (this.client) await this.drop('found closed');
    const now = Date.now();
    if (now < this.retryAt) throw this.notConnected(`next attempt in ${this.retryAt - now} ms`);
    const client = new ModbusRTU();
    // modbus-serial re-emits port errors; an 'error' event without a listener would throw.
    client.on('error', (err: unknown) => this.opts.logger.debug({ err, line: this.name }, 'modbus port error'));
    client.on('close', () => {
      if (this.client !== client) return;
      this.client = null;
      this.opts.metrics.disconnects.inc();
      this.opts.logger.warn({ line: this.name }, 'modbus connection lost; reconnecting on the next request');
    });
    // Before connecting: connectTCP also takes it as the connect timeout.
    client.setTimeout(this.opts.requestTimeoutMs);
    const t = this.opts.transport;
    try {
      const opening = t.type === 'modbus-tcp'
        ? client.connectTCP(t.host, { port: t.port })
        : client.connectRTUBuffered(t.path, { baudRate: t.baudRate, parity: t.parity, dataBits: 8, stopBits: 1 });
      await guard(opening, connectLimitMs(this.opts.requestTimeoutMs));
    } catch (err) {
      closeQuietly(client, this.serial);
      this.backoffMs = this.backoffMs ? Math.min(this.opts.reconnectMaxMs, this.backoffMs * 2) : this.opts.reconnectMinMs;
      this.retryAt = Date.now() + this.backoffMs;
      this.opts.metrics.connects.labels('failed').inc();
      const why = err === GUARD_FIRED ? 'timed out' : (err as Error)?.message ?? String(err);
      this.opts.logger.warn({ line: this.name, retryInMs: this.backoffMs, err: why }, 'modbus connection failed');
      throw this.notConnected(why);
    }
    if (this.closed) {
      closeQuietly(client, this.serial);
      throw this.notConnected('closed');
    }
    this.client = client;
    this.backoffMs = 0;
    this.retryAt = 0;
    this.timeoutsInARow = 0;
    this.opts.metrics.connects.labels('ok').inc();
    this.opts.logger.info({ line: this.name }, 'modbus connected');
    return client;
  }

  private notConnected(why: string): ModbusError {
    return new ModbusError('not_connected', `${this.name} unreachable (${why})`);
  }

  /** Closes the current connection; the next request makes a new one. */
  private async drop(why?: string): Promise<void> {
    const c = this.client;
    this.client = null;
    if (!c) return;
    if (why) {
      this.opts.metrics.disconnects.inc();
      this.opts.logger.warn({ line: this.name, why }, 'modbus connection dropped; reconnecting on the next request');
    }
    await closeQuietly(c, this.serial);
  }
}

/** Quiet time after a failed exchange on a serial line: the Modbus over Serial Line spec's 3.5-character gap, many times over. */
function quietMs(t: ModbusTransport): number {
  return t.type === 'modbus-rtu' ? Math.max(50, Math.ceil((11 * 3.5 * 1000) / t.baudRate) * 4) : 0;
}

const GUARD_FIRED = Symbol('guard');

/** The promise, or GUARD_FIRED (rejected) after `ms`. The original promise's late rejection is swallowed. */
function guard<T>(p: Promise<T>, ms: number): Promise<T> {
  p.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(GUARD_FIRED), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * TCP: destroy (end() waits for the peer, and modbus-serial's close callback
 * never fires on an already closed socket). Serial: close the port
 * (modbus-serial's destroy() does not close a serial port).
 */
function closeQuietly(c: ModbusRTU, serial: boolean): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => resolve();
    const timer = setTimeout(done, 1000);
    try {
      if (serial) c.close(() => { clearTimeout(timer); done(); });
      else c.destroy(() => { clearTimeout(timer); done(); });
    } catch {
      clearTimeout(timer);
      done();
    }
  });
}
