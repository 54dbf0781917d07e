/**
 * AlertService: CAP 1.2 alerts raised by staff (or imported from a
 * provincial warning system), approved by a second person, played on every
 * loudspeaker of their areas as an emergency broadcast.
 *
 * Life of an alert (docs/alerts.md):
 * - `Actual` → `pending_approval`; it plays only once a second user (not its
 *   creator) with rights over ALL its areas approves it. An admin may let
 *   Extreme (or Severe) + Immediate alerts play at once, the approval then
 *   following as a confirmation (audited as `alert.play_at_once`).
 * - `Exercise` and `Test` play at once, announcing themselves at start and
 *   end, on the areas they name and nowhere else.
 * - Playing = an `emergency` broadcast (interrupts anything playing; those
 *   speakers report `preempted` for what they were playing) of the rendered
 *   announcement, valid until `expires`: an offline speaker gets it on
 *   reconnect until then.
 * - `Update` (msgType, `references`) replaces the alerts it references once
 *   it plays (they end, their broadcasts stop); `Cancel` (msgType, or the
 *   cancel route) stops the referenced alerts everywhere in one step and plays
 *   the cancellation notice where they played.
 * - `expires` passing ends an open alert as `expired`.
 * Every step is audited and emitted on the bus ('alert.changed': live feed).
 * The announcement is rendered when the alert is raised, so approval starts
 * the broadcast without waiting for text-to-speech.
 *
 * This file owns raising, approval and rejection, and who may see and act on
 * an alert; cancellation.ts cancels, expiry.ts ends expired alerts, and
 * records.ts is how every step is written, audited and announced.
 */
import { Errors } from '../core/errors.js';
import type { Clock } from '../core/clock.js';
import type { EventBus } from '../core/events.js';
import type { Component } from '../core/lifecycle.js';
import type { Logger } from '../core/logger.js';
import type { AuditRecorder } from '../audit/log.js';
import type { BroadcastExecutor, MediaContent } from '../broadcast/execution/index.js';
import { resolveSpeakers, type Caller, type TargetRegistry } from '../broadcast/targets.js';
import type { MediaLibrary, MediaRecord } from '../media/index.js';
import { newId } from '../rpc/ids.js';
import type { StateDb } from '../storage/state/index.js';
import { ANNOUNCEMENT_LANG, alertAnnouncement, announcementContent } from './announcement.js';
import { AlertCancellation } from './cancellation.js';
import type { CapAlert } from './cap/index.js';
import { AlertExpiry } from './expiry.js';
import { AlertRecords, auditView, headlineOf } from './records.js';
import { AlertRepo, type AlertListQuery } from './repo.js';
import { FINAL_ALERT_STATES, type Alert, type AlertPolicy, type AlertReach, type AlertServiceOptions } from './types.js';

export interface AlertServiceDeps {
  stateDb: StateDb;
  registry: TargetRegistry;
  media: Pick<MediaLibrary, 'synthesizeSequence' | 'get'>;
  executor: Pick<BroadcastExecutor, 'begin' | 'startBroadcast' | 'stopBroadcast' | 'preload' | 'getStored' | 'prefetch' | 'withdrawPrefetch'>;
  bus: Pick<EventBus, 'emit'>;
  audit: AuditRecorder;
  logger: Logger;
  clock: Clock;
  options: AlertServiceOptions;
  /** Runs synchronous state-store writes in the state window's transaction (records.ts `txWithBroadcasts`). */
  batch?: <T>(fn: () => T) => Promise<T>;
}

export class AlertService implements Component {
  readonly name = 'alerts';
  private repo: AlertRepo | null = null;
  private readonly log: Logger;
  private readonly records: AlertRecords;
  private readonly cancellation: AlertCancellation;
  private readonly expiry: AlertExpiry;

  constructor(private readonly d: AlertServiceDeps) {
    this.log = d.logger;
    this.records = new AlertRecords(d);
    this.cancellation = new AlertCancellation({
      repo: () => this.requireRepo(), records: this.records, media: d.media, executor: d.executor, options: d.options, clock: d.clock, logger: d.logger,
    });
    this.expiry = new AlertExpiry({ repo: () => this.repo, records: this.records, clock: d.clock, logger: d.logger });
  }

  async start(): Promise<void> {
    this.repo = new AlertRepo(this.d.stateDb.db);
    // Alerts that expired while Keng was down end now; the others' expiry is timed again.
    this.expiry.sweep();
  }

  async stop(): Promise<void> {
    this.expiry.stop();
    this.repo = null;
  }

