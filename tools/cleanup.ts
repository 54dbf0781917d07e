/**
 * Everything the benchmark starts registers how to stop it here. Cleanup runs
 * on normal end, on failure and on Ctrl-C/SIGTERM; child processes still alive
 * at exit are killed as a last resort.
 */
import type { ChildProcess } from 'node:child_process';

type Cleanup = { name: string; fn: () => Promise<void> | void };

const cleanups: Cleanup[] = [];
const children = new Set<ChildProcess>();
let installed = false;
let running: Promise<void> | null = null;

export function onCleanup(name: string, fn: () => Promise<void> | void): () => void {
  const c = { name, fn };
  cleanups.push(c);
  return () => {
    const i = cleanups.indexOf(c);
    if (i >= 0) cleanups.splice(i, 1);
  };
}

export function trackChild(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}

/** Runs cleanups in reverse order of registration, each bounded in time. */
export function runCleanups(): Promise<void> {
  running ??= (async () => {
    while (cleanups.length) {
      const c = cleanups.pop()!;
      try {
        await Promise.race([Promise.resolve(c.fn()), new Promise((r) => setTimeout(r, 35_000))]);
      } catch (err) {
        process.stderr.write(`cleanup ${c.name} failed: ${(err as Error).message}\n`);
      }
    }
  })();
  return running;
}

export function installSignalHandlers(): void {
  if (installed) return;
  installed = true;
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\n${sig}: stopping everything the benchmark started...\n`);
    void runCleanups().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
}
