/**
 * Cluster mode (PostgreSQL): a broadcast stopped on one node while some of its play commands are still queued, held by
 * other nodes (the nodes holding their speakers' sessions, src/rpc/ownership.ts). This node's memory cannot tell
 * whether such a command is still queued, so the database decides: ONE statement per window withdraws each command
 * still `queued` and never sent (compare-and-set `queued → cancelled`) and, for exactly those, moves the target
 * `pending|offline → stopped` and writes its log line (unique per state: written once). The command's owner, which
 * holds it in memory, then misses its own move `queued → sent` and does not publish it (src/rpc/publisher.ts). A command
 * its owner moved to `sent` first is not withdrawn (`cancelled` false): stop-broadcast.ts sends `broadcast.stop` instead,
 * which reaches the speaker after the play, as on one node.
 *
 * The command and its target move in one statement, so no node ever sees a cancelled command with a target still
 * waiting for it (nor a withdrawn target whose command went out).
 */
import { sql } from 'kysely';
import { WINDOW_PHASES, type WindowKind } from '../../storage/state/window.js';
import type { TargetState } from './types.js';

export interface StopQueued {
  broadcastId: string; deviceId: string; scheduleId?: string;
  /** The target's play command. */
  requestId: string;
  /** The target's state as memory holds it (its log line's previous state). */
  from: TargetState;
  at: number; detail: string;
}

export interface StopQueuedOutcome {
  /** The command was still queued, never sent: withdrawn. */
  cancelled: boolean;
  /** The target moved to `stopped` (with its log line). */
  moved: boolean;
  /** The node that owned the withdrawn command (to hint it to forget it). */
  owner?: string;
  /** Not withdrawn because it was withdrawn or expired before (never published): no broadcast.stop is needed. */
  neverSent?: boolean;
}

export function stopQueuedKind(): WindowKind<StopQueued, StopQueuedOutcome> {
  return {
    name: 'broadcast stop of queued plays',
    phase: WINDOW_PHASES.cas,
    keys: (s) => [`rpc:${s.requestId}`, `target:${s.broadcastId}\u0000${s.deviceId}`],
    flush: async (trx, items) => {
      const seen = new Set<string>();
      const rows = items.filter((s) => !seen.has(s.requestId) && seen.add(s.requestId))
        .sort((x, y) => (x.requestId < y.requestId ? -1 : x.requestId > y.requestId ? 1 : 0)) // one lock order on every node
        .map((s) => ({ i: s.requestId, b: s.broadcastId, d: s.deviceId, f: s.from, a: s.at, x: s.detail, sc: s.scheduleId }));
      const out = (await sql<{ id: string; owner_node: string | null; cancelled: boolean; moved: boolean; was: string | null }>`WITH
          v AS (SELECT * FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS v(i text, b text, d text, f text, a bigint, x text, sc text)),
          c AS (UPDATE rpc_requests q SET state = 'cancelled', answered_at = v.a FROM v
            WHERE q.id = v.i AND q.device_id = v.d AND q.state = 'queued' AND q.sent_at IS NULL
            RETURNING q.id, q.owner_node),
          u AS (UPDATE broadcast_targets t SET state = 'stopped', updated_at = v.a, detail = v.x FROM v JOIN c ON c.id = v.i
            WHERE t.broadcast_id = v.b AND t.device_id = v.d AND t.state IN ('pending', 'offline')
            RETURNING v.i, t.broadcast_id, t.device_id, t.area, v.f, v.a, v.x, v.sc),
          l AS (INSERT INTO broadcast_log (at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source)
            SELECT u.a, u.broadcast_id, u.sc, u.device_id, u.area, 'stopped', u.f, u.x, 'controller' FROM u ORDER BY u.broadcast_id, u.device_id
            ON CONFLICT (broadcast_id, device_id, state) DO NOTHING)
        SELECT v.i AS id, c.owner_node, (c.id IS NOT NULL) AS cancelled, (u.i IS NOT NULL) AS moved, q.state AS was
        FROM v LEFT JOIN c ON c.id = v.i LEFT JOIN u ON u.i = v.i LEFT JOIN rpc_requests q ON q.id = v.i`.execute(trx)).rows;
      const by = new Map(out.map((r) => [r.id, r]));
      const told = new Set<string>();
      return items.map((s) => {
        const r = by.get(s.requestId);
        const first = !told.has(s.requestId);
        told.add(s.requestId);
        if (r?.cancelled && first) return { cancelled: true, moved: r.moved, ...(r.owner_node !== null ? { owner: r.owner_node } : {}) };
        // `was`: the row as this statement's snapshot saw it (a move that raced it may be newer: then it went out).
        return { cancelled: false, moved: false, neverSent: r?.was === 'cancelled' || r?.was === 'expired' };
      });
    },
  };
}
