#!/usr/bin/env bash
# Stops the services started by scripts/dev-up.sh (PostgreSQL and NATS keep running).
set -u
dev=${FOLIO_DEV_DIR:-/tmp/folio-dev}
for pidfile in "$dev"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null && echo "stopped $(basename "$pidfile" .pid) ($pid)"
  rm -f "$pidfile"
done