  // ------------------------------------------------------------ reading

  /** Alerts touching any of the caller's areas, newest first. */
  list(c: Caller, q: AlertListQuery = {}): Alert[] {
    // Scope first, then the limit: the newest N the caller may see, not the caller's share of the newest N.
    const { limit = 500, ...rest } = q;
    const out: Alert[] = [];
    for (const a of this.requireRepo().list({ ...rest, limit: 100_000 })) {
      if (!this.visible(a, c)) continue;
      out.push(a);
      if (out.length >= limit) break;
    }
    return out;
  }

  /** 404 when unknown or outside the caller's areas. */
  get(c: Caller, id: string): Alert {
    const a = this.requireRepo().get(id);
    if (!a || !this.visible(a, c)) throw Errors.NOT_FOUND(`Alert "${id}"`);
    return a;
  }

  /** Active public Actual alerts (the public CAP Atom feed: no caller, no scope). */
  activePublic(): Alert[] {
    return this.requireRepo().list({ states: ['active'] })
      .filter((a) => a.cap.scope === 'Public' && a.cap.status === 'Actual');
  }

  policy(): AlertPolicy { return this.requireRepo().policy(); }

  setPolicy(c: Caller, p: AlertPolicy): AlertPolicy {
    const before = this.requireRepo().policy();
    const next: AlertPolicy = { playAtOnce: [...new Set(p.playAtOnce)].sort() as AlertPolicy['playAtOnce'] };
    this.records.tx(() => {
      this.requireRepo().setPolicy(next, c.principal.id, this.d.clock.now());
      this.records.audit(c, 'alert.policy', 'alert-policy', before, next);
    });
    return next;
  }

  // ------------------------------------------------------------ raising

  /**
   * Raises an alert (or applies an Update / Cancel message). `reach` is where
   * it sounds, already resolved from geocodes, polygons or `?areas=`
   * (areas.ts); the caller must have rights over all of it (403).
   */
  async create(c: Caller, cap: CapAlert, reach: AlertReach): Promise<Alert> {
    const repo = this.requireRepo();
    const now = this.d.clock.now();
    this.checkReach(c, reach);
    if (repo.byIdentifier(cap.identifier)) throw Errors.CONFLICT(`an alert with identifier "${cap.identifier}" already exists`);
    // A Cancel needs no expiry of its own (it acts at once).
    const expiresAt = cap.expires ?? (cap.msgType === 'Cancel' ? now : Number.NaN);
    if (!Number.isFinite(expiresAt)) throw Errors.UNPROCESSABLE('the alert needs an expiry time (expires)');
    if (cap.msgType !== 'Cancel' && expiresAt <= now) throw Errors.UNPROCESSABLE('the alert has already expired');
    const referenced = this.referenced(c, cap);

    if (cap.msgType === 'Cancel') return this.cancellation.applyMessage(c, cap, reach, referenced, expiresAt);

    const media = await this.d.media.synthesizeSequence(
      alertAnnouncement(cap, { toneSec: this.d.options.toneSec, repeat: cap.repeat }),
      ANNOUNCEMENT_LANG, { createdBy: c.principal.id, name: `Cảnh báo: ${headlineOf(cap)}`.slice(0, 120), areas: reach.areas });
    const policy = repo.policy();
    const atOnce = cap.status !== 'Actual'
      || (cap.urgency === 'Immediate' && (policy.playAtOnce as string[]).includes(cap.severity));
    const alert: Alert = {
      id: newId('al', now), cap, state: 'pending_approval', areas: reach.areas, devices: reach.devices, expiresAt,
      mediaId: media.id, createdBy: c.principal.id, createdAt: now, playedAtOnce: cap.status === 'Actual' && atOnce, updatedAt: now,
    };
    // Replaced alerts' broadcasts in memory, so their stops are decided inside the transaction below.
    await this.preload(referenced);
    await this.records.txWithBroadcasts(() => {
      // The check of a concurrent raise with the same identifier happened before the awaits: again, in the transaction.
      if (repo.byIdentifier(cap.identifier)) throw Errors.CONFLICT(`an alert with identifier "${cap.identifier}" already exists`);
      if (atOnce) this.play(alert, c, media, referenced);
      repo.insert(alert);
      this.records.audit(c, 'alert.create', alert.id, undefined, auditView(alert));
      if (alert.playedAtOnce) this.records.audit(c, 'alert.play_at_once', alert.id, undefined, { severity: cap.severity, urgency: cap.urgency, broadcastId: alert.broadcastId });
    });
    this.records.changed(alert, 'created', c.principal.id);
    this.log.info({ alertId: alert.id, status: cap.status, severity: cap.severity, state: alert.state, by: c.principal.id }, 'alert raised');
    this.expiry.arm();
    if (alert.state === 'pending_approval') this.prefetch(alert, media);
    return alert;
  }

