export { AdminAuth, ADMIN_TOKEN_FILE, type AdminAuthOptions } from './admin-auth.js';
export { AuthenticatorChain, parseBearer, MAX_TOKEN_LENGTH } from './chain.js';
export { Policy, roleAllows, ACTIONS, AREA_SCOPED, type Action, type AreaTree, type Scope } from './policy.js';
export { ROLES, ALL_AREAS, type Role, type Principal, type Authenticator } from './types.js';
