#!/bin/sh
# Folio's PostgreSQL image entrypoint, a minimal stand-in for the official image's:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / POSTGRES_HOST_AUTH_METHOD,
# /docker-entrypoint-initdb.d/*.sql|*.sh, and "-c k=v" args appended to postgres.
set -e
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_USER:=postgres}"; : "${POSTGRES_DB:=$POSTGRES_USER}"
  auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  pw=$(mktemp); printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" > "$pw"
  initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pw" --auth-local=trust --auth-host="$auth" >/dev/null
  rm -f "$pw"
  # wal-ingest streams the slot over a replication connection.
  printf 'host all all all %s\nhost replication all all %s\n' "$auth" "$auth" >> "$PGDATA/pg_hba.conf"
  printf "listen_addresses = '*'\nwal_level = logical\nmax_replication_slots = 20\nmax_wal_senders = 20\n" >> "$PGDATA/postgresql.conf"
  # temporary server: its log goes to stdout (the official image does the same)
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sql) psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$f" ;;
      *.sh)  . "$f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec "$@"