  // ------------------------------------------------------------ decisions

  /** The second person's approval: the alert plays; for an alert played at once, its confirmation. */
  async approve(c: Caller, id: string): Promise<Alert> {
    const a = this.get(c, id);
    const confirming = a.state === 'active' && a.playedAtOnce && a.approvedBy === undefined;
    if (a.state !== 'pending_approval' && !confirming) throw Errors.CONFLICT(`alert "${id}" is ${a.state}, not waiting for approval`);
    if (a.createdBy === c.principal.id) throw Errors.FORBIDDEN('an alert must be approved by someone other than the person who raised it');
    this.checkReach(c, a);
    const now = this.d.clock.now();
    const next: Alert = { ...a, approvedBy: c.principal.id, approvedAt: now, updatedAt: now };
    const replaces = confirming ? [] : this.referenced(c, next.cap);
    await this.preload(replaces);
    await this.records.txWithBroadcasts(() => {
      // Decided on what was read before the awaits: again, in the transaction (two approvals at once play once).
      const current = this.requireRepo().get(id);
      if (!current || current.state !== a.state || current.approvedBy !== undefined) throw Errors.CONFLICT(`alert "${id}" changed meanwhile`);
      if (!confirming) this.play(next, c, undefined, replaces);
      this.requireRepo().save(next);
      this.records.audit(c, confirming ? 'alert.confirm' : 'alert.approve', id, { state: a.state }, { state: next.state, broadcastId: next.broadcastId });
    });
    this.records.changed(next, confirming ? 'confirmed' : 'approved', c.principal.id);
    this.log.info({ alertId: id, by: c.principal.id, broadcastId: next.broadcastId }, confirming ? 'alert confirmed' : 'alert approved');
    return next;
  }

  /** A pending alert turned down (also its creator withdrawing it). */
  reject(c: Caller, id: string, reason?: string): Alert {
    const a = this.get(c, id);
    if (a.state !== 'pending_approval') throw Errors.CONFLICT(`alert "${id}" is ${a.state}, not waiting for approval`);
    this.checkReach(c, a);
    const next = this.records.end(a, 'rejected', c.principal.id, reason ?? 'rejected');
    this.records.tx(() => {
      this.requireRepo().save(next);
      this.records.audit(c, 'alert.reject', id, { state: a.state }, { state: next.state, reason: next.endReason });
      // Speakers offline since the raise must not fetch an announcement that will never play.
      if (a.mediaId !== undefined) void this.d.executor.withdrawPrefetch(a.mediaId);
    });
    this.records.changed(next, 'rejected', c.principal.id);
    return next;
  }

  /** Cancel in one step: stops it on every speaker and plays the cancellation notice where it played. */
  async cancel(c: Caller, id: string, reason?: string): Promise<Alert> {
    const a = this.get(c, id);
    if (FINAL_ALERT_STATES.has(a.state)) throw Errors.CONFLICT(`alert "${id}" is already ${a.state}`);
    this.checkReach(c, a);
    return this.cancellation.cancel(c, a, reason ?? 'cancelled');
  }

  // ------------------------------------------------------------ internals

  /**
   * Starts the alert's emergency broadcast (inside the caller's commit) and
   * ends the alerts an Update replaces. Mutates `a` (state, broadcastId).
   */
  private play(a: Alert, c: Caller, media: MediaRecord | undefined, replaces: Alert[]): void {
    const targets = this.targetsOf(a);
    a.state = 'active';
    if (targets.size === 0) {
      this.log.warn({ alertId: a.id, areas: a.areas }, 'alert is active but its areas have no loudspeakers');
    } else {
      const m = media ? announcementContent(media) : this.mediaOf(a);
      // In the caller's transaction (a synchronous unit of the state window): stored with the alert or not at all.
      const b = this.d.executor.begin({
        id: `al-${a.id}`.slice(0, 128), priority: 'emergency', volume: this.d.options.volume, targets: [...targets].sort(),
        notAfter: a.expiresAt, media: m,
      });
      b.stored.catch(() => undefined); // its failure is the transaction's: the caller's promise rejects
      a.broadcastId = b.broadcast.id;
    }
    for (const old of replaces) {
      if (FINAL_ALERT_STATES.has(old.state)) continue;
      if (old.broadcastId) this.cancellation.stopBroadcast(old.broadcastId);
      const ended = { ...this.records.end(old, 'ended', c.principal.id, `replaced by ${a.cap.identifier}`), replacedBy: a.id };
      this.requireRepo().save(ended);
      this.records.audit(c, 'alert.replace', old.id, { state: old.state }, { state: 'ended', replacedBy: a.id });
      this.records.afterTx(() => this.records.changed(ended, 'replaced', c.principal.id));
    }
  }

