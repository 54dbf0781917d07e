/** Emergency alerts: CAP 1.2 messages, two-person approval, emergency broadcasts (docs/alerts.md). */
export * from './cap/index.js';
export { ALERTS_MIGRATION } from './migrations.js';
export { AlertService, headlineOf, type AlertReach, type AlertServiceDeps, type AlertServiceOptions } from './service.js';
export { resolveReach } from './reach.js';
export { ALERT_STATES, FINAL_ALERT_STATES, DEFAULT_ALERT_POLICY, type Alert, type AlertPolicy, type AlertState } from './types.js';
export { alertAnnouncement, cancellationAnnouncement, ANNOUNCEMENT_LANG } from './announcement.js';
