/** Sensor-triggered warnings: threshold rules on telemetry that raise alerts (docs/alerts.md). */
export { AlertRules, type AlertRulesDeps, type AlertRuleView } from './service.js';
export { RuleEngine, realTimers, CONDITION_ENDED, type Timers, type RuleDeviceView } from './engine.js';
export { ALERT_RULES_MIGRATION } from './migrations.js';
export { ruleActorId } from './raise.js';
export { validateRuleBody, validateRulePatch } from './validate.js';
export * from './model.js';
