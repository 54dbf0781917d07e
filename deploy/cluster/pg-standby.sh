#!/bin/bash
# The streaming standby: on an empty data directory, copy the primary with
# pg_basebackup -R (writes standby.signal and primary_conninfo), then run postgres.
# Its cluster_name is the application_name the primary sees, the name to put in
# synchronous_standby_names (docs/cluster.md "Three nodes with Docker Compose").
set -euo pipefail
: "${PG_PRIMARY_HOST:?set PG_PRIMARY_HOST}"
: "${PGPASSWORD:?set PGPASSWORD (the replication password)}"
: "${PGDATA:?set PGDATA}"
NAME="${PG_STANDBY_NAME:-pg_standby}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -q -h "$PG_PRIMARY_HOST" -p "${PG_PRIMARY_PORT:-5432}"; do sleep 1; done
  pg_basebackup -d "host=$PG_PRIMARY_HOST port=${PG_PRIMARY_PORT:-5432} user=replicator application_name=$NAME" \
    -D "$PGDATA" -R -X stream -c fast
  chmod 700 "$PGDATA"
fi
exec postgres -D "$PGDATA" -c cluster_name="$NAME" -c hot_standby=on "$@"
