/**
 * Component-test helper: the LiveFeed of a running test app, or a second one
 * with other settings. Without settings the app's own feed (`app.live`) is
 * returned; with settings a second feed is attached to the same HTTP server
 * (give it its own `path` then, e.g. "/live-test") so a test can tune limits
 * without rebuilding the app.
 */
import type { KengApp } from '../../src/app.js';
import { LiveFeed, type LiveFeedSettings } from '../../src/live/index.js';

export async function attachLiveFeedForTest(app: KengApp, options: Partial<LiveFeedSettings> = {}): Promise<{ feed: LiveFeed; stop: () => Promise<void> }> {
  if (Object.keys(options).length === 0) return { feed: app.live, stop: async () => { /* stopped by app.stop() */ } };
  const feed = new LiveFeed({
    bus: app.bus, authenticator: app.authenticator, policy: app.policy, registry: app.registry,
    logger: app.logger.child({ module: 'live' }), metrics: app.metrics,
    options: { tz: app.config.tz, corsOrigins: app.config.http.corsOrigins, ...options },
  });
  feed.attach(app.api.fastify.server);
  await feed.start();
  return { feed, stop: () => feed.stop() };
}
