/** SQL of broadcasts, targets, the log and missed occurrences (see migrations.ts). Synchronous. */
import type { Statement } from 'better-sqlite3';
import type { SqliteDatabase } from '../../storage/state/db.js';
import type {
  Broadcast, BroadcastTarget, LogEntry, LogSource, MediaContent, Priority, StreamContent, TargetState,
} from './types.js';

export interface BroadcastRow {
  id: string; schedule_id: string | null; planned_at: number; priority: Priority; volume: number; content_json: string;
  duration_sec: number | null; not_after: number; created_at: number; stop_requested_at: number | null;
}
export interface TargetRow {
  broadcast_id: string; device_id: string; area: string; state: TargetState; updated_at: number; detail: string | null;
  play_request_id: string | null; stop_request_id: string | null;
}
export interface LogRow {
  seq: number; at: number; device_at: number | null; broadcast_id: string; schedule_id: string | null; device_id: string;
  area: string; state: TargetState; prev_state: TargetState | null; detail: string | null; source: LogSource;
}
export interface MissedRow { schedule_id: string; planned_at: number; device_id: string; area: string; recorded_at: number }

export interface NewLog {
  at: number; deviceAt?: number; broadcastId: string; scheduleId?: string; deviceId: string; area: string;
  state: TargetState; prevState?: TargetState; detail?: string; source: LogSource;
}

export interface NewBroadcast {
  id: string; scheduleId?: string; plannedAt: number; priority: Priority; volume: number; content: { media?: MediaContent; stream?: StreamContent };
  durationSec?: number; notAfter: number; createdAt: number;
}

/** A target as the broadcast starts: `pending`, or already in its first state after pending (see create()). */
export interface NewTarget {
  deviceId: string; area: string; playRequestId?: string;
  /** Default pending. */
  state?: TargetState;
  /** Of the first transition (state other than pending). */
  detail?: string; source?: LogSource;
}

/** What a transition's log line adds to the target row. */
export type TransitionLog = Omit<NewLog, 'at' | 'broadcastId' | 'deviceId' | 'area' | 'state' | 'prevState'>;

export function toTarget(r: TargetRow): BroadcastTarget {
  return { deviceId: r.device_id, area: r.area, state: r.state, updatedAt: r.updated_at, ...(r.detail !== null ? { detail: r.detail } : {}) };
}

export function toBroadcast(b: BroadcastRow, targets: TargetRow[]): Broadcast {
  const content = JSON.parse(b.content_json) as { media?: MediaContent; stream?: StreamContent };
  return {
    id: b.id,
    ...(b.schedule_id !== null ? { scheduleId: b.schedule_id } : {}),
    plannedAt: b.planned_at, priority: b.priority, volume: b.volume,
    ...(content.media ? { media: content.media } : {}),
    ...(content.stream ? { stream: content.stream } : {}),
    ...(b.duration_sec !== null ? { durationSec: b.duration_sec } : {}),
    notAfter: b.not_after, startedAt: b.created_at,
    ...(b.stop_requested_at !== null ? { stopRequestedAt: b.stop_requested_at } : {}),
    targets: targets.map(toTarget),
  };
}

export function toLogEntry(r: LogRow): LogEntry {
  return {
    at: r.at, ...(r.device_at !== null ? { deviceAt: r.device_at } : {}), broadcastId: r.broadcast_id,
    ...(r.schedule_id !== null ? { scheduleId: r.schedule_id } : {}),
    deviceId: r.device_id, area: r.area, state: r.state,
    ...(r.prev_state !== null ? { prevState: r.prev_state } : {}),
    ...(r.detail !== null ? { detail: r.detail } : {}), source: r.source,
  };
}

export function missedToLogEntry(r: MissedRow): LogEntry {
  return {
    at: r.planned_at, scheduleId: r.schedule_id, deviceId: r.device_id, area: r.area, state: 'missed',
    detail: 'schedule occurrence missed (controller was not running)', source: 'scheduler',
  };
}

/** A stream target that is playing with no stop sent yet (BroadcastRepo.playingStreams). */
export interface PlayingStreamRow { broadcast_id: string; device_id: string; updated_at: number; duration_sec: number }

