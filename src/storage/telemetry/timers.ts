/** The telemetry stores' timers are the core ones (src/core/clock.ts). */
export { realTimers, type Timers } from '../../core/clock.js';