  /**
   * While the alert waits for its second person, the speakers that can (device protocol §12.7)
   * download its announcement, so that the approval puts only the signed command on the way to
   * every speaker: at 2,000 speakers the 2,000 downloads right after approval took Keng's main
   * thread and the speakers ~1-2 s more before the last one started (bench:alert). The targets
   * are those of the moment; a speaker added before approval downloads when it plays. A failure
   * here costs only that saving, never the alert.
   */
  private prefetch(a: Alert, media: MediaRecord): void {
    try {
      const targets = this.targetsOf(a);
      if (targets.size > 0) {
        void this.d.executor.prefetch([...targets].sort(), announcementContent(media), a.expiresAt).catch((err: unknown) => {
          this.log.warn({ err, alertId: a.id }, 'announcement prefetch could not be stored');
        });
      }
    } catch (err) {
      this.log.warn({ err, alertId: a.id }, 'announcement prefetch could not be sent');
    }
  }

  /** Reads the broadcasts of `alerts` into the executor's memory (a stop is then decided inside a transaction). */
  private async preload(alerts: readonly Alert[]): Promise<void> {
    for (const a of alerts) if (a.broadcastId) await this.d.executor.preload(a.broadcastId);
  }

  /** The loudspeakers an alert sounds on, as the registry is now. */
  private targetsOf(a: Alert): Set<string> {
    // A shape alert sounds on the loudspeakers inside its shapes only; its areas are theirs, for rights and views.
    return a.devices.length > 0
      ? new Set(a.devices.filter((id) => this.d.registry.getDevice(id)?.kind === 'speaker'))
      : resolveSpeakers(this.d.registry, { areas: a.areas });
  }

  /** The stored announcement of an alert raised earlier. */
  private mediaOf(a: Alert): MediaContent {
    const m = a.mediaId ? this.d.media.get(a.mediaId) : undefined;
    if (!m) throw Errors.UNPROCESSABLE(`the announcement of alert "${a.id}" is missing; raise it again`);
    return announcementContent(m);
  }

  /** The alerts an Update or Cancel references (CAP `references`: "sender,identifier,sent" entries, or Keng ids). */
  private referenced(c: Caller, cap: CapAlert): Alert[] {
    if (cap.msgType === 'Alert') return [];
    const refs = cap.references ?? [];
    if (refs.length === 0) throw Errors.UNPROCESSABLE(`an ${cap.msgType} message must reference the alert it changes (references)`);
    const repo = this.requireRepo();
    return refs.map((r) => {
      const a = repo.byIdentifier(r.identifier) ?? repo.get(r.identifier);
      if (!a || !this.visible(a, c)) throw Errors.UNPROCESSABLE(`referenced alert "${r.identifier}" does not exist`);
      this.checkReach(c, a);
      return a;
    });
  }

  /** 403 unless every area (and every single speaker's area) of the reach is within the caller's areas; 422 for unknown ones. */
  private checkReach(c: Caller, r: AlertReach): void {
    if (r.areas.length === 0 && r.devices.length === 0) throw Errors.UNPROCESSABLE('the alert covers no area');
    for (const code of r.areas) {
      if (!this.d.registry.getArea(code)) throw Errors.UNPROCESSABLE(`area "${code}" does not exist`);
      if (!c.inScope(code)) throw Errors.FORBIDDEN(`area "${code}" is outside your areas`);
    }
    for (const id of r.devices) {
      const d = this.d.registry.getDevice(id);
      if (d && !c.inScope(d.area)) throw Errors.FORBIDDEN(`a loudspeaker of this alert (${id}) is outside your areas`);
    }
  }

  /** An alert is shown to whoever has rights over any of its areas. */
  private visible(a: Alert, c: Caller): boolean {
    if (a.areas.some((x) => c.inScope(x))) return true;
    return a.devices.some((id) => { const d = this.d.registry.getDevice(id); return d !== undefined && c.inScope(d.area); });
  }

  private requireRepo(): AlertRepo {
    if (!this.repo) throw Errors.NOT_READY('alert service is not started');
    return this.repo;
  }
}
