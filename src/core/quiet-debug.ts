/**
 * Silent `debug` loggers that cost nothing.
 *
 * The MQTT parser and writer under aedes (mqtt-packet) call the `debug`
 * package some twenty times for every PUBLISH and PUBACK, with debugging off
 * too: each call builds an arguments array and asks a property getter whether
 * its namespace is on. On the broker thread, which every device message
 * crosses, that was several per cent of its time at fleet load. Keng logs
 * with pino; `debug` output is only for someone chasing a library bug.
 *
 * So, imported first by the entry point (before aedes loads mqtt-packet):
 * a logger whose namespace is off when it is created (the usual `DEBUG`
 * environment variable decides, as before) is an empty function. `DEBUG=
 * mqtt-packet:*` still gives the real logger. What is lost: turning a
 * namespace on later from code (`debug.enable()`), which Keng never does.
 */
import { createRequire } from 'node:module';

type Debugger = ((...args: unknown[]) => void) & { enabled: boolean; namespace: string; extend: (sub: string, delimiter?: string) => Debugger };
type CreateDebug = ((namespace: string) => Debugger) & Record<string, unknown>;

const require = createRequire(import.meta.url);

/** Installs the shim into the module cache; true if `debug` was found and is now quiet. Idempotent. */
export function quietDebug(): boolean {
  let path: string;
  try { path = require.resolve('debug'); } catch { return false; }
  const real = require('debug') as CreateDebug;
  if (real.keng_quiet === true) return true;
  const entry = require.cache[path];
  if (!entry) return false;
  const quiet = Object.assign((namespace: string): Debugger => {
    const d = real(namespace);
    return d.enabled ? d : silent(namespace, quiet);
  }, real, { keng_quiet: true }) as CreateDebug;
  entry.exports = quiet;
  return true;
}

function silent(namespace: string, create: (ns: string) => Debugger): Debugger {
  const d = (() => undefined) as unknown as Debugger;
  d.enabled = false;
  d.namespace = namespace;
  d.extend = (sub, delimiter = ':') => create(namespace + delimiter + sub);
  return d;
}

quietDebug();
