export { LiveFeed, type LiveFeedOptions, type LiveStats } from './feed.js';
export type { LiveRegistry, SubscribeAck } from './subscriptions.js';
export { DEFAULT_LIVE_SETTINGS, type LiveFeedSettings } from './options.js';
export type { TelemetryMsg, StatusMsg, BroadcastMsg } from './format.js';
