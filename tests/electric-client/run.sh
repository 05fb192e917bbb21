#!/usr/bin/env bash
# Runs the unmodified npm @electric-sql/client against Folio's shape-edge (+ wal-ingest + Postgres):
# a fresh database with Folio's migrations, real processes, node's built-in test runner.
#
#   tests/electric-client/run.sh
#
# Env: FOLIO_DATABASE_URL (server URL; wal_level=logical, trust; default
#      postgres://postgres@127.0.0.1:5432/postgres), FOLIO_NATS_URL (JetStream; default
#      nats://127.0.0.1:4333), WAL_INGEST_BIN / SHAPE_EDGE_BIN (default
#      ${CARGO_TARGET_DIR:-<repo>/target}/debug/{wal-ingest,shape-edge}); optional:
#      ELECTRIC_TEST_FILES (test files to run instead of all), ELECTRIC_TEST_KEEP=1 (keep the
#      database, slot, streams and logs), ELECTRIC_TEST_RUST_LOG (RUST_LOG of the processes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

FOLIO_DATABASE_URL=${FOLIO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
FOLIO_NATS_URL=${FOLIO_NATS_URL:-nats://127.0.0.1:4333}
target=${CARGO_TARGET_DIR:-$root/target}
WAL_INGEST_BIN=${WAL_INGEST_BIN:-$target/debug/wal-ingest}
SHAPE_EDGE_BIN=${SHAPE_EDGE_BIN:-$target/debug/shape-edge}
for bin in "$WAL_INGEST_BIN" "$SHAPE_EDGE_BIN"; do
  if [ ! -x "$bin" ]; then
    echo "electric-client: $bin is missing; build it (cargo build -p wal-ingest -p shape-edge) or set WAL_INGEST_BIN/SHAPE_EDGE_BIN" >&2
    exit 1
  fi
done

# Dependencies: npm ci when node_modules is missing or was installed from another lockfile.
stamp=node_modules/.folio-lock.sha256
want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "electric-client: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" >"$stamp"
fi

run_id="$(date +%s)_$$"
db="folio_test_electric_${run_id}"
slot="t_electric_${run_id}"
db_url=$(node -e 'const u = new URL(process.argv[1]); u.pathname = "/" + process.argv[2]; console.log(u.toString())' \
  "$FOLIO_DATABASE_URL" "$db")
log_dir=$(mktemp -d -t folio-electric-client.XXXXXX)
status=1

cleanup() {
  set +e
  # Processes the harness started and could not stop (a crashed test process): by pid, and only
  # if the pid still runs the binary it was recorded with.
  for f in "$log_dir"/pid.*; do
    [ -e "$f" ] || continue
    pid=${f##*/pid.}
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(head -1 "$f")")" ]; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  if [ -n "${ELECTRIC_TEST_KEEP:-}" ]; then
    echo "electric-client: kept database $db, slot $slot, JetStream names *${run_id}*, logs $log_dir" >&2
    return
  fi
  psql "$FOLIO_DATABASE_URL" -Atq -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<SQL
SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '$slot' AND active;
SQL
  for _ in $(seq 20); do
    out=$(psql "$FOLIO_DATABASE_URL" -Atqc \
      "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot'" 2>&1) && break
    sleep 0.25
  done
  psql "$FOLIO_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 ||
    echo "electric-client: could not drop database $db" >&2
  timeout 10 node "$here/lib/nats-cleanup.mjs" "$FOLIO_NATS_URL" "$run_id" 2>/dev/null
  if [ "$status" = 0 ]; then rm -rf "$log_dir"; else echo "electric-client: process logs kept in $log_dir" >&2; fi
}
trap cleanup EXIT

psql "$FOLIO_DATABASE_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
for f in $(ls "$root"/crates/folio-db/migrations/*.sql | sort); do
  psql "$db_url" -qX -v ON_ERROR_STOP=1 -f "$f" >/dev/null
done
echo "electric-client: database $db, run id $run_id, logs $log_dir" >&2

export ELECTRIC_TEST_DATABASE_URL=$db_url ELECTRIC_TEST_RUN_ID=$run_id ELECTRIC_TEST_LOG_DIR=$log_dir
export FOLIO_NATS_URL WAL_INGEST_BIN SHAPE_EDGE_BIN
# One file at a time: the files share the run's replication slot (each file starts its own
# wal-ingest, which resumes the slot) and JetStream names.
# shellcheck disable=SC2086
set +e
node --test --test-concurrency=1 --test-reporter=spec ${ELECTRIC_TEST_FILES:-test/*.test.mjs}
status=$?
set -e
exit "$status"
