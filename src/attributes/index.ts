export { SharedAttributes, attributesTopic, type SharedAttributesDeps, type SharedLayer, type SharedView, type Owner } from './service.js';
export { SHARED_ATTRIBUTES_MIGRATION } from './migration.js';
export { checkPatch, keyProblem, MAX_KEYS, MAX_JSON_BYTES, MAX_STRING_LENGTH, type SharedPatch, type SharedValue } from './validate.js';
