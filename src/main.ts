/**
 * Entry point: load settings (a bad or missing one stops the start with one
 * line naming it), build and start the app, stop cleanly on SIGTERM/SIGINT
 * (buffers flushed, connections closed).
 */
import { loadConfig, ConfigError } from './config/index.js';
import { createLogger } from './core/index.js';
import { buildApp } from './app.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`keng: ${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const app = buildApp(config, { logger });
  try {
    await app.start();
  } catch (err) {
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
