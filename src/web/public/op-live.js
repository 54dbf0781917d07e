// The live feed for the staff screens (docs/live-feed.md): like live.js, plus
// the `broadcast` events (each speaker's state in a broadcast), which only
// staff roles receive. Loaded with the view that needs it.

/**
 * The subscription that covers the user's areas: an operator's own areas; for
 * an all-areas account the top-level areas of the tree (an area covers its
 * villages), so new speakers come along without resubscribing.
 */
export function feedSubscription(session, areas) {
  const everywhere = session.role === 'admin' || session.areas.includes('*');
  const codes = everywhere ? areas.filter((a) => !a.parent || !areas.some((p) => p.code === a.parent)).map((a) => a.code) : session.areas;
  return codes.length ? { areas: codes.slice(0, 1000) } : null;
}

/**
 * Connects with the session token and subscribes on every (re)connect.
 * `on` holds handlers for `telemetry`, `status` and `broadcast`. Returns a
 * function that closes the connection.
 */
export async function connectFeed({ token, subscription, on, onState, onUnauthorized }) {
  const { io } = await import('./socket.io.esm.min.js');
  const socket = io({ transports: ['websocket'], auth: { token } });
  socket.on('connect', () => {
    onState(true);
    if (subscription) socket.emit('subscribe', subscription, () => {});
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
  for (const [event, fn] of Object.entries(on)) socket.on(event, fn);
  return () => socket.close();
}
