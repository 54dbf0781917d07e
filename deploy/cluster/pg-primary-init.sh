#!/bin/bash
# First start of the PostgreSQL primary only (the postgres image runs the files of
# /docker-entrypoint-initdb.d once, on an empty data directory, as the postgres user).
#  - the role Keng logs in with owns its database (docs/cluster.md "Role and privileges":
#    no superuser, no replication right);
#  - a replication role for the streaming standby, allowed in pg_hba.conf (the image's
#    own "host all all all" line does not cover replication connections).
set -euo pipefail
: "${PG_KENG_PASSWORD:?set PG_KENG_PASSWORD}"
: "${PG_REPLICATION_PASSWORD:?set PG_REPLICATION_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v keng_password="$PG_KENG_PASSWORD" -v replication_password="$PG_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE keng LOGIN PASSWORD :'keng_password';
CREATE DATABASE keng OWNER keng;
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'replication_password';
SQL
echo 'host replication replicator all scram-sha-256' >> "$PGDATA/pg_hba.conf"
