#!/usr/bin/env bash
# Brings up the whole local Folio cluster with demo data:
# PostgreSQL + NATS (installed and started when missing), the `folio` database migrated and
# seeded (an agency, users, clients, proposals), and every Folio service built so far, running
# in the background with logs under $FOLIO_DEV_DIR. Stop it with scripts/dev-down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${FOLIO_DEV_DIR:-/tmp/folio-dev}
mkdir -p "$dev"

eval "$(scripts/start-services.sh)"
server_url=$FOLIO_DATABASE_URL
psql "$server_url" -Atc "SELECT 1 FROM pg_database WHERE datname = 'folio'" | grep -q 1 ||
  psql "$server_url" -qc "CREATE DATABASE folio"
export FOLIO_DATABASE_URL=${server_url%/*}/folio
# A local cluster: the services accept their built-in (public) secrets, with a warning, and
# derive URLs from requests. Without it they refuse to start (docs/security.md).
export FOLIO_ENV=${FOLIO_ENV:-development}
export FOLIO_JWT_SECRET=${FOLIO_JWT_SECRET:-folio-local-development-secret-change-me}

echo "building the services"
cargo build ${FOLIO_DEV_CARGO_ARGS:---workspace} --bins --quiet
bin=${CARGO_TARGET_DIR:-target}/debug

scripts/dev-down.sh >/dev/null 2>&1 || true
start() { # name, then its arguments
  local name=$1; shift
  [ -x "$bin/$name" ] || { echo "  $name: not built yet, skipped"; return; }
  setsid "$bin/$name" "$@" >"$dev/$name.log" 2>&1 </dev/null &
  echo $! >"$dev/$name.pid"
  echo "  $name: pid $!, log $dev/$name.log"
}
echo "starting a local SMTP sink on 127.0.0.1:2525 (mail lands in $dev/mail, a Maildir)"
python=$(scripts/notifier-test-deps.sh)
if ! (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null; then
  mkdir -p "$dev/mail/tmp" "$dev/mail/new" "$dev/mail/cur"
  setsid "$python" -m aiosmtpd -n -l 127.0.0.1:2525 -c aiosmtpd.handlers.Mailbox "$dev/mail" \
    >"$dev/smtp.log" 2>&1 </dev/null &
  echo $! >"$dev/smtp.pid"
fi

echo "starting services"
start proposals-api --listen-addr 127.0.0.1:50051 --admin-addr 127.0.0.1:9101
start wal-ingest --admin-addr 127.0.0.1:9102
start shape-edge --listen-addr 127.0.0.1:3000 --admin-addr 127.0.0.1:9103
start pdf-render --admin-addr 127.0.0.1:9104
start notifier --admin-addr 127.0.0.1:9105

# Seed only once wal-ingest's slot exists, so the demo's PDF jobs reach the queue.
for port in 9101 9102; do
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo
echo "demo data and bearer tokens (authorization: Bearer <token>):"
"$bin/seed-demo"
echo
cat <<TXT
proposals-api  grpc://127.0.0.1:50051 (gRPC, gRPC-Web, GET /v1/renditions/{id}/pdf)
shape-edge     http://127.0.0.1:3000 (Electric shapes: GET /v1/shape?table=proposals&offset=-1 with the token;
               Durable Streams under /v1/stream/)
admin          http://127.0.0.1:910{1..5}/healthz, /readyz, /metrics  (api, wal-ingest, edge, pdf, notifier)
notifier API   http://127.0.0.1:8090/v1/deliveries/{id}   mail: $dev/mail
logs           $dev/*.log       stop: scripts/dev-down.sh
TXT
