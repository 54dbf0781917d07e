/**
 * Until app.ts builds the LiveFeed itself, tests attach one to a running app
 * with this. When the app already has one (`app.live`) and no settings are
 * given, that one is returned; with settings a second feed is attached (give
 * it its own `path` then, e.g. "/live-test").
 */
import type { KengApp } from '../app.js';
import { LiveFeed } from './feed.js';
import type { LiveFeedSettings } from './options.js';

export async function attachLiveFeedForTest(app: KengApp, options: Partial<LiveFeedSettings> = {}): Promise<{ feed: LiveFeed; stop: () => Promise<void> }> {
  const wired = (app as KengApp & { live?: LiveFeed }).live;
  if (wired && Object.keys(options).length === 0) return { feed: wired, stop: async () => { /* stopped by app.stop() */ } };
  const feed = new LiveFeed({
    bus: app.bus, authenticator: app.authenticator, policy: app.policy, registry: app.registry,
    logger: app.logger.child({ module: 'live' }), metrics: app.metrics,
    options: { tz: app.config.tz, corsOrigins: app.config.http.corsOrigins, ...options },
  });
  feed.attach(app.api.fastify.server);
  await feed.start();
  return { feed, stop: () => feed.stop() };
}
