export { SharedAttributes, attributesTopic, CLUSTER_RELOAD_INTERVAL_MS, type SharedAttributesDeps, type SharedLayer, type SharedView, type Owner, type OwnChange } from './service.js';
export { SHARED_ATTRIBUTES_MIGRATION } from './migration.js';
export { ATTRIBUTES_PG_MIGRATIONS } from './pg-schema.js';
export { checkPatch, keyProblem, MAX_KEYS, MAX_JSON_BYTES, MAX_STRING_LENGTH, type SharedPatch, type SharedValue } from './validate.js';
