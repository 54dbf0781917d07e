/**
 * `keng simulate`: a fleet of simulated sensors speaking device protocol v1,
 * and with `--speakers N` simulated loudspeakers (the reference speaker of
 * src/sim/speaker: fetch + sha256 check, accelerated play with --speed,
 * priorities, playback events, faults --fail-rate / --reject / --accept-delay).
 * `--speakers` alone runs speakers only; with an explicit `--sensors` both run.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { isProfileName, parseDuration, runSimulation, type ProfileName } from '../sim/index.js';
import { runSpeakerSimulation } from '../sim/speaker-fleet.js';

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

function num(min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number from ${min} to ${max}`);
    return n;
  };
}

function profile(v: string): ProfileName | 'mixed' {
  if (v === 'mixed' || isProfileName(v)) return v;
  throw new InvalidArgumentError('expected soil, weather, water, air or mixed');
}

interface SimulateOpts {
  sensors: number; url: string; api?: string; token?: string; area?: string; interval: number; qos: number;
  prefix: string; duration?: number; credentials: string; profile: ProfileName | 'mixed'; ramp: number;
  window: number; useToken?: boolean; offlineEvery?: number; offlineFor: number; seed: number;
  speakers?: number; speakerPrefix: string; speakerCredentials: string; speed: number; failRate: number; reject?: boolean; acceptDelay?: number;
  verifyCommands?: boolean;
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
    .option('--speakers <n>', 'number of simulated loudspeakers (alone: speakers only; with --sensors: both)', int(1, 100_000))
    .option('--speaker-prefix <prefix>', 'speaker device id prefix', 'sim-loa-')
    .option('--speaker-credentials <file>', 'speaker credentials file (written on registration, read otherwise)', 'sim-speakers.json')
    .option('--speed <factor>', 'speakers: play-time factor (1 = real time, 10 = ten times faster)', num(0.01, 10_000), 1)
    .option('--fail-rate <p>', 'speakers: probability (0-1) that a playback fails midway', num(0, 1), 0)
    .option('--reject', 'speakers: answer every broadcast.play "rejected"')
    .option('--accept-delay <duration>', 'speakers: wait this long before answering broadcast.play (slow speaker)', duration)
    .option('--verify-commands', 'speakers: fetch the command keys (with --api, --token) and refuse unsigned or badly signed play/stop')
    .action(async (o: SimulateOpts, cmd: Command) => {
      if (o.window > 0 && o.qos !== 1) throw new InvalidArgumentError('--window needs --qos 1');
      const token = o.token ?? (o.api ? process.env.KENG_ADMIN_TOKEN : undefined);
      const withSensors = !o.speakers || cmd.getOptionValueSource('sensors') !== 'default';
      try {
        const runs: Array<Promise<number>> = [];
        if (o.speakers) {
          runs.push(runSpeakerSimulation({
            speakers: o.speakers, url: o.url, ...(o.api ? { api: o.api } : {}), ...(token ? { token } : {}), ...(o.area ? { area: o.area } : {}),
            prefix: o.speakerPrefix, credentialsPath: o.speakerCredentials, speed: o.speed, useToken: o.useToken ?? false, seed: o.seed,
            verifyCommands: o.verifyCommands ?? false,
            faults: {
              ...(o.failRate > 0 ? { failRate: o.failRate } : {}), ...(o.reject ? { rejectAll: true } : {}),
              ...(o.acceptDelay ? { acceptDelayMs: o.acceptDelay } : {}),
              ...(o.offlineEvery ? { offline: { afterMs: o.offlineEvery, forMs: o.offlineFor, everyMs: o.offlineEvery } } : {}),
            },
            ...(o.duration ? { durationMs: o.duration } : {}),
          }));
        }
        if (withSensors) runs.push(runSimulation({
          sensors: o.sensors, url: o.url,
          ...(o.api ? { api: o.api } : {}),
          ...(token ? { token } : {}),
          ...(o.area ? { area: o.area } : {}),
          intervalMs: o.interval, qos: o.qos as 0 | 1, prefix: o.prefix,
          ...(o.duration ? { durationMs: o.duration } : {}),
          credentialsPath: o.credentials, profile: o.profile, rampPerSec: o.ramp, window: o.window,
          useToken: o.useToken ?? false, seed: o.seed,
          ...(o.offlineEvery ? { storeForward: { everyMs: o.offlineEvery, offlineMs: o.offlineFor } } : {}),
        }));
        const codes = await Promise.all(runs);
        process.exitCode = Math.max(0, ...codes);
      } catch (err) {
        process.stderr.write(`keng simulate: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
