/** The reference loudspeaker simulator (issue 3 item 5). */
export * from './playout.js';
export * from './params.js';
export * from './media.js';
export * from './speaker.js';
export * from './run-speakers.js';
