// The staff screens' live feed (docs/live-feed.md): device status, speaker
// broadcast states and alerts for whole areas, for the overview and the
// alerts screen. It connects with batched delivery: neither screen shows
// readings, and a province's devices report many a second, so one frame per
// interval costs the wall screen far less than one per reading.

/**
 * Connects and subscribes on every (re)connect (a new connection starts with
 * no subscriptions); `onSubscribed` runs once the server has the
 * subscription, so a snapshot fetched then misses no event. Returns a
 * function that closes the connection.
 */
export async function connectIocFeed({ token, subscription, onStatus, onBroadcast, onAlert, onState, onSubscribed, onUnauthorized }) {
  const { io } = await import('./socket.io.esm.min.js');
  const socket = io({ transports: ['websocket'], auth: { token, batch: true } });
  socket.on('connect', () => {
    onState(true);
    if (subscription) socket.emit('subscribe', subscription, (ack) => { if (ack?.ok) onSubscribed(); });
    else onSubscribed();
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
  // A screen listens only to what it shows (the alerts screen has no use for device status).
  if (onStatus) socket.on('status', onStatus);
  if (onBroadcast) socket.on('broadcast', onBroadcast);
  // `alert` goes to the rooms of an alert's areas and their ancestors: an area subscription gets it.
  if (onAlert) socket.on('alert', onAlert);
  return () => socket.close();
}

/**
 * What an account subscribes to for "everything it may see": its own areas,
 * or for an all-areas account (admin, "*") the top of the tree, since an
 * area covers its subtree and devices added later come along.
 */
export function wholeScope(session, areas) {
  const everywhere = session.role === 'admin' || session.areas.includes('*');
  const codes = everywhere ? areas.filter((a) => !a.parent).map((a) => a.code) : session.areas;
  return codes.length ? { areas: codes.slice(0, 1000) } : null;
}
