# Sourced, not run (`. scripts/postgres-env.sh`), by every script that needs PostgreSQL: runs
# scripts/ensure-postgres.sh and exports the server it chose, so that what runs next uses it:
#   DATABASE_URL          its admin URL (database `postgres`), read by the services, `observastack`
#                         and the Rust tests; one already set is kept (once a server answers there);
#   PGHOST PGPORT PGUSER  the same server for psql and the other libpq tools, when the URL names
#                         a host (a plain `psql -d postgres` then reaches it).
# Returns non-zero when no server could be had; ensure-postgres.sh has said why on stderr.
# shellcheck shell=bash

if DATABASE_URL=$(bash "$(dirname "${BASH_SOURCE[0]}")/ensure-postgres.sh") && [ -n "$DATABASE_URL" ]; then
  export DATABASE_URL
  # postgres[ql]://[user[:password]@]host[:port][/database][?params]; a password or an IPv6 host
  # is left to the URL itself.
  if [[ $DATABASE_URL =~ ^postgres(ql)?://(([^@/:]*)(:[^@/]*)?@)?([^@/:?\[]+)(:([0-9]+))? ]]; then
    export PGHOST="${BASH_REMATCH[5]}" PGPORT="${BASH_REMATCH[7]:-5432}"
    [ -z "${BASH_REMATCH[3]}" ] || export PGUSER="${BASH_REMATCH[3]}"
  fi
else
  unset DATABASE_URL
  false
fi
