/** Runs Keng as a real child process (node dist/src/main.js), for crash and signal tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

import { freePort } from '../../tools/ports.js';

export { freePort };

export interface KengProcess {
  proc: ChildProcess;
  httpUrl: string;
  mqttPort: number;
  output(): string;
  /** Resolves with the exit code/signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function spawnKeng(env: Record<string, string>, opts: { httpPort?: number; mqttPort?: number; timeoutMs?: number } = {}): Promise<KengProcess> {
  const httpPort = opts.httpPort ?? await freePort();
  const mqttPort = opts.mqttPort ?? await freePort();
  let out = '';
  const proc = spawn(process.execPath, [path.join(ROOT, 'dist/src/main.js')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', KENG_LOG_LEVEL: 'warn', KENG_HTTP_HOST: '127.0.0.1', KENG_MQTT_HOST: '127.0.0.1',
      KENG_HTTP_PORT: String(httpPort), KENG_MQTT_PORT: String(mqttPort), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const httpUrl = `http://127.0.0.1:${httpPort}`;
  const t0 = Date.now();
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`keng exited early (${proc.exitCode}):\n${out}`);
    try {
      const r = await fetch(`${httpUrl}/readyz`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() - t0 > (opts.timeoutMs ?? 20_000)) { proc.kill('SIGKILL'); throw new Error(`keng not ready:\n${out}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, httpUrl, mqttPort, output: () => out, exited };
}
