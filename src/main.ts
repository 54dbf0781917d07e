/**
 * Entry point: load settings (a bad or missing one stops the start with one
 * line naming it), build and start the app (a data directory in use by
 * another server stops it with one line too), stop cleanly on SIGTERM/SIGINT
 * (buffers flushed, connections closed).
 */
// First: before aedes loads its MQTT parser (see quiet-debug.ts).
import './core/quiet-debug.js';
import { loadConfig, ConfigError } from './config/index.js';
import { EXIT, createLogger, exitStatusFor, isKengError } from './core/index.js';
import { buildApp } from './app.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`keng: ${err.message}\n`);
      process.exit(EXIT.CONFIG);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const app = buildApp(config, { logger });
  try {
    await app.start();
  } catch (err) {
    const status = exitStatusFor(isKengError(err) ? err.code : undefined);
    if (status !== EXIT.FAILURE) {
      // A refusal that a person must resolve, not a crash: one line, like a bad setting.
      process.stderr.write(`keng: ${(err as Error).message}\n`);
      process.exit(status);
    }
    logger.fatal({ err }, `keng could not start: ${(err as Error).message}`);
    process.stderr.write(`keng: could not start: ${(err as Error).message}\n`);
    process.exit(1);
  }
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    const force = setTimeout(() => { logger.error('stop took too long; exiting'); process.exit(1); }, 30_000);
    force.unref();
    app.stop().then(() => process.exit(0), (err) => { logger.error({ err }, 'stop failed'); process.exit(1); });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));
}

void main();
