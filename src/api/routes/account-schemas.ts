/** TypeBox schemas of the account routes (users, auth, tokens, audit). */
import { Type } from 'typebox';
import { ROLES } from '../../auth/types.js';
import { USERNAME_PATTERN } from '../../auth/passwords.js';
import { StringEnum, Time, TimeInput } from '../schemas.js';

export const Role = StringEnum(ROLES, { description: 'admin | operator | viewer | service (docs/roles.md)' });
export const AreaCodes = Type.Array(
  Type.String({ pattern: '^(\\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$', description: 'Area code ("*" = every area; admins only may grant it)' }),
  { maxItems: 100, description: 'Areas the role applies to (each with its subtree); ignored for admin ("*")' },
);
export const Username = Type.String({ pattern: USERNAME_PATTERN, description: 'Lower-case letters, digits, . _ -; 3 to 64 characters' });
/** The password rules give KENG_ERR_WEAK_PASSWORD saying why (clearer than a schema error), so the schema only bounds the size. */
const Password = Type.String({
  minLength: 1, maxLength: 1024,
  description: 'At least 10 characters, no space at either end, not the username, not easy to guess (a phrase of several words works well). Never returned.',
});

export const User = Type.Object({
  username: Type.String(),
  role: Role,
  areas: Type.Array(Type.String()),
  disabled: Type.Boolean(),
  locked: Type.Boolean({ description: 'Locked for everyone after repeated failed logins, until lockedUntil or an admin unlocks' }),
  lockedAt: Type.Union([Time, Type.Null()]),
  lockedUntil: Type.Union([Time, Type.Null()], { description: 'When the lock ends by itself' }),
  createdAt: Time,
  updatedAt: Time,
  createdBy: Type.Union([Type.String(), Type.Null()], { description: 'Audit actor that created the user' }),
});

export const NewUser = Type.Object({
  username: Username,
  password: Password,
  role: Role,
  areas: Type.Optional(AreaCodes),
}, { additionalProperties: false });

export const UserPatch = Type.Object({
  password: Type.Optional(Password),
  currentPassword: Type.Optional(Type.String({ maxLength: 1024, description: 'Required when users change their own password' })),
  role: Type.Optional(Role),
  areas: Type.Optional(AreaCodes),
  disabled: Type.Optional(Type.Boolean({ description: 'true ends the user\'s sessions at once and refuses logins' })),
  unlock: Type.Optional(Type.Boolean({ description: 'true ends a lock after failed logins at once and clears the failure counts (admins only)' })),
}, { additionalProperties: false, minProperties: 1 });

export const UsernameParams = Type.Object({ username: Type.String({ minLength: 1, maxLength: 64 }) });

export const LoginBody = Type.Object({
  username: Type.String({ minLength: 1, maxLength: 128 }),
  password: Type.String({ minLength: 1, maxLength: 1024 }),
}, { additionalProperties: false });

export const LoginReply = Type.Object({
  token: Type.String({ description: 'Session token (kengs_…): send as "Authorization: Bearer <token>"' }),
  expiresAt: Time,
  username: Type.String(),
  role: Role,
  areas: Type.Array(Type.String()),
});

export const Me = Type.Object({
  kind: StringEnum(['admin', 'user', 'token'] as const),
  id: Type.String(),
  role: Role,
  areas: Type.Array(Type.String()),
});

export const TokenMeta = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: Role,
  areas: Type.Array(Type.String()),
  createdBy: Type.String(),
  createdAt: Time,
  expiresAt: Type.Union([Time, Type.Null()]),
  lastUsedAt: Type.Union([Time, Type.Null()], { description: 'Updated at most once a minute' }),
  revoked: Type.Boolean(),
  revokedAt: Type.Union([Time, Type.Null()]),
});

export const CreatedToken = Type.Object({
  ...TokenMeta.properties,
  token: Type.String({ description: 'The API token (kengt_…). Shown only here; stored hashed.' }),
});

export const NewToken = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 100 }),
  role: Role,
  areas: Type.Optional(AreaCodes),
  expiresAt: Type.Optional(TimeInput),
}, { additionalProperties: false });

export const TokenIdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

export const AuditEntry = Type.Object({
  seq: Type.Integer(),
  at: Time,
  actor: Type.String({ description: 'kind:id of the principal ("admin:admin", "user:lan", "token:tok_…"), "anonymous" or "cli:<os user>"' }),
  action: Type.String(),
  target: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  before: Type.Unknown({ description: 'State before the change (secrets stripped), or null' }),
  after: Type.Unknown({ description: 'State after the change (secrets stripped), or null' }),
  prevHash: Type.String(),
  hash: Type.String({ description: 'sha256(prevHash + canonical JSON of the row)' }),
});

export const AuditQuery = Type.Object({
  from: Type.Optional(TimeInput),
  to: Type.Optional(TimeInput),
  actor: Type.Optional(Type.String({ maxLength: 256, description: 'Exact actor, e.g. user:lan' })),
  action: Type.Optional(Type.String({ maxLength: 128, description: 'Exact action (user.create) or a prefix (user, user.*)' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'Default 100' })),
  before: Type.Optional(Type.Integer({ minimum: 1, description: 'Only entries with seq below this (next page: the last seq seen)' })),
});

export const AuditPage = Type.Object({
  entries: Type.Array(AuditEntry, { description: 'Newest first' }),
  nextBefore: Type.Union([Type.Integer(), Type.Null()], { description: 'Pass as before= for the next (older) page; null when done' }),
});

export const AuditHead = Type.Object({
  v: Type.Literal(1),
  seq: Type.Integer({ minimum: 0, description: 'Newest entry (0: none yet)' }),
  hash: Type.String({ description: 'Its hash (64 hex digits)' }),
  keyedSince: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: 'First keyed entry; null while none is' }),
  at: Type.String({ description: 'When it was signed (UTC)' }),
  kid: Type.String({ description: 'Id of the audit key that signed it' }),
  reason: Type.Optional(Type.String()),
  sig: Type.String({ description: 'base64url HMAC-SHA256 with the audit key (docs/audit.md)' }),
});
