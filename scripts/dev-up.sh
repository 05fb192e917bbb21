#!/usr/bin/env bash
# Brings up the whole local Folio cluster with demo data:
# PostgreSQL + NATS (installed and started when missing), the `folio` database migrated and
# seeded (an agency, users, clients, proposals), and every Folio service built so far, running
# in the background with logs under $FOLIO_DEV_DIR, behind one gateway (Debian's nginx with
# deploy/gateway/nginx.conf.template, on 127.0.0.1:${FOLIO_GATEWAY_PORT:-8080}): the one URL a
# browser needs. Stop it with scripts/dev-down.sh.
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
gateway_port=${FOLIO_GATEWAY_PORT:-8080}
gateway="http://127.0.0.1:$gateway_port"
# Links in emails (unsubscribe, the proposal page) point at the gateway, like the browser.
export FOLIO_NOTIFIER_PUBLIC_URL=${FOLIO_NOTIFIER_PUBLIC_URL:-$gateway}
export FOLIO_PUBLIC_BASE_URL=${FOLIO_PUBLIC_BASE_URL:-$gateway}

echo "building the services"
cargo build ${FOLIO_DEV_CARGO_ARGS:---workspace} --bins --quiet
bin=${CARGO_TARGET_DIR:-target}/debug

scripts/dev-down.sh >/dev/null 2>&1 || true
if (exec 3<>"/dev/tcp/127.0.0.1/$gateway_port") 2>/dev/null; then
  echo "dev-up: 127.0.0.1:$gateway_port is taken by another program; set FOLIO_GATEWAY_PORT to a free port" >&2
  exit 1
fi
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

# The web app (web/, SvelteKit): a static bundle the gateway serves at /, built when Node is
# here (the placeholder page otherwise).
if command -v node >/dev/null && command -v npm >/dev/null; then
  echo "building the web app (web/build)"
  if ! (
    cd web
    if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
      npm ci --cache /var/cache/folio-npm --prefer-offline --no-audit --no-fund --loglevel=error
    fi
    npm run --silent build >"$dev/web-build.log" 2>&1
  ); then
    echo "  the web app did not build (log $dev/web-build.log); / serves the placeholder" >&2
  fi
else
  echo "  node/npm not found: / serves the placeholder instead of the web app"
fi

echo "starting the gateway on $gateway"
mkdir -p "$dev/gateway"
rm -f "$dev/gateway/dev-users.json"
pid=$(FOLIO_GATEWAY_LISTEN=127.0.0.1:$gateway_port FOLIO_EDGE_UPSTREAM=127.0.0.1:3000 \
  FOLIO_API_UPSTREAM=127.0.0.1:50051 FOLIO_NOTIFIER_UPSTREAM=127.0.0.1:8090 FOLIO_GATEWAY_WEB_ROOT=auto \
  deploy/gateway/start.sh "$dev/gateway")
echo "$pid" >"$dev/gateway.pid"
echo "  gateway (nginx): pid $pid, config $dev/gateway/nginx.conf, log $dev/gateway/error.log"

# Seed only once wal-ingest's slot exists, so the demo's PDF jobs reach the queue.
for port in 9101 9102; do
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo
echo "demo data and bearer tokens (authorization: Bearer <token>):"
if [ "$FOLIO_ENV" = development ]; then
  # The web app's sign-in page lists these users (GET /dev-users.json; development only).
  "$bin/seed-demo" --json "$dev/gateway/dev-users.json"
  chmod 644 "$dev/gateway/dev-users.json"
else
  "$bin/seed-demo"
fi
echo
cat <<TXT
Folio: $gateway   (one origin for the browser; the tokens above in authorization: Bearer)
  /                               the web app (development: sign in as one of the demo users above)
  /v1/shape                       Electric shapes: GET /v1/shape?table=proposals&offset=-1 with a token
  /v1/stream/agencies/<agency>/   Durable Streams
  /folio.api.v1.*                 the API over gRPC-Web (POST application/grpc-web+proto)
  /v1/renditions/{id}/pdf         PDF downloads
  /v1/unsubscribe                 email unsubscribe links (notifier)
not through the gateway: native gRPC for grpcurl on 127.0.0.1:50051; admin (/healthz, /readyz,
  /metrics) on 127.0.0.1:9101..9105 (api, wal-ingest, edge, pdf, notifier); deliveries API on
  127.0.0.1:8090; mail in $dev/mail
logs $dev/*.log, $dev/gateway/   stop: scripts/dev-down.sh
TXT
