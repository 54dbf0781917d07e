/** The reference loudspeaker simulator: a speaker to test broadcasts against without hardware (tests, benchmarks, `keng simulate --speakers`). */
export * from './playout.js';
export * from './params.js';
export * from './media.js';
export * from './speaker.js';
export * from './run-speakers.js';
export * from './verify.js';
