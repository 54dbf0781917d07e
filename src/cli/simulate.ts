/**
 * `keng simulate`: a fleet of simulated sensors speaking device protocol v1.
 * (Simulated loudspeakers will get their own option in a later change.)
 */
import { InvalidArgumentError, type Command } from 'commander';
import { isProfileName, parseDuration, runSimulation, type ProfileName } from '../sim/index.js';

function int(min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    return n;
  };
}

function duration(v: string): number {
  try { return parseDuration(v); } catch (err) { throw new InvalidArgumentError((err as Error).message); }
}

function profile(v: string): ProfileName | 'mixed' {
  if (v === 'mixed' || isProfileName(v)) return v;
  throw new InvalidArgumentError('expected soil, weather, water, air or mixed');
}

interface SimulateOpts {
  sensors: number; url: string; api?: string; token?: string; area?: string; interval: number; qos: number;
  prefix: string; duration?: number; credentials: string; profile: ProfileName | 'mixed'; ramp: number;
  window: number; useToken?: boolean; offlineEvery?: number; offlineFor: number; seed: number;
}

export function registerSimulate(program: Command): void {
  program
    .command('simulate')
    .description('run simulated sensors against a Keng controller (registers them first when --api and --token are given)')
    .option('--sensors <n>', 'number of simulated sensors', int(1, 100_000), 10)
    .option('--url <url>', 'MQTT broker URL', 'mqtt://127.0.0.1:1883')
    .option('--api <url>', 'Keng HTTP base URL, to register the devices (e.g. http://127.0.0.1:8080)')
    .option('--token <token>', 'admin bearer token for registration (default: $KENG_ADMIN_TOKEN)')
    .option('--area <code>', 'existing area to register the devices in (default: a "sim" province, created if missing)')
    .option('--interval <duration>', 'telemetry interval per sensor (e.g. 5s, 500ms, 1m)', duration, 5000)
    .option('--qos <0|1>', 'telemetry QoS', int(0, 1), 1)
    .option('--prefix <prefix>', 'device id prefix', 'sim-')
    .option('--duration <duration>', 'stop after this long (default: run until Ctrl-C)', duration)
    .option('--credentials <file>', 'credentials file (written on registration, read otherwise)', 'sim-creds.json')
    .option('--profile <name>', 'sensor profile: soil, weather, water, air or mixed', profile, 'mixed')
    .option('--ramp <per-second>', 'connection attempts started per second', int(1, 100_000), 50)
    .option('--window <n>', 'max-throughput mode: keep n QoS 1 messages in flight per sensor (ignores --interval)', int(0, 65_535), 0)
    .option('--use-token', 'log in with the access token (ThingsBoard style, v1/devices/me/...) instead of id + secret')
    .option('--offline-every <duration>', 'store-and-forward: go offline about this often, buffer readings, upload the backlog on return', duration)
    .option('--offline-for <duration>', 'store-and-forward: length of each outage', duration, 60_000)
    .option('--seed <n>', 'random seed', int(0, 2 ** 31 - 1), 1)
    .action(async (o: SimulateOpts) => {
      if (o.window > 0 && o.qos !== 1) throw new InvalidArgumentError('--window needs --qos 1');
      const token = o.token ?? (o.api ? process.env.KENG_ADMIN_TOKEN : undefined);
      try {
        process.exitCode = await runSimulation({
          sensors: o.sensors, url: o.url,
          ...(o.api ? { api: o.api } : {}),
          ...(token ? { token } : {}),
          ...(o.area ? { area: o.area } : {}),
          intervalMs: o.interval, qos: o.qos as 0 | 1, prefix: o.prefix,
          ...(o.duration ? { durationMs: o.duration } : {}),
          credentialsPath: o.credentials, profile: o.profile, rampPerSec: o.ramp, window: o.window,
          useToken: o.useToken ?? false, seed: o.seed,
          ...(o.offlineEvery ? { storeForward: { everyMs: o.offlineEvery, offlineMs: o.offlineFor } } : {}),
        });
      } catch (err) {
        process.stderr.write(`keng simulate: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
