/** Sensor-triggered warnings: threshold rules on telemetry that raise alerts (docs/alerts.md). */
export { ALERT_RULES_MIGRATION } from './migrations.js';
export { ruleActorId } from './raise.js';
export { validateRuleBody, validateRulePatch } from './validate.js';
export * from './model.js';
