import { networkInterfaces } from 'node:os';

/**
 * The base URL a loudspeaker on the LAN can use to reach this controller's
 * HTTP server when media.publicBaseUrl is not set: the listen host, or — when
 * listening on every interface — the first non-internal IPv4 address.
 */
export function speakerBaseUrl(host: string, port: number): string {
  let h = host;
  if (h === '0.0.0.0' || h === '::' || h === '') {
    h = '127.0.0.1';
    for (const addrs of Object.values(networkInterfaces())) {
      const a = addrs?.find((x) => x.family === 'IPv4' && !x.internal);
      if (a) { h = a.address; break; }
    }
  }
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}
