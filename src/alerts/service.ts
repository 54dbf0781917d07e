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
import type { Db } from '../storage/sql/db.js';
import type { StateWindow } from '../storage/state/window.js';
import { ANNOUNCEMENT_LANG, alertAnnouncement, announcementContent } from './announcement.js';
import { AlertCancellation } from './cancellation.js';
import type { CapAlert } from './cap/index.js';
import { AlertExpiry } from './expiry.js';
import { AlertRecords, auditView, headlineOf, type Step } from './records.js';
import { AlertRepo, type AlertListQuery } from './repo.js';
import { FINAL_ALERT_STATES, type Alert, type AlertPolicy, type AlertReach, type AlertServiceOptions } from './types.js';

export interface AlertServiceDeps {
  /** The node's state window: every step is a unit of it, with the broadcasts it starts or stops. */
  window: StateWindow;
  /** The database that window writes to (where the alerts are; read outside the steps). */
  windowDb: Db<unknown>;
  registry: TargetRegistry;
  media: Pick<MediaLibrary, 'synthesizeSequence' | 'get' | 'lookup'>;
  executor: Pick<BroadcastExecutor, 'begin' | 'startBroadcast' | 'stopBroadcast' | 'preload' | 'getStored' | 'prefetch' | 'withdrawPrefetch'>;
  bus: Pick<EventBus, 'emit'>;
  audit: AuditRecorder;
  logger: Logger;
  clock: Clock;
  options: AlertServiceOptions;
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
    this.repo = new AlertRepo(this.d.windowDb.kysely);
    // Alerts that expired while Keng was down end now; the others' expiry is timed again.
    await this.expiry.sweep();
  }

  async stop(): Promise<void> {
    this.expiry.stop();
    await this.expiry.idle();
    this.expiry.stop(); // a sweep that was under way timed the next one
    this.repo = null;
  }

  // ------------------------------------------------------------ reading

  /** Alerts touching any of the caller's areas, newest first. */
  async list(c: Caller, q: AlertListQuery = {}): Promise<Alert[]> {
    // Scope first, then the limit: the newest N the caller may see, not the caller's share of the newest N.
    const { limit = 500, ...rest } = q;
    const out: Alert[] = [];
    for (const a of await this.requireRepo().list({ ...rest, limit: 100_000 })) {
      if (!this.visible(a, c)) continue;
      out.push(a);
      if (out.length >= limit) break;
    }
    return out;
  }

  /** 404 when unknown or outside the caller's areas. */
  async get(c: Caller, id: string): Promise<Alert> {
    const a = await this.requireRepo().get(id);
    if (!a || !this.visible(a, c)) throw Errors.NOT_FOUND(`Alert "${id}"`);
    return a;
  }

  /** Active public Actual alerts (the public CAP Atom feed: no caller, no scope). */
  async activePublic(): Promise<Alert[]> {
    return (await this.requireRepo().list({ states: ['active'] }))
      .filter((a) => a.cap.scope === 'Public' && a.cap.status === 'Actual');
  }

  /** Read from the database at each use (no cache: a change made on another node counts at once). */
  policy(): Promise<AlertPolicy> { return this.requireRepo().policy(); }

  async setPolicy(c: Caller, p: AlertPolicy): Promise<AlertPolicy> {
    const repo = this.requireRepo();
    const next: AlertPolicy = { playAtOnce: [...new Set(p.playAtOnce)].sort() as AlertPolicy['playAtOnce'] };
    await this.records.step(async (s) => {
      const before = await repo.policy(s.trx);
      await repo.setPolicy(s.trx, next, c.principal.id, this.d.clock.now());
      await this.records.audit(s, c, 'alert.policy', 'alert-policy', before, next);
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
    if (await repo.byIdentifier(cap.identifier)) throw Errors.CONFLICT(`an alert with identifier "${cap.identifier}" already exists`);
    // A Cancel needs no expiry of its own (it acts at once).
    const expiresAt = cap.expires ?? (cap.msgType === 'Cancel' ? now : Number.NaN);
    if (!Number.isFinite(expiresAt)) throw Errors.UNPROCESSABLE('the alert needs an expiry time (expires)');
    if (cap.msgType !== 'Cancel' && expiresAt <= now) throw Errors.UNPROCESSABLE('the alert has already expired');
    const referenced = await this.referenced(c, cap);

    if (cap.msgType === 'Cancel') return this.cancellation.applyMessage(c, cap, reach, referenced, expiresAt);

    const media = await this.d.media.synthesizeSequence(
      alertAnnouncement(cap, { toneSec: this.d.options.toneSec, repeat: cap.repeat }),
      ANNOUNCEMENT_LANG, { createdBy: c.principal.id, name: `Cảnh báo: ${headlineOf(cap)}`.slice(0, 120), areas: reach.areas });
    const policy = await repo.policy();
    const atOnce = cap.status !== 'Actual'
      || (cap.urgency === 'Immediate' && (policy.playAtOnce as string[]).includes(cap.severity));
    const alert: Alert = {
      id: newId('al', now), cap, state: 'pending_approval', areas: reach.areas, devices: reach.devices, expiresAt,
      mediaId: media.id, createdBy: c.principal.id, createdAt: now, playedAtOnce: cap.status === 'Actual' && atOnce, updatedAt: now,
    };
    // Replaced alerts' broadcasts in memory, so their stops are decided inside the unit below.
    await this.preload(referenced);
    const targets = atOnce ? this.playing(alert) : [];
    await this.records.step(async (s) => {
      // The check of a concurrent raise with the same identifier happened before the awaits: again, in the transaction.
      if (await repo.byIdentifier(cap.identifier, s.trx)) throw Errors.CONFLICT(`an alert with identifier "${cap.identifier}" already exists`);
      if (atOnce) await this.play(s, alert, c, targets, announcementContent(media), referenced);
      // Another node may have stored the identifier since the check: nothing of this step is then kept.
      if (!(await repo.insert(s.trx, alert))) throw Errors.CONFLICT(`an alert with identifier "${cap.identifier}" already exists`);
      await this.records.audit(s, c, 'alert.create', alert.id, undefined, auditView(alert));
      if (alert.playedAtOnce) await this.records.audit(s, c, 'alert.play_at_once', alert.id, undefined, { severity: cap.severity, urgency: cap.urgency, broadcastId: alert.broadcastId });
      s.after(() => this.records.changed(alert, 'created', c.principal.id));
    });
    this.log.info({ alertId: alert.id, status: cap.status, severity: cap.severity, state: alert.state, by: c.principal.id }, 'alert raised');
    await this.expiry.arm().catch((err: unknown) => { this.log.error({ err, alertId: alert.id }, 'alert expiry could not be timed'); });
    if (alert.state === 'pending_approval') this.prefetch(alert, media);
    return alert;
  }

  // ------------------------------------------------------------ decisions

  /** The second person's approval: the alert plays; for an alert played at once, its confirmation. */
  async approve(c: Caller, id: string): Promise<Alert> {
    const a = await this.get(c, id);
    const confirming = a.state === 'active' && a.playedAtOnce && a.approvedBy === undefined;
    if (a.state !== 'pending_approval' && !confirming) throw Errors.CONFLICT(`alert "${id}" is ${a.state}, not waiting for approval`);
    if (a.createdBy === c.principal.id) throw Errors.FORBIDDEN('an alert must be approved by someone other than the person who raised it');
    this.checkReach(c, a);
    const now = this.d.clock.now();
    const replaces = confirming ? [] : await this.referenced(c, a.cap);
    const n: Alert = { ...a, approvedBy: c.principal.id, approvedAt: now, updatedAt: now };
    const targets = confirming ? [] : this.playing(n);
    const content = targets.length > 0 ? await this.mediaOf(a) : undefined;
    await this.preload(replaces);
    const next = await this.records.step(async (s) => {
      // Decided on what was read before the awaits: the guarded write decides again (two approvals, on one node or
      // two, play once: the second finds the row changed and its step keeps nothing).
      const saved = await this.requireRepo().transition(s.trx, n, { states: [a.state], unapproved: true });
      if (!saved) throw Errors.CONFLICT(`alert "${id}" changed meanwhile`);
      if (!confirming) await this.play(s, n, c, targets, content, replaces);
      await this.records.audit(s, c, confirming ? 'alert.confirm' : 'alert.approve', id, { state: a.state }, { state: n.state, broadcastId: n.broadcastId });
      s.after(() => this.records.changed(n, confirming ? 'confirmed' : 'approved', c.principal.id));
      return n;
    });
    this.log.info({ alertId: id, by: c.principal.id, broadcastId: next.broadcastId }, confirming ? 'alert confirmed' : 'alert approved');
    return next;
  }

  /** A pending alert turned down (also its creator withdrawing it). */
  async reject(c: Caller, id: string, reason?: string): Promise<Alert> {
    const a = await this.get(c, id);
    if (a.state !== 'pending_approval') throw Errors.CONFLICT(`alert "${id}" is ${a.state}, not waiting for approval`);
    this.checkReach(c, a);
    const next = this.records.end(a, 'rejected', c.principal.id, reason ?? 'rejected');
    await this.records.step(async (s) => {
      if (!(await this.requireRepo().transition(s.trx, next, { states: ['pending_approval'] }))) throw Errors.CONFLICT(`alert "${id}" changed meanwhile`);
      await this.records.audit(s, c, 'alert.reject', id, { state: a.state }, { state: next.state, reason: next.endReason });
      // Speakers offline since the raise must not fetch an announcement that will never play (withdrawn in this window).
      if (a.mediaId !== undefined) { const m = a.mediaId; void s.capture(() => this.d.executor.withdrawPrefetch(m)); }
      s.after(() => this.records.changed(next, 'rejected', c.principal.id));
    });
    return next;
  }

  /** Cancel in one step: stops it on every speaker and plays the cancellation notice where it played. */
  async cancel(c: Caller, id: string, reason?: string): Promise<Alert> {
    const a = await this.get(c, id);
    if (FINAL_ALERT_STATES.has(a.state)) throw Errors.CONFLICT(`alert "${id}" is already ${a.state}`);
    this.checkReach(c, a);
    return this.cancellation.cancel(c, a, reason ?? 'cancelled');
  }

  // ------------------------------------------------------------ internals

  /** Decides that `a` plays (mutates it: state, broadcastId); the loudspeakers it plays on, as the registry is now. */
  private playing(a: Alert): string[] {
    const targets = [...this.targetsOf(a)].sort();
    a.state = 'active';
    if (targets.length > 0) a.broadcastId = `al-${a.id}`.slice(0, 128);
    else delete a.broadcastId;
    return targets;
  }

  /**
   * Inside a step: starts the alert's emergency broadcast (decided by playing(); its rows and commands join the
   * step's window) and ends the alerts an Update replaces, those still open (guarded), stopping their broadcasts.
   */
  private async play(s: Step, a: Alert, c: Caller, targets: readonly string[], content: MediaContent | undefined, replaces: Alert[]): Promise<void> {
    if (targets.length === 0 || content === undefined) {
      this.log.warn({ alertId: a.id, areas: a.areas }, 'alert is active but its areas have no loudspeakers');
    } else {
      const b = s.capture(() => this.d.executor.begin({
        id: a.broadcastId!, priority: 'emergency', volume: this.d.options.volume, targets: [...targets], notAfter: a.expiresAt, media: content,
      }));
      b.stored.catch(() => undefined); // its failure is the window's: the step's promise rejects
    }
    const repo = this.requireRepo();
    for (const read of replaces) {
      // As it is now (it may have changed since it was read), and written only if it still is.
      const old = await repo.get(read.id, s.trx);
      if (!old || FINAL_ALERT_STATES.has(old.state)) continue;
      const ended = { ...this.records.end(old, 'ended', c.principal.id, `replaced by ${a.cap.identifier}`), replacedBy: a.id };
      if (!(await repo.transition(s.trx, ended, { states: [old.state] }))) continue; // ended meanwhile on another node
      if (old.broadcastId) this.cancellation.stopBroadcast(s, old.broadcastId);
      await this.records.audit(s, c, 'alert.replace', old.id, { state: old.state }, { state: 'ended', replacedBy: a.id });
      s.after(() => this.records.changed(ended, 'replaced', c.principal.id));
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

  /** The stored announcement of an alert raised earlier (perhaps on another node: this node's copy may not have it yet). */
  private async mediaOf(a: Alert): Promise<MediaContent> {
    const m = a.mediaId ? this.d.media.get(a.mediaId) ?? await this.d.media.lookup(a.mediaId) : undefined;
    if (!m) throw Errors.UNPROCESSABLE(`the announcement of alert "${a.id}" is missing; raise it again`);
    return announcementContent(m);
  }

  /** The alerts an Update or Cancel references (CAP `references`: "sender,identifier,sent" entries, or Keng ids). */
  private async referenced(c: Caller, cap: CapAlert): Promise<Alert[]> {
    if (cap.msgType === 'Alert') return [];
    const refs = cap.references ?? [];
    if (refs.length === 0) throw Errors.UNPROCESSABLE(`an ${cap.msgType} message must reference the alert it changes (references)`);
    const repo = this.requireRepo();
    const out: Alert[] = [];
    for (const r of refs) {
      const a = (await repo.byIdentifier(r.identifier)) ?? (await repo.get(r.identifier));
      if (!a || !this.visible(a, c)) throw Errors.UNPROCESSABLE(`referenced alert "${r.identifier}" does not exist`);
      this.checkReach(c, a);
      out.push(a);
    }
    return out;
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
