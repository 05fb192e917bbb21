#!/usr/bin/env bash
# Shape API benchmark: builds wal-ingest, shape-edge and shape-bench (release), creates a
# scratch database, starts wal-ingest against it with its own JetStream names, and for each
# measurement a fresh edge: initial sync of 100k rows vs COPY, then fan-out to N live clients
# on one shape and on N/10 shapes (latency commit → client beside commit → change stream, edge
# memory per client).
#
#   services/shape-edge/bench/shapes.sh                 # N = 1000 and 10000
#   SHAPE_BENCH_CLIENTS="200" services/shape-edge/bench/shapes.sh
#   SHAPE_BENCH_ARGS="--mode shapes --kind like --shapes 10000" services/shape-edge/bench/shapes.sh
#   SHAPE_BENCH_SUITE=scale services/shape-edge/bench/shapes.sh
#       # issue 16's scale table: initial sync vs COPY; commit → client on one shape among
#       # SHAPE_BENCH_SHAPES (1 … 100,000) `bucket = k` shapes and among 1 / 10,000 LIKE shapes,
#       # the edge's share beside the change stream's; changes/s applied from a backlog at
#       # 10,000 shapes beside reading it; SHAPE_BENCH_H2_CLIENTS (1,000 … 50,000) live clients
#       # over HTTP/2, long-polling and in SSE mode, with the load client's CPU measured apart.
#   SHAPE_BENCH_BIN_DIR=/dir/with/the/three/binaries …   # no build: those binaries
#   SHAPE_BENCH_BASELINE_EDGE=/path/to/older/shape-edge SHAPE_BENCH_ARGS="…" services/shape-edge/bench/shapes.sh
#       # each measurement with that edge binary first, then with this tree's, alternating
#       # SHAPE_BENCH_REPEAT times (default 1): a change's figures beside its baseline in one run.
#
# Env: FOLIO_DATABASE_URL (server URL, default postgres://postgres@127.0.0.1:5432/postgres),
#      FOLIO_NATS_URL (default nats://127.0.0.1:4333), CARGO_TARGET_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
# shellcheck source=../../../scripts/lib-edge.sh
source "$root/scripts/lib-edge.sh"
server_url=${FOLIO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
nats_url=${FOLIO_NATS_URL:-nats://127.0.0.1:4333}
if [ -n "${SHAPE_BENCH_BIN_DIR:-}" ]; then
  # Binaries built elsewhere (e.g. a copy of an earlier build), used as they are.
  bin=$SHAPE_BENCH_BIN_DIR
else
  (cd "$root" && cargo build --quiet --release -p wal-ingest -p shape-edge --bin wal-ingest --bin shape-edge --bin shape-bench)
  bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
# 10,000 clients hold 10,000 connections on each side.
ulimit -n "$(ulimit -Hn)"

suffix="$(date +%s)_$$"
db="folio_bench_shapes_$suffix"
slot="t_bench_$suffix"
prefix="SB$suffix"
subject_root="sb$suffix"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  psql "$server_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  psql "$server_url" -Atqc "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null 2>&1 || true
  delete_jetstream_streams "${prefix}_CHANGES" "${prefix}_JOBS" "KV_sb${suffix}_shapes" "sb${suffix}_streams" "KV_sb${suffix}_meta"
}
trap cleanup EXIT
psql "$server_url" -qc "CREATE DATABASE $db"
db_url="${server_url%/*}/$db"
for f in "$root"/crates/folio-db/migrations/*.sql; do psql -q -v ON_ERROR_STOP=1 "$db_url" -f "$f"; done

log_dir=$(mktemp -d -t shape-bench.XXXXXX)
FOLIO_DATABASE_URL=$db_url FOLIO_NATS_URL=$nats_url FOLIO_WAL_SLOT=$slot FOLIO_SUBJECT_ROOT=$subject_root \
FOLIO_CHANGES_STREAM=${prefix}_CHANGES FOLIO_JOBS_STREAM=${prefix}_JOBS FOLIO_ADMIN_ADDR=127.0.0.1:$(free_port) \
RUST_LOG=warn "$bin/wal-ingest" >"$log_dir/wal-ingest.log" 2>&1 &
pids+=($!)
# Writes made before wal-ingest's slot exists would never reach the stream.
for _ in $(seq 1 100); do
  psql "$server_url" -Atc "SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot' AND active" | grep -q 1 && break
  sleep 0.1
done
edge_pid=
edge_bin=$bin/shape-edge
start_edge() {
  edge_port=$(free_port)
  # A local measurement with the built-in secret.
  FOLIO_ENV=development \
  FOLIO_DATABASE_URL=$db_url FOLIO_NATS_URL=$nats_url FOLIO_EDGE_ADDR=127.0.0.1:$edge_port \
  FOLIO_ADMIN_ADDR=127.0.0.1:$(free_port) FOLIO_CHANGES_STREAM=${prefix}_CHANGES \
  FOLIO_SUBJECT_ROOT=$subject_root FOLIO_DS_PREFIX=sb$suffix FOLIO_SHAPE_TABLES='*' \
  FOLIO_SHAPE_AUTO_PUBLISH=true FOLIO_SHAPE_INSECURE=true FOLIO_SHAPE_MAX_CONCURRENT_SNAPSHOTS=8 RUST_LOG=warn \
    "$edge_bin" >>"$log_dir/shape-edge.log" 2>&1 &
  edge_pid=$!
  pids+=($edge_pid)
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$edge_port/v1/health" >/dev/null 2>&1 && return 0
    kill -0 $edge_pid 2>/dev/null || { cat "$log_dir/shape-edge.log"; exit 1; }
    sleep 0.1
  done
}
stop_edge() { kill "$edge_pid"; wait "$edge_pid" 2>/dev/null || true; }
bench_one() {
  start_edge
  FOLIO_DATABASE_URL=$db_url FOLIO_NATS_URL=$nats_url FOLIO_SUBJECT_ROOT=$subject_root \
  FOLIO_CHANGES_STREAM=${prefix}_CHANGES "$bin/shape-bench" --edge-url "http://127.0.0.1:$edge_port" --edge-pid "$edge_pid" "$@"
  stop_edge
}
bench() {
  if [ -z "${SHAPE_BENCH_BASELINE_EDGE:-}" ]; then bench_one "$@"; return; fi
  for _ in $(seq 1 "${SHAPE_BENCH_REPEAT:-1}"); do
    for edge_bin in "$SHAPE_BENCH_BASELINE_EDGE" "$bin/shape-edge"; do
      echo "EDGE $edge_bin (load average $(cut -d' ' -f1-3 /proc/loadavg))"
      bench_one "$@"
    done
  done
  edge_bin=$bin/shape-edge
}
echo "logs in $log_dir"
if [ -n "${SHAPE_BENCH_ARGS:-}" ]; then
  # One measurement, e.g. SHAPE_BENCH_ARGS="--mode throughput --shapes 10000 --changes 100000".
  # shellcheck disable=SC2086
  bench $SHAPE_BENCH_ARGS
  exit 0
fi
if [ "${SHAPE_BENCH_SUITE:-basic}" = scale ]; then
  bench --mode initial-sync
  for n in ${SHAPE_BENCH_SHAPES:-1 1000 10000 100000}; do
    bench --mode shapes --kind eq --shapes "$n" --clients 10 --writes 50
  done
  for n in 1 10000; do
    bench --mode shapes --kind like --shapes "$n" --clients 10 --writes 50
  done
  bench --mode throughput --shapes 10000 --changes "${SHAPE_BENCH_CHANGES:-200000}"
  for n in ${SHAPE_BENCH_H2_CLIENTS:-1000 10000 50000}; do
    bench --mode fan-out --http2 --clients "$n" --shapes 1
    bench --mode fan-out --http2 --sse --clients "$n" --shapes 1
  done
  exit 0
fi
bench --mode initial-sync
for n in ${SHAPE_BENCH_CLIENTS:-1000 10000}; do
  bench --mode fan-out --clients "$n" --shapes 1
  bench --mode fan-out --clients "$n" --shapes $((n / 10))
done
