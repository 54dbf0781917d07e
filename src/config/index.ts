export { ConfigSchema, CONFIG_DEFAULTS, type Config } from './schema.js';
export { loadConfig, ConfigError, type LoadOptions, type DeepPartial } from './load.js';
export { ENV_BINDINGS } from './env.js';
