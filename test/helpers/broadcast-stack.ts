/**
 * The broadcast stack on one state database, as the app wires it: state window, RPC service, executor and
 * BroadcastService, started in that order and stopped in reverse (dialect tests of broadcasts and schedules).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AuditLog, type AuditRecorder } from '../../src/audit/log.js';
import { BroadcastExecutor, playHooks } from '../../src/broadcast/execution/index.js';
import { BroadcastService, type BroadcastServiceDeps } from '../../src/broadcast/service.js';
import { loadConfig } from '../../src/config/index.js';
import { EventBus, Metrics, createLogger, systemClock } from '../../src/core/index.js';
import { RpcService } from '../../src/rpc/index.js';
import { StateWindow } from '../../src/storage/state/index.js';
import type { broadcastRegistry } from './broadcast-registry.js';
import { openState, seedSpeakerRows, type StateHarness } from './state-dialects.js';
import type { SqlDialect } from '../../src/storage/sql/index.js';

export interface BroadcastStackOptions {
  registry: ReturnType<typeof broadcastRegistry>;
  /** Speakers given rows in the registry's tables (SQLite), which RPC commands need. */
  speakers: readonly string[];
  /** Prefix of the temporary data directory. */
  tmpPrefix: string;
  /** Each command topic the RPC service publishes. */
  published?: (topic: string) => void;
  /** The audit recorder, given the real one (e.g. one that fails after appending). Default: the real one. */
  audit?: (real: AuditLog) => AuditRecorder;
  /** Settings beside dataDir and logLevel. */
  settings?: Record<string, unknown>;
  nodeId?: string;
}

export interface BroadcastStack {
  h: StateHarness;
  window: StateWindow;
  rpc: RpcService;
  exec: BroadcastExecutor;
  service: BroadcastService;
  deps: BroadcastServiceDeps;
  stop(): Promise<void>;
}

export async function startBroadcastStack(dialect: SqlDialect, o: BroadcastStackOptions): Promise<BroadcastStack> {
  const logger = createLogger('silent');
  const h = await openState(dialect);
  seedSpeakerRows(h, o.speakers);
  const dir = mkdtempSync(path.join(tmpdir(), o.tmpPrefix));
  const bus = new EventBus();
  const metrics = new Metrics({ defaultMetrics: false });
  const window = new StateWindow({ db: h.db, logger });
  await window.start();
  // The RPC service asks the executor for play parameters, and the executor sends through the RPC service.
  const late: { exec?: BroadcastExecutor } = {};
  const rpc = new RpcService({
    db: h.db, window, bus, logger, metrics, paramsHooks: playHooks(() => late.exec!),
    broker: { isConnected: () => true, publish: async (topic) => { o.published?.(topic); } },
  });
  const exec = new BroadcastExecutor({ db: h.db, window, rpc, bus, registry: o.registry, mediaUrl: (id) => `http://keng/${id}`, logger, metrics });
  const real = new AuditLog({ db: h.db, clock: systemClock, logger });
  const deps: BroadcastServiceDeps = {
    config: loadConfig({ env: {}, overrides: { dataDir: dir, logLevel: 'silent', ...o.settings } as never }),
    stateSql: h.db, window, registry: o.registry as never, media: {} as never, executor: exec,
    audit: o.audit ? o.audit(real) : real, logger, metrics, clock: systemClock,
    mediaViewer: () => ({ all: true, sees: new Set(), owns: new Set(), home: [] }) as never,
    ...(o.nodeId !== undefined ? { nodeId: o.nodeId } : {}),
  };
  late.exec = exec;
  const service = new BroadcastService(deps);
  await rpc.start();
  await exec.start();
  await service.start();
  return {
    h, window, rpc, exec, service, deps,
    async stop() {
      await service.stop();
      await exec.stop();
      await rpc.stop();
      await window.stop();
      await h.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
