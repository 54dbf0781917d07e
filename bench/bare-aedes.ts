/**
 * The baseline of `npm run bench:ingest`: a bare aedes broker (defaults, no
 * authentication, no hooks) on a plain net server, in its own process like
 * Keng, so the same load generator can be run against both. It acknowledges
 * QoS 1 as fast as aedes can; Keng's ratio to it is what Keng's own work costs.
 *
 *   node dist/bench/bare-aedes.js [port]     prints `listening <port>` once ready
 */
import net from 'node:net';
import { Aedes } from 'aedes';

const aedes = await Aedes.createBroker();
const server = net.createServer({ noDelay: true }, (sock) => { aedes.handle(sock); });
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  const addr = server.address() as net.AddressInfo;
  process.stdout.write(`listening ${addr.port}\n`);
});
const stop = (): void => {
  server.close();
  aedes.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
