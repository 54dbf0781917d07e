/** Emergency alerts: CAP 1.2 messages, two-person approval, emergency broadcasts (docs/alerts.md). */
export * from './cap/index.js';
export { ALERTS_MIGRATION } from './migrations.js';
export { ALERTS_PG_MIGRATIONS } from './pg-schema.js';
export { AlertService, type AlertServiceDeps } from './service.js';
export { headlineOf } from './records.js';
export { resolveReach } from './reach.js';
export { ALERT_STATES, FINAL_ALERT_STATES, DEFAULT_ALERT_POLICY, type Alert, type AlertPolicy, type AlertReach, type AlertServiceOptions, type AlertState } from './types.js';
export { alertAnnouncement, cancellationAnnouncement, ANNOUNCEMENT_LANG } from './announcement.js';
