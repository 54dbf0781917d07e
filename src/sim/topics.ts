/** Topic names of the device protocol v1 for one device. */
export interface DeviceTopics {
  telemetry: string;
  attributes: string;
  status: string;
  rpcRequestFilter: string;
  rpcResponse(requestId: string): string;
}

/** `base` is the device id, or "me" for a ThingsBoard-style access-token login. */
export function deviceTopics(base: string): DeviceTopics {
  const root = `v1/devices/${base}`;
  return {
    telemetry: `${root}/telemetry`,
    attributes: `${root}/attributes`,
    status: `${root}/status`,
    rpcRequestFilter: `${root}/rpc/request/+`,
    rpcResponse: (requestId) => `${root}/rpc/response/${requestId}`,
  };
}

/** The request id R of `v1/devices/X/rpc/request/R`, or null. */
export function rpcRequestId(topic: string): string | null {
  const m = /^v1\/devices\/[^/]+\/rpc\/request\/([^/]+)$/.exec(topic);
  return m ? m[1]! : null;
}

/** A sensor knows no RPC methods: every request is answered `rejected`. */
export function answerRpc(payload: Buffer | string, knownMethods: ReadonlySet<string> = new Set()): { status: 'rejected' | 'ok'; detail?: string } {
  let method: unknown;
  try {
    method = (JSON.parse(payload.toString()) as { method?: unknown }).method;
  } catch {
    return { status: 'rejected', detail: 'request is not valid JSON' };
  }
  if (typeof method !== 'string') return { status: 'rejected', detail: 'request has no method' };
  if (!knownMethods.has(method)) return { status: 'rejected', detail: `unknown method "${method}"` };
  return { status: 'ok' };
}
