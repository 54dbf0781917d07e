/** What the RPC service must ask the broadcast executor at send time. */
import { PLAY_METHOD, PREFETCH_METHOD } from '../../core/protocol.js';
import type { ParamsHook } from '../../rpc/types.js';
import type { BroadcastExecutor } from './executor.js';

/**
 * The RPC params hooks a broadcast executor needs (`paramsHooks` of its RpcService). The executor
 * is given the RPC service, so it is built after it: the hook reaches it through `executor()`,
 * called only at send time.
 */
export function playHooks(executor: () => Pick<BroadcastExecutor, 'playParams'>): Record<string, ParamsHook> {
  return {
    [PLAY_METHOD]: (params) => executor().playParams(params),
    [PREFETCH_METHOD]: (params) => executor().playParams(params),
  };
}
