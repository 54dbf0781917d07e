/** Schedules: model and validation, occurrences, overlap check, persistence and the scheduler. */
export * from './model.js';
export * from './occurrences.js';
export * from './overlap.js';
export * from './repo.js';
export * from './scheduler.js';
export { isValidTimeZone, fixedOffsetMinutes } from '../../core/time.js';
