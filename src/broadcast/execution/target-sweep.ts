/**
 * Cluster mode (PostgreSQL): the timers of broadcast targets, whatever node armed them. A target's report deadline
 * (report-deadlines.ts) and a stream's planned stop (stream-stops.ts) are timers in the memory of the node that moved
 * the target; when that node dies, no memory holds them. So every `everyMs` each node asks the database for the
 * targets that are overdue:
 *  - `accepted` (or `playing` media) after notAfter + the content's length + the grace: they become `unconfirmed`;
 *  - `playing` streams with a planned duration whose end passed with no `broadcast.stop` sent: the stop goes out;
 * limited to the targets this node should look after: those whose play command it owns (it holds the speaker's
 * session, src/rpc/ownership.ts), and, for a play command whose owner has no live lease (dead), only on the live node
 * with the smallest id (one node, so a dead node's streams get one stop). The moves go through the executor's memory and
 * the state window as the timers' do: compare-and-set, so a target moves once whatever node tries, and its log line is
 * unique. Memory behind the database (another node moved the target) is read again first.
 *
 * The embedded store (one node) never runs this: its timers are re-armed at start from its own memory.
 */
import { sql } from 'kysely';
import type { Clock } from '../../core/clock.js';
import type { Logger } from '../../core/logger.js';
import type { Db } from '../../storage/sql/db.js';
import type { HeldBroadcast, HeldBroadcasts } from './held.js';
import type { TargetState } from './types.js';

const PG_NOW = sql`(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;
/** Targets looked at per sweep at most (the rest at the next). */
const LIMIT = 2_000;
/** States in which memory is behind a target the database says is accepted or playing. */
const BEHIND: ReadonlySet<TargetState> = new Set(['pending', 'offline', 'sent']);

export interface TargetSweepDeps {
  db: Db<unknown>;
  nodeId: string;
  clock: Clock;
  logger: Logger;
  everyMs: number;
  /** The report deadlines' grace (report-deadlines.ts). */
  graceMs: number;
  held: HeldBroadcasts;
  /** The broadcast's unreported targets become unconfirmed if its deadline passed (ReportDeadlines.finishDue). */
  reportsDue: (h: HeldBroadcast) => void;
  /** The stream's planned stop, if due and not sent (StreamStops.stopNow). */
  streamStopDue: (broadcastId: string, deviceId: string) => void;
}

export class TargetSweep {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(private readonly d: TargetSweepDeps) {}

  start(): void {
    this.timer = setInterval(() => { void this.tick(); }, this.d.everyMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One sweep (a no-op while one runs). */
  tick(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.sweep().catch((err: unknown) => {
      this.d.logger.warn({ err }, 'broadcast target sweep failed; retried');
    }).finally(() => { this.running = null; });
    return this.running;
  }

  private async sweep(): Promise<void> {
    const now = this.d.clock.now();
    const me = this.d.nodeId;
    // Whose targets: this node's play commands, or a dead owner's on the live node with the smallest id.
    const mine = sql`(r.owner_node = ${me} OR ((r.owner_node IS NULL OR NOT EXISTS (SELECT 1 FROM cluster_nodes n
        WHERE n.node_id = r.owner_node AND n.lease_until > ${PG_NOW}))
      AND ${me} = (SELECT min(n.node_id) FROM cluster_nodes n WHERE n.lease_until > ${PG_NOW})))`;
    const reports = (await sql<{ broadcast_id: string; device_id: string; state: TargetState }>`
      SELECT t.broadcast_id, t.device_id, t.state FROM broadcast_targets t
        JOIN broadcasts b ON b.id = t.broadcast_id
        LEFT JOIN rpc_requests r ON r.id = t.play_request_id
      WHERE t.state IN ('accepted', 'playing')
        AND (t.state = 'accepted' OR (b.content_json::jsonb ? 'media'))
        AND b.not_after + COALESCE(CASE WHEN b.content_json::jsonb ? 'media' THEN (b.content_json::jsonb #>> '{media,durationSec}')::double precision
          ELSE b.duration_sec END, 0) * 1000 + ${this.d.graceMs} <= ${now}
        AND ${mine}
      LIMIT ${LIMIT}`.execute(this.d.db.kysely)).rows;
    const streams = (await sql<{ broadcast_id: string; device_id: string; state: TargetState }>`
      SELECT t.broadcast_id, t.device_id, t.state FROM broadcast_targets t
        JOIN broadcasts b ON b.id = t.broadcast_id
        LEFT JOIN rpc_requests r ON r.id = t.play_request_id
      WHERE t.state = 'playing' AND t.stop_request_id IS NULL AND b.duration_sec IS NOT NULL
        AND b.content_json::jsonb ? 'stream'
        AND t.updated_at + b.duration_sec * 1000 <= ${now}
        AND ${mine}
      LIMIT ${LIMIT}`.execute(this.d.db.kysely)).rows;
    if (reports.length === 0 && streams.length === 0) return;
    for (const r of [...reports, ...streams]) this.refresh(r.broadcast_id, r.device_id);
    for (const id of new Set(reports.map((r) => r.broadcast_id))) {
      this.d.held.withHeld(id, (h) => { if (h) this.d.reportsDue(h); });
    }
    for (const r of streams) this.d.streamStopDue(r.broadcast_id, r.device_id);
    this.d.logger.debug({ reports: reports.length, streams: streams.length }, 'broadcast target sweep: overdue targets');
  }

  /** Memory that still holds the target in an earlier state (another node moved it) is read again. */
  private refresh(broadcastId: string, deviceId: string): void {
    const t = this.d.held.get(broadcastId)?.targets.get(deviceId);
    if (t && BEHIND.has(t.state)) this.d.held.delete(broadcastId);
  }
}
