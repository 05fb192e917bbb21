#!/usr/bin/env bash
# Proposal documents with several unmodified @durable-streams/y-durable-streams providers
# (issue 17): a fresh database with Folio's migrations, proposals-api, wal-ingest and
# pdf-render from the debug binaries; the tests start two shape-edges themselves (one is killed
# mid-session) behind a proxy, and run with node's built-in test runner.
#
#   tests/yjs-providers/run.sh          (PostgreSQL and NATS running: eval "$(scripts/start-services.sh)")
#   tests/yjs-providers/run.sh --bench  the figures of docs/benchmarks.md instead (bench.mjs;
#                                       YJS_BENCH_RESULTS=<file> writes them as JSON)
#
# Env: FOLIO_DATABASE_URL (server URL, default postgres://postgres@127.0.0.1:5432/postgres),
#      FOLIO_NATS_URL (default nats://127.0.0.1:4333), FOLIO_BIN_DIR (default
#      ${CARGO_TARGET_DIR:-target}/debug); YJS_TEST_KEEP=1 keeps the database, JetStream names
#      and logs; YJS_TEST_FILES runs other test files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
server_url=${FOLIO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
nats_url=${FOLIO_NATS_URL:-nats://127.0.0.1:4333}
bin=${FOLIO_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}
# shellcheck source=../../scripts/lib-edge.sh
source "$root/scripts/lib-edge.sh"
fail() { echo "yjs-providers: FAILED: $*" >&2; exit 1; }
for b in proposals-api wal-ingest shape-edge pdf-render; do
  [ -x "$bin/$b" ] || fail "$bin/$b is missing: cargo build --workspace --bins, or set FOLIO_BIN_DIR"
done
command -v pdftotext >/dev/null || fail "pdftotext is missing (apt-get install poppler-utils)"

# Dependencies: npm ci when node_modules is missing or was installed from another lockfile.
stamp=$here/node_modules/.folio-lock.sha256
want=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  (cd "$here" && npm ci --cache /var/cache/folio-npm --prefer-offline --no-audit --no-fund --loglevel=error >&2)
  echo "$want" >"$stamp"
fi

run_id="$(date +%s)_$$"
db="folio_test_yjs_${run_id}"
db_url="${server_url%/*}/$db"
work=$(mktemp -d -t folio-yjs-providers.XXXXXX)
pids=()
status=1
cleanup() {
  set +e
  # Edges the tests started and could not stop (a crashed test process): by pid, and only if
  # the pid still runs the edge's binary.
  for f in "$work"/pid.*; do
    [ -e "$f" ] || continue
    p=${f##*/pid.}
    [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$(cat "$f")")" ] && pids+=("$p")
  done
  scratch_cluster_cleanup yjs-providers "${YJS_TEST_KEEP:-}" "$status"
}
trap cleanup EXIT

scratch_cluster_env yjs
for f in $(ls "$root"/crates/folio-db/migrations/*.sql | sort); do
  psql "$db_url" -qX -v ON_ERROR_STOP=1 -f "$f" >/dev/null
done
export RUST_LOG=${YJS_TEST_RUST_LOG:-warn}
api=$(free_port)
wal_admin=$(free_port)
while [ "$wal_admin" = "$api" ]; do wal_admin=$(free_port); done
spawn() { # name, then its arguments
  local name=$1; shift
  setsid "$bin/$name" "$@" >>"$work/$name.log" 2>&1 </dev/null &
  pids+=($!)
}
spawn proposals-api --listen-addr "127.0.0.1:$api" --admin-addr 127.0.0.1:0 --migrate false
spawn wal-ingest --admin-addr "127.0.0.1:$wal_admin"
spawn pdf-render --admin-addr 127.0.0.1:0
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 600); do
  up "$api" && curl -fs -o /dev/null "http://127.0.0.1:$wal_admin/readyz" && break
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a service exited during start-up"; done
  sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$wal_admin/readyz" || fail "wal-ingest not ready within 60s"

# The edges the tests start: this cluster's names (scratch_cluster_env), the API to persist
# through, a short debounce, and a compaction threshold the tests' edits pass.
export SHAPE_EDGE_BIN="$bin/shape-edge" YJS_TEST_API_PORT=$api YJS_TEST_DB=$db_url YJS_TEST_WORK=$work
export FOLIO_YJS_PROPOSALS_API="http://127.0.0.1:$api" FOLIO_YJS_PERSIST_DEBOUNCE=300ms
export FOLIO_YJS_COMPACTION_THRESHOLD=4096
echo "yjs-providers: api :$api, database $db, logs $work" >&2
set +e
if [ "${1:-}" = --bench ]; then
  (cd "$here" && node bench.mjs)
else
  # shellcheck disable=SC2086
  (cd "$here" && node --test --test-concurrency=1 --test-reporter=spec ${YJS_TEST_FILES:-test/*.test.mjs})
fi
status=$?
set -e
exit "$status"
