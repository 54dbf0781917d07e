/**
 * SpeakerSim: N simulated loudspeakers over MQTT, and runSpeakers() for the
 * CLI (`keng simulate --speakers N`). Speakers must be registered (kind
 * "speaker") beforehand; their credentials come as a list or from the
 * simulator credentials file written by `keng simulate`.
 */
import { readCredentials } from '../credentials.js';
import { createRng, hashSeed } from '../random.js';
import { SimSpeaker, type SimSpeakerOptions, type SpeakerEvent, type SpeakerFaults } from './speaker.js';
import type { CommandKey } from './verify.js';

export interface SpeakerCredential { id: string; secret?: string; accessToken?: string }

export interface RunSpeakersOptions {
  /** Broker URL, e.g. mqtt://127.0.0.1:1883. */
  url: string;
  /** Credentials, or the path of a simulator credentials file ({"version":1,"devices":[...]}). */
  credentials: SpeakerCredential[] | string;
  /** Use the first `count` credentials (default: all). */
  count?: number;
  /** Play-time factor (1 = real time). Default 1. */
  speed?: number;
  /** The same faults for every speaker, or per speaker (index in the credential list). */
  faults?: SpeakerFaults | ((id: string, index: number) => SpeakerFaults | undefined);
  /** Log in with access tokens (ThingsBoard style, `v1/devices/me/...`). */
  useToken?: boolean;
  /** The installation's command keys (GET /api/v1/command-keys): the speakers verify signed commands (§11.6). */
  commandKeys?: readonly CommandKey[];
  /** With commandKeys: refuse unsigned broadcast.play / broadcast.stop. */
  requireSignedCommands?: boolean;
  /** Support media.prefetch (§12.7), for every speaker or per speaker. Default true; false imitates firmware without it. */
  prefetch?: boolean | ((id: string, index: number) => boolean);
  telemetryIntervalMs?: number;
  /** Connections opened at once while starting. Default 50. */
  connectConcurrency?: number;
  seed?: number;
  onError?: (id: string, err: Error) => void;
}

export interface SpeakerSimStats { speakers: number; connected: number; events: Record<string, number> }

export class SpeakerSim {
  readonly speakers: SimSpeaker[];

  constructor(private readonly o: RunSpeakersOptions) {
    const creds = typeof o.credentials === 'string' ? loadFile(o.credentials) : o.credentials;
    const chosen = o.count !== undefined ? creds.slice(0, o.count) : creds;
    if (o.count !== undefined && chosen.length < o.count) throw new Error(`only ${chosen.length} speaker credentials available, ${o.count} asked for`);
    this.speakers = chosen.map((c, i) => {
      const faults = typeof o.faults === 'function' ? o.faults(c.id, i) : o.faults;
      const opts: SimSpeakerOptions = {
        id: c.id, url: o.url, speed: o.speed ?? 1,
        ...(c.secret !== undefined ? { secret: c.secret } : {}),
        ...(c.accessToken !== undefined ? { accessToken: c.accessToken } : {}),
        ...(o.useToken ? { useToken: true } : {}),
        ...(o.commandKeys ? { commandKeys: o.commandKeys, requireSignedCommands: o.requireSignedCommands ?? false } : {}),
        ...(o.telemetryIntervalMs !== undefined ? { telemetryIntervalMs: o.telemetryIntervalMs } : {}),
        ...(o.prefetch !== undefined ? { prefetch: typeof o.prefetch === 'function' ? o.prefetch(c.id, i) : o.prefetch } : {}),
        ...(faults ? { faults } : {}),
        rng: createRng(hashSeed(c.id) ^ (o.seed ?? 0)),
        onError: (err) => o.onError?.(c.id, err),
      };
      return new SimSpeaker(opts);
    });
  }

  get(id: string): SimSpeaker | undefined {
    return this.speakers.find((s) => s.id === id);
  }

  async start(): Promise<void> {
    const width = Math.max(1, this.o.connectConcurrency ?? 50);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < this.speakers.length) await this.speakers[next++]!.start();
    };
    await Promise.all(Array.from({ length: Math.min(width, this.speakers.length) }, worker));
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.speakers.map((s) => s.stop()));
  }

  stats(): SpeakerSimStats {
    const events: Record<string, number> = {};
    for (const s of this.speakers) for (const e of s.events) events[e.state] = (events[e.state] ?? 0) + 1;
    return { speakers: this.speakers.length, connected: this.speakers.filter((s) => s.isConnected).length, events };
  }

  /** Every playback event of every speaker, oldest first. */
  events(): Array<SpeakerEvent & { deviceId: string }> {
    return this.speakers.flatMap((s) => s.events.map((e) => ({ ...e, deviceId: s.id }))).sort((a, b) => a.at - b.at);
  }
}

function loadFile(path: string): SpeakerCredential[] {
  const f = readCredentials(path);
  if (!f) throw new Error(`${path}: no such credentials file`);
  return f.devices.map((d) => ({
    id: d.id, ...(d.secret !== undefined ? { secret: d.secret } : {}), ...(d.accessToken !== undefined ? { accessToken: d.accessToken } : {}),
  }));
}

/** Starts `count` speakers and resolves when all are connected; stop with `await sim.stop()`. */
export async function runSpeakers(opts: RunSpeakersOptions): Promise<SpeakerSim> {
  const sim = new SpeakerSim(opts);
  try {
    await sim.start();
  } catch (err) {
    await sim.stop();
    throw err;
  }
  return sim;
}
