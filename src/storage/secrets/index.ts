/** Cluster mode: the secrets all nodes share, sealed in PostgreSQL (docs/cluster.md "Shared secrets"). */
export { SharedSecrets, adoptSharedSecret, type AdoptOptions, type SharedSecret, type SharedSecretsOptions } from './store.js';
export { SECRETS_KEK_INFO, deriveKek, seal, unseal, type SecretsKek } from './seal.js';
export { SECRETS_PG_MIGRATIONS } from './pg-schema.js';
