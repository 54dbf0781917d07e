import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/** Paths redacted from every log line (secrets never reach logs). */
export const REDACT_PATHS = [
  'password', '*.password', 'secret', '*.secret', 'token', '*.token', 'accessToken', '*.accessToken',
  'adminToken', '*.adminToken', 'req.headers.authorization', 'headers.authorization',
  'influx.token', 'influx.password', 'config.adminToken', 'config.influx.token', 'config.influx.password',
  'audit.key', 'config.audit.key',
];

/** The one root logger; modules take `root.child({ module: 'name' })`. */
export function createLogger(level: string, opts: { destination?: NodeJS.WritableStream } = {}): Logger {
  const options: LoggerOptions = {
    level,
    base: { service: 'keng' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return opts.destination ? pino(options, opts.destination as pino.DestinationStream) : pino(options);
}
