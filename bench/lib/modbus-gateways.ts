/**
 * The simulated Modbus TCP gateways of `npm run bench:modbus`, run in a
 * child process (its CPU is not Keng's): modbus-serial's ServerTCP for each
 * healthy gateway, answering every unit id with fixed register values; one
 * "silent" gateway that accepts TCP connections and never answers; one port
 * nothing listens on (connection refused).
 *
 * Started with fork(); sends `{ready: [{kind, port}]}` over IPC, answers
 * `{stats: true}` with `{stats: {requests, cpuMs}}`.
 */
import net from 'node:net';
import ModbusSerial from 'modbus-serial';

type Kind = 'healthy' | 'silent' | 'refused';
interface Gw { kind: Kind; port: number }

const { ServerTCP } = ModbusSerial as unknown as {
  ServerTCP: new (v: object, o: object) => import('node:events').EventEmitter & { close(cb: () => void): void };
};

let requests = 0;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function healthy(): Promise<number> {
  const port = await freePort();
  // Soil probe values inside the shipped map's ranges: 20.0 %, 20.1 °C, 202 µS/cm.
  const vector = {
    getHoldingRegister: (addr: number) => { requests++; return 200 + addr; },
    getMultipleHoldingRegisters: (addr: number, length: number) => {
      requests++;
      return Array.from({ length }, (_, i) => 200 + addr + i);
    },
    getInputRegister: (addr: number) => 200 + addr,
    getCoil: () => false,
    getDiscreteInput: () => false,
    setRegister: () => undefined,
    setCoil: () => undefined,
  };
  const server = new ServerTCP(vector, { host: '127.0.0.1', port, unitID: 255 });
  server.on('socketError', () => undefined);
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => { server.once('initialized', () => resolve()); server.once('serverError', reject); });
  return port;
}

async function silent(): Promise<number> {
  const server = net.createServer((sock) => { sock.on('data', () => undefined); sock.on('error', () => undefined); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const a = server.address();
  return typeof a === 'object' && a ? a.port : 0;
}

async function main(): Promise<void> {
  const [healthyCount, silentCount, refusedCount] = (process.argv[2] ?? '8,1,1').split(',').map(Number) as [number, number, number];
  const gws: Gw[] = [];
  for (let i = 0; i < healthyCount; i++) gws.push({ kind: 'healthy', port: await healthy() });
  for (let i = 0; i < silentCount; i++) gws.push({ kind: 'silent', port: await silent() });
  for (let i = 0; i < refusedCount; i++) gws.push({ kind: 'refused', port: await freePort() });
  process.on('message', (m: { stats?: boolean }) => {
    if (m.stats) {
      const u = process.cpuUsage();
      process.send!({ stats: { requests, cpuMs: (u.user + u.system) / 1000 } });
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.send!({ ready: gws });
}

main().catch((err: unknown) => { console.error(err); process.exit(1); });
