/**
 * Cluster mode: the secrets every node must share (docs/cluster.md "Shared secrets"), one row each,
 * sealed (seal.ts): `key_id` is the fingerprint of the key-encryption key, `nonce` the GCM nonce,
 * `sealed` the ciphertext and its tag; never a key in plain text. `version` counts the changes of a
 * row (the command key ring's rotations): nodes poll it. Embedded mode has no such table: the
 * secrets are files under the data directory.
 */
import type { SqlMigration } from '../sql/index.js';

export const SECRETS_PG_MIGRATIONS: readonly SqlMigration[] = [{
  version: 1,
  name: 'cluster_secrets',
  sqlite: [],
  postgres: [
    `CREATE TABLE cluster_secrets (
      name text PRIMARY KEY, version bigint NOT NULL, key_id text NOT NULL, nonce bytea NOT NULL, sealed bytea NOT NULL, updated_at bigint NOT NULL)`,
  ],
}];
