#!/usr/bin/env bash
# Stops the services and the gateway (nginx, gateway.pid) started by scripts/dev-up.sh
# (PostgreSQL and NATS keep running), and waits until they are gone so their ports are free.
set -u
dev=${FOLIO_DEV_DIR:-/tmp/folio-dev}
stopped=()
for pidfile in "$dev"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null && { echo "stopped $(basename "$pidfile" .pid) ($pid)"; stopped+=("$pid"); }
  rm -f "$pidfile"
done
for pid in "${stopped[@]}"; do
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
