export * from './errors.js';
export * from './events.js';
export * from './logger.js';
export * from './clock.js';
export * from './metrics.js';
export * from './lifecycle.js';
export * from './exit-codes.js';
export * from './secret-file.js';