export class BroadcastRepo {
  readonly db: SqliteDatabase;
  private readonly transitionTx: (t: TargetRow, to: TargetState, at: number, log: TransitionLog) => void;
  private readonly s: {
    insertBroadcast: Statement; insertTarget: Statement; insertLog: Statement; getBroadcast: Statement; targets: Statement;
    target: Statement; updateTarget: Statement; setPlayRequest: Statement; setStopRequest: Statement; stopRequested: Statement;
    insertMissed: Statement; playingStreams: Statement; unreported: Statement; unreportedTargets: Statement;
  };

  constructor(db: SqliteDatabase) {
    this.db = db;
    // Made once: db.transaction() builds a new wrapper at each call, and a transition runs several times per speaker.
    this.transitionTx = db.transaction((t: TargetRow, to: TargetState, at: number, log: TransitionLog) => {
      this.s.updateTarget.run(to, at, log.detail ?? null, t.broadcast_id, t.device_id);
      this.logTransition(t, to, at, log);
    });
    this.s = {
      insertBroadcast: db.prepare(`INSERT INTO broadcasts (id, schedule_id, planned_at, priority, volume, content_json, duration_sec, not_after, created_at)
        VALUES (@id, @scheduleId, @plannedAt, @priority, @volume, @contentJson, @durationSec, @notAfter, @createdAt)`),
      insertTarget: db.prepare(`INSERT INTO broadcast_targets (broadcast_id, device_id, area, state, updated_at, detail, play_request_id)
        VALUES (?, ?, ?, ?, ?, ?, ?)`),
      // Positional parameters: binding by name looks each name up in an object made per line.
      insertLog: db.prepare(`INSERT INTO broadcast_log (at, device_at, broadcast_id, schedule_id, device_id, area, state, prev_state, detail, source)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      getBroadcast: db.prepare('SELECT * FROM broadcasts WHERE id = ?'),
      targets: db.prepare('SELECT * FROM broadcast_targets WHERE broadcast_id = ? ORDER BY device_id'),
      target: db.prepare('SELECT * FROM broadcast_targets WHERE broadcast_id = ? AND device_id = ?'),
      updateTarget: db.prepare('UPDATE broadcast_targets SET state = ?, updated_at = ?, detail = ? WHERE broadcast_id = ? AND device_id = ?'),
      setPlayRequest: db.prepare('UPDATE broadcast_targets SET play_request_id = ? WHERE broadcast_id = ? AND device_id = ?'),
      setStopRequest: db.prepare('UPDATE broadcast_targets SET stop_request_id = ? WHERE broadcast_id = ? AND device_id = ?'),
      stopRequested: db.prepare('UPDATE broadcasts SET stop_requested_at = ? WHERE id = ? AND stop_requested_at IS NULL'),
      // Stream targets playing without a stop sent yet, of broadcasts created since ? (broadcasts_created index).
      playingStreams: db.prepare(`SELECT t.broadcast_id, t.device_id, t.updated_at, b.duration_sec FROM broadcasts b
        JOIN broadcast_targets t ON t.broadcast_id = b.id
        WHERE b.created_at >= ? AND b.duration_sec IS NOT NULL AND json_extract(b.content_json, '$.stream') IS NOT NULL
          AND t.state = 'playing' AND t.stop_request_id IS NULL`),
      // Broadcasts created since ? with a target accepted or playing, i.e. not reported ended (broadcasts_created index,
      // then each broadcast's targets by the primary key prefix).
      unreported: db.prepare(`SELECT b.* FROM broadcasts b WHERE b.created_at >= ?
        AND EXISTS (SELECT 1 FROM broadcast_targets t WHERE t.broadcast_id = b.id AND t.state IN ('accepted', 'playing'))`),
      unreportedTargets: db.prepare(`SELECT * FROM broadcast_targets WHERE broadcast_id = ? AND state IN ('accepted', 'playing')`),
      insertMissed: db.prepare(`INSERT OR IGNORE INTO broadcast_missed (schedule_id, planned_at, device_id, area, recorded_at) VALUES (?, ?, ?, ?, ?)`),
    };
  }

  /**
   * Broadcast, its targets and their first log lines, in one transaction. Every target gets a
   * `pending` line; a target whose first transition is already known when the broadcast starts
   * (its command was published, or held for an offline speaker) is inserted in that state, with
   * the transition's own log line, instead of inserted pending and updated (two fewer statements
   * per speaker). All pending lines come first, then the transitions, as they happened.
   */
  create(b: NewBroadcast, targets: readonly NewTarget[]): void {
    this.db.transaction(() => {
      this.s.insertBroadcast.run({
        id: b.id, scheduleId: b.scheduleId ?? null, plannedAt: b.plannedAt, priority: b.priority, volume: b.volume,
        contentJson: JSON.stringify(b.content), durationSec: b.durationSec ?? null, notAfter: b.notAfter, createdAt: b.createdAt,
      });
      const scheduleId = b.scheduleId ?? null;
      for (const t of targets) {
        this.s.insertTarget.run(b.id, t.deviceId, t.area, t.state ?? 'pending', b.createdAt, t.detail ?? null, t.playRequestId ?? null);
        this.s.insertLog.run(b.createdAt, null, b.id, scheduleId, t.deviceId, t.area, 'pending', null, null, 'controller');
      }
      for (const t of targets) {
        if (t.state === undefined || t.state === 'pending') continue;
        this.s.insertLog.run(b.createdAt, null, b.id, scheduleId, t.deviceId, t.area, t.state, 'pending', t.detail ?? null, t.source ?? 'controller');
      }
    })();
  }

  /** Relayed streams still playing (no stop sent) of broadcasts created since `since`: their stop is due at updated_at + duration. */
  playingStreams(since: number): PlayingStreamRow[] {
    return this.s.playingStreams.all(since) as PlayingStreamRow[];
  }

  /** Broadcasts created since `since` with a target still `accepted` or `playing`. */
  unreportedBroadcasts(since: number): BroadcastRow[] {
    return this.s.unreported.all(since) as BroadcastRow[];
  }

  /** The targets of a broadcast still `accepted` or `playing` (no end of playback reported). */
  unreportedTargets(broadcastId: string): TargetRow[] {
    return this.s.unreportedTargets.all(broadcastId) as TargetRow[];
  }

  getBroadcastRow(id: string): BroadcastRow | undefined {
    return this.s.getBroadcast.get(id) as BroadcastRow | undefined;
  }

  get(id: string): Broadcast | undefined {
    const b = this.getBroadcastRow(id);
    return b ? toBroadcast(b, this.targetRows(id)) : undefined;
  }

  targetRows(broadcastId: string): TargetRow[] {
    return this.s.targets.all(broadcastId) as TargetRow[];
  }

  target(broadcastId: string, deviceId: string): TargetRow | undefined {
    return this.s.target.get(broadcastId, deviceId) as TargetRow | undefined;
  }

  /**
   * New state + its log line, atomically.
   *
   * Inside an open transaction (the broadcast group commit, see group-commit.ts) no savepoint is
   * taken: a savepoint makes SQLite copy every page the two writes touch (the target row, the log
   * row and their seven indexes) into a sub-journal first, which doubled the cost of a transition
   * (bench:broadcast, ~6,000 transitions per broadcast to 2,000 speakers). Atomicity is kept by hand:
   * if the log line cannot be written, the target row gets its previous values back.
   */
  transition(t: TargetRow, to: TargetState, at: number, log: TransitionLog): void {
    if (!this.db.inTransaction) { this.transitionTx(t, to, at, log); return; }
    this.s.updateTarget.run(to, at, log.detail ?? null, t.broadcast_id, t.device_id);
    try {
      this.logTransition(t, to, at, log);
    } catch (err) {
      if (this.db.inTransaction) this.s.updateTarget.run(t.state, t.updated_at, t.detail, t.broadcast_id, t.device_id);
      throw err;
    }
  }


  setPlayRequest(broadcastId: string, deviceId: string, requestId: string): void { this.s.setPlayRequest.run(requestId, broadcastId, deviceId); }
  setStopRequest(broadcastId: string, deviceId: string, requestId: string): void { this.s.setStopRequest.run(requestId, broadcastId, deviceId); }
  markStopRequested(broadcastId: string, at: number): void { this.s.stopRequested.run(at, broadcastId); }

  recordMissed(scheduleId: string, plannedAt: number, targets: Array<{ deviceId: string; area: string }>, at: number): number {
    let n = 0;
    this.db.transaction(() => {
      for (const t of targets) n += this.s.insertMissed.run(scheduleId, plannedAt, t.deviceId, t.area, at).changes;
    })();
    return n;
  }

  private logTransition(t: TargetRow, to: TargetState, at: number, l: TransitionLog): void {
    this.s.insertLog.run(at, l.deviceAt ?? null, t.broadcast_id, l.scheduleId ?? null, t.device_id, t.area, to, t.state, l.detail ?? null, l.source);
  }
}
