/**
 * Starting a broadcast: the broadcast row, one target row per speaker with its log lines, and one `broadcast.play`
 * command per speaker (RpcService.sendMany, `expiresAt = notAfter`, device protocol §12.1) go into ONE state window
 * (one transaction, src/storage/state/window.ts); the commands are published after its commit. RpcService keeps
 * the command for an offline speaker and sends it when it reconnects, unless `expiresAt` has passed: the target
 * goes `offline` → `sent` …, or `expired`. The stored params keep the media id; the signed URL is put in at each
 * send by the params hook (the executor's playParams).
 *
 * Each target starts directly in the state its send gave it: `sent`; `offline` while its speaker is away;
 * `pending` while it is connecting (or, in cluster mode, connected to another node, whose copy of the command goes
 * out from there), until RpcService reports 'sent'. A command that cannot be made leaves every target `expired`.
 *
 * Separate from the executor because building a broadcast and its commands is a path of its own with its own
 * checks, while the executor owns the component's lifecycle and hands this its dependencies.
 */
import type { Clock } from '../../core/clock.js';
import { Errors } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { PLAY_METHOD } from '../../core/protocol.js';
import type { DeviceRegistryApi } from '../../devices/registry-types.js';
import { newId } from '../../rpc/ids.js';
import type { RpcService } from '../../rpc/rpc-service.js';
import type { StateWindow } from '../../storage/state/window.js';
import { asStored, type HeldBroadcasts } from './held.js';
import { pickMedia } from './prefetch.js';
import type { NewBroadcast, NewTarget } from './repo.js';
import type { BroadcastRepoSql } from './repo-sql.js';
import type { Broadcast, BroadcastInput, TargetState } from './types.js';
import { speakerTargets, validateBroadcastInput } from './validate.js';

export interface StartDeps {
  /** The repository, or KENG_ERR_NOT_READY when the executor is not started. */
  repo: () => BroadcastRepoSql;
  held: HeldBroadcasts;
  window: StateWindow;
  rpc: Pick<RpcService, 'check' | 'sendMany' | 'isConnected'>;
  registry: Pick<DeviceRegistryApi, 'getDevice' | 'isOnlineAnywhere'>;
  clock: Clock;
  logger: Logger;
  /** `broadcast.state` on the bus (after the commit). */
  emit: (broadcastId: string, deviceId: string, area: string, state: TargetState, at: number) => void;
}

/** BroadcastExecutor.begin(): the broadcast as decided at once, and `stored`, which resolves after the commit. */
export function beginBroadcast(d: StartDeps, input: BroadcastInput): { broadcast: Broadcast; stored: Promise<Broadcast> } {
  const sqlRepo = d.repo();
  const w = d.window;
  const now = d.clock.now();
  validateBroadcastInput(input, now);
  const id = input.id ?? newId('bc', now);
  if (d.held.has(id)) throw Errors.CONFLICT(`broadcast "${id}" already exists`);
  const targets = speakerTargets(d.registry, input.targets);
  const content = input.media ? { media: pickMedia(input.media) } : { stream: { url: input.stream!.url } };
  const row: NewBroadcast = {
    id, ...(input.scheduleId !== undefined ? { scheduleId: input.scheduleId } : {}), plannedAt: input.plannedAt ?? now,
    priority: input.priority, volume: input.volume, content,
    ...(input.durationSec !== undefined ? { durationSec: input.durationSec } : {}), notAfter: input.notAfter, createdAt: now,
  };
  // Stored params keep mediaId; the send-time hook (playParams) puts the signed URL in.
  const params: Record<string, unknown> = {
    broadcastId: id, priority: input.priority, volume: input.volume, ...content, notAfter: input.notAfter,
  };
  // An emergency's commands go out before the answers of the speakers that have theirs are handled (core/urgent.ts).
  const opts = { expiresAt: input.notAfter, urgent: input.priority === 'emergency' };
  const rpc = d.rpc;
  let created: NewTarget[] | undefined;
  let commands: Promise<unknown> = Promise.resolve();
  try {
    rpc.check(PLAY_METHOD, params, opts, now);
  } catch (err) {
    d.logger.error({ err, broadcastId: id }, 'broadcast.play could not be queued');
    const detail = `not sent: ${(err as Error).message}`;
    created = targets.map((t) => ({ ...t, state: 'expired', source: 'controller', detail }));
  }
  if (!created) {
    // The commands and the targets go into the same window, each target directly in the state its send gave
    // it (sent; offline while its speaker is away; pending while it is connecting, until RpcService sends the
    // command and reports 'sent'); the commands are published after that window's commit.
    commands = rpc.sendMany(targets.map((t) => t.deviceId), PLAY_METHOD, params, opts, (results) => {
      created = targets.map((t, i): NewTarget => {
        const r = results[i]!;
        const base = { ...t, playRequestId: r.requestId };
        if (r.state === 'sent') return { ...base, state: 'sent', source: 'rpc' };
        // Queued for a device that is not connected: offline until it comes back (or notAfter passes).
        // (cluster mode: connected to another node, whose copy of the command goes out from there: pending)
        if (!rpc.isConnected(t.deviceId) && !d.registry.isOnlineAnywhere(t.deviceId)) return { ...base, state: 'offline', source: 'controller', detail: 'speaker offline: command held until it reconnects' };
        return base;
      });
      d.held.hold(row, created);
    });
  } else {
    d.held.hold(row, created);
  }
  const stored = created!;
  const stored$ = sqlRepo.create(w, row, stored, sqlRepo.newBroadcast);
  w.afterCommit(() => {
    for (const t of stored) d.emit(id, t.deviceId, t.area, 'pending', now);
    for (const t of stored) if (t.state !== undefined && t.state !== 'pending') d.emit(id, t.deviceId, t.area, t.state, now);
  });
  d.logger.info({ broadcastId: id, scheduleId: input.scheduleId, priority: input.priority, targets: targets.length }, 'broadcast started');
  const broadcast = asStored(row, stored);
  return { broadcast, stored: w.durable(Promise.all([stored$, commands])).then(() => broadcast) };
}
