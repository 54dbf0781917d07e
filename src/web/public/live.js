// The live feed (socket.io, docs/live-feed.md), the one connection every view
// uses: loaded after login only, so the login page stays small on a slow link.

/**
 * Connects with the session token and subscribes on every (re)connect: a new
 * connection starts with no subscriptions. `on` maps event names
 * (`telemetry`, `status`, `broadcast`, `alert`) to handlers; a view listens
 * only to what it shows. `batch`: batched delivery, for screens that show no
 * readings (one frame per interval instead of one per reading).
 * `onSubscribed` runs once the server has the subscription, so a snapshot
 * fetched then misses no event. Returns a function that closes it.
 */
export async function connectLive({ token, subscription, batch = false, on, onState, onSubscribed, onUnauthorized }) {
  const { io } = await import('./socket.io.esm.min.js');
  const socket = io({ transports: ['websocket'], auth: batch ? { token, batch: true } : { token } });
  socket.on('connect', () => {
    onState(true);
    if (subscription) socket.emit('subscribe', subscription, (ack) => { if (ack?.ok) onSubscribed?.(); });
    else onSubscribed?.();
  });
  socket.on('disconnect', () => onState(false));
  socket.on('connect_error', (err) => {
    onState(false);
    if (err?.data?.code === 'KENG_ERR_UNAUTHENTICATED') {
      socket.close();
      onUnauthorized();
    } else if (!socket.active) {
      // Refused by the server (too many clients): socket.io does not retry that by itself.
      setTimeout(() => socket.connect(), 10_000);
    }
  });
  for (const [event, fn] of Object.entries(on)) if (fn) socket.on(event, fn);
  return () => socket.close();
}

/**
 * The subscription that covers the user's areas: its own areas; for an
 * all-areas account (admin, "*") the top of the tree it sees (an area covers
 * its subtree), so devices added later come along without resubscribing.
 */
export function feedSubscription(session, areas) {
  const everywhere = session.role === 'admin' || session.areas.includes('*');
  const codes = everywhere ? areas.filter((a) => !a.parent || !areas.some((p) => p.code === a.parent)).map((a) => a.code) : session.areas;
  return codes.length ? { areas: codes.slice(0, 1000) } : null;
}

/** A device with a `telemetry` event merged in: each field keeps its newest reading. */
export function withReading(d, m) {
  if (d.id !== m.deviceId) return d;
  const latest = { ...d.latest };
  for (const [k, value] of Object.entries(m.values)) {
    if (!latest[k] || Date.parse(latest[k].ts) <= Date.parse(m.ts)) latest[k] = { ts: m.ts, value };
  }
  return { ...d, latest, online: true, lastSeen: m.ts };
}

/** A device with a `status` event applied. */
export function withStatus(d, m) {
  return d.id === m.deviceId ? { ...d, online: m.online, lastSeen: m.at ?? d.lastSeen } : d;
}
