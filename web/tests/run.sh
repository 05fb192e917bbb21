#!/usr/bin/env bash
# The web app's browser tests: real Chromium (Debian's, driven by playwright-core) against the
# real cluster behind the one gateway, as scripts/gateway-check.sh starts it: a fresh database
# seeded by seed-demo, proposals-api, wal-ingest, shape-edge and pdf-render from the debug
# binaries, nginx (deploy/gateway) serving web/build at / and /dev-users.json. Then
# tests/e2e.mjs runs every check, then tests/client.mjs the client's page and tests/admin.mjs
# the admin area and the invitation page (each with the notifier and an SMTP sink it starts,
# tests/notifier.mjs); any failure fails the script.
#
#   web/tests/run.sh      (PostgreSQL and NATS running: eval "$(scripts/start-services.sh)")
#
# Env: FOLIO_DATABASE_URL (server URL, default postgres://postgres@127.0.0.1:5432/postgres),
#      FOLIO_NATS_URL (default nats://127.0.0.1:4333), FOLIO_BIN_DIR (default
#      ${CARGO_TARGET_DIR:-target}/debug), CHROMIUM (default /usr/bin/chromium, installed from
#      Debian when missing), FOLIO_WEB_SCREENSHOTS=<dir> (save the screenshots there, e.g.
#      docs/screenshots), FOLIO_WEB_RESULTS=<file> (the measured figures as JSON),
#      WEB_TEST_KEEP=1 (keep database, JetStream names and logs), WEB_TEST_NO_IMAGE=1 (skip
#      tests/image.sh, the web image's check, which runs when a container engine answers).
set -euo pipefail
web=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$web/.." && pwd)
cd "$root"
start_time=$(date +%s.%N)
server_url=${FOLIO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
nats_url=${FOLIO_NATS_URL:-nats://127.0.0.1:4333}
bin=${FOLIO_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
# shellcheck source=../../scripts/lib-edge.sh
source "$root/scripts/lib-edge.sh"
fail() { echo "web-tests: FAILED: $*" >&2; exit 1; }
for b in proposals-api wal-ingest shape-edge pdf-render seed-demo notifier; do
  [ -x "$bin/$b" ] || fail "$bin/$b is missing: cargo build --workspace --bins, or set FOLIO_BIN_DIR"
done
command -v node >/dev/null || fail "node is missing (Node >= 20.19)"
if [ ! -x "$CHROMIUM" ]; then
  echo "web-tests: installing Debian's chromium" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2 </dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2 </dev/null; }
fi
command -v pdftotext >/dev/null || fail "pdftotext is missing (apt-get install poppler-utils)"

# The app: dependencies from the lock file, TypeScript generated from proto/, a static build.
(
  cd "$web"
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --cache /var/cache/folio-npm --prefer-offline --no-audit --no-fund --loglevel=error
  fi
  npm run --silent build >/tmp/folio-web-build.log 2>&1 || { cat /tmp/folio-web-build.log >&2; exit 1; }
) || fail "npm ci / npm run build failed"

run_id="$(date +%s)_$$"
db="folio_test_web_${run_id}"
db_url="${server_url%/*}/$db"
work=$(mktemp -d -t folio-web-tests.XXXXXX)
chmod 755 "$work" # nginx's workers (nobody) read dev-users.json from here
pids=()
status=1
cleanup() {
  set +e
  [ -s "$work/edge.pid" ] && pids+=("$(cat "$work/edge.pid")")
  scratch_cluster_cleanup web-tests "${WEB_TEST_KEEP:-}" "$status"
}
trap cleanup EXIT

scratch_cluster_env web
export RUST_LOG=${WEB_TEST_RUST_LOG:-warn}

# Four distinct free ports (free_port can hand out the same port twice in a row).
ports=()
while [ ${#ports[@]} -lt 4 ]; do
  p=$(free_port)
  [[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
done
api=${ports[0]} edge=${ports[1]} gw=${ports[2]} wal_admin=${ports[3]}
spawn() { # name, then its arguments
  local name=$1; shift
  setsid "$bin/$name" "$@" >>"$work/$name.log" 2>&1 </dev/null &
  pids+=($!)
}
# Loopback webhook URLs may be registered: tests/admin.mjs runs its receiver on 127.0.0.1.
FOLIO_WEBHOOK_ALLOWED_SUBNETS=127.0.0.1/32 spawn proposals-api --listen-addr "127.0.0.1:$api" --admin-addr 127.0.0.1:0
spawn wal-ingest --admin-addr "127.0.0.1:$wal_admin"
spawn pdf-render --admin-addr 127.0.0.1:0
# Proposal documents (/v1/yjs) are persisted through this run's API.
export FOLIO_YJS_PROPOSALS_API="http://127.0.0.1:$api"
# The edge is restarted by the tests: its pid lives in a file they rewrite.
setsid "$bin/shape-edge" --listen-addr "127.0.0.1:$edge" --admin-addr 127.0.0.1:0 >>"$work/shape-edge.log" 2>&1 </dev/null &
echo $! >"$work/edge.pid"
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 600); do
  up "$api" && up "$edge" && curl -fs -o /dev/null "http://127.0.0.1:$wal_admin/readyz" && break
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a service exited during start-up"; done
  sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$wal_admin/readyz" || fail "wal-ingest not ready within 60s"

# Seeded once wal-ingest's slot exists, so the demo's PDF jobs reach pdf-render. The demo
# users for the sign-in page go where the gateway serves /dev-users.json (development only).
mkdir -p "$work/gateway"
if "$bin/seed-demo" --help | grep -q -- '--json'; then
  "$bin/seed-demo" --json "$work/gateway/dev-users.json" >"$work/seed.out" 2>"$work/seed.log" ||
    { cat "$work/seed.log" >&2; fail "seed-demo failed"; }
else
  "$bin/seed-demo" >"$work/seed.out" 2>"$work/seed.log" || { cat "$work/seed.log" >&2; fail "seed-demo failed"; }
  "$web/tests/dev-users.sh" "$work/seed.out" "$db_url" >"$work/gateway/dev-users.json"
fi
chmod 644 "$work/gateway/dev-users.json"

pid=$(FOLIO_GATEWAY_LISTEN=127.0.0.1:$gw FOLIO_EDGE_UPSTREAM=127.0.0.1:$edge FOLIO_API_UPSTREAM=127.0.0.1:$api \
  FOLIO_NOTIFIER_UPSTREAM=127.0.0.1:$(free_port) FOLIO_GATEWAY_WEB_ROOT="$web/build" \
  deploy/gateway/start.sh "$work/gateway") || fail "the gateway did not start"
pids+=("$pid")
echo "web-tests: http://127.0.0.1:$gw (api :$api, edge :$edge; logs $work)"

export WEB_TEST_BASE="http://127.0.0.1:$gw" WEB_TEST_DB="$db_url" WEB_TEST_WORK="$work"
export WEB_TEST_EDGE_CMD="$bin/shape-edge --listen-addr 127.0.0.1:$edge --admin-addr 127.0.0.1:0"
export WEB_TEST_EDGE_PORT=$edge WEB_TEST_BUILD="$web/build"
node "$web/tests/e2e.mjs" || fail "a browser check failed (see above)"
# The client's side (issue 20): starts the notifier and an SMTP sink itself.
WEB_TEST_BIN="$bin" node "$web/tests/client.mjs" || fail "a client page check failed (see above)"
# The admin area and the invitation page (issue 21): starts the notifier, a sink and a receiver.
WEB_TEST_BIN="$bin" node "$web/tests/admin.mjs" || fail "an admin area check failed (see above)"
# The web image (deploy/images/web) serves this same build: checked when a container engine
# answers (scripts/test.sh starts one), skipped otherwise or with WEB_TEST_NO_IMAGE=1.
if [ -z "${WEB_TEST_NO_IMAGE:-}" ] && curl -sf --unix-socket "$(d=${DOCKER_HOST:-unix:///var/run/docker.sock}; echo "${d#unix://}")" http://d/_ping >/dev/null 2>&1; then
  "$web/tests/image.sh" test || fail "the web image check failed (see above)"
else
  echo "web-tests: the web image check skipped (no container engine answering; scripts/container-engine.sh starts one)"
fi
status=0
printf 'web-tests: passed in %.1fs\n' "$(python3 -c "import time; print(time.time() - $start_time)")"
