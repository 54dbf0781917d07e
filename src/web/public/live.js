// The live feed (socket.io, docs/live-feed.md): loaded after login only, so
// the login page stays small on a slow link.

/**
 * Connects with the session token and subscribes on every (re)connect: a new
 * connection starts with no subscriptions. Returns a function that closes it.
 */
export async function connectLive({ token, subscription, onTelemetry, onStatus, onState, onUnauthorized }) {
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
  socket.on('telemetry', onTelemetry);
  socket.on('status', onStatus);
  return () => socket.close();
}
