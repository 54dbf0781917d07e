export { ApiServer, API_PREFIX, API_VERSION, DEFAULT_MAX_POINTS, type ApiServerOptions, type ApiExtension } from './server.js';
export { principalOf, type RouteContext, type ReadyCheck } from './context.js';
export { classifyError, sendError, validationDetails, type ErrorBody, type FieldError } from './errors.js';
export { resolveRange } from './range.js';
