export { LiveFeed, type LiveFeedOptions, type LiveRegistry, type LiveStats, type SubscribeAck } from './feed.js';
export { DEFAULT_LIVE_SETTINGS, type LiveFeedSettings } from './options.js';
export { timeFormatter, type TelemetryMsg, type StatusMsg, type BroadcastMsg } from './format.js';
