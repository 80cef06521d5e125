#!/bin/sh
# Runs once, when PostgreSQL initialises an empty data volume: the `facts_reader` role, which
# the facts service logs in as to read deploy markers (config changes in the orchestrator's run
# timeline) and nothing else. The orchestrator creates its tables later, as POSTGRES_USER, in the
# `orchestrator` schema; default privileges extend SELECT to them as they appear.
set -eu
: "${FACTS_DB_PASSWORD:?FACTS_DB_PASSWORD is required (bash scripts/compose-env.sh adds it to .env)}"
psql -v ON_ERROR_STOP=1 -q --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$FACTS_DB_PASSWORD" -v owner="$POSTGRES_USER" <<'SQL'
CREATE ROLE facts_reader LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER ROLE facts_reader SET default_transaction_read_only = on;
CREATE SCHEMA IF NOT EXISTS orchestrator AUTHORIZATION :"owner";
GRANT USAGE ON SCHEMA orchestrator TO facts_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA orchestrator GRANT SELECT ON TABLES TO facts_reader;
SQL
