#!/usr/bin/env bash
# Runs bench/ds-bench.mjs in one run against shape-edge (release build, JetStream file storage)
# and its peers: the Node reference server (@durable-streams/server, file-backed with dataDir),
# started here, and any already running server given in DS_PEER_URLS (e.g. the Rust server from
# `cargo install durable-streams --version 0.1.5`: DS_PEER_URLS="rust-ds=http://127.0.0.1:4437").
# Prints a Markdown table of medians over BENCH_ROUNDS interleaved rounds (see ds-bench.mjs), the
# servers' CPU per operation among them, with the ratio edge / BENCH_RATIO_TO. Given the Rust
# server's binary in DS_RUST_SERVER, run.sh starts one on DS_RUST_PORT itself (target rust-ds):
#
#   BENCH_RATIO_TO=rust-ds DS_RUST_SERVER=/var/cache/ds-rust/bin/durable-streams-server \
#     FOLIO_NATS_URL=nats://127.0.0.1:4333 services/shape-edge/bench/run.sh
#
# DS_BENCH=many runs ds-many.mjs instead (10,000 and 100,000 streams; the edge and the peers in
# DS_PEER_URLS, no Node server): give a peer's pid after its URL (name=url@pid) to have its
# memory per idle stream measured; the edge's counts the edge and the nats-server behind it.
# A peer may be a set of shards, `name=url|url|…@pid,pid,…` (each stream on one of them by a
# stable hash of its path; memory summed over the pids), and may be limited to some stream
# counts with `#10000` (ds-many.mjs's header has the form). The Rust server keeps a file
# descriptor per stream, so one process cannot hold 100,000 streams under a 20,000 fd limit;
# run.sh starts it sharded itself when given its binary:
#
#   DS_BENCH=many BENCH_RATIO_TO=rust-ds DS_RUST_SERVER=/var/cache/ds-rust/bin/durable-streams-server \
#     DS_RUST_SHARDS=7 DS_RUST_SINGLE=1 services/shape-edge/bench/run.sh
#
# starts DS_RUST_SHARDS (default 7) independent Rust servers on ports DS_RUST_PORT+1… (default
# 4471), each with its own data dir (removed afterwards), measured as the target `rust-ds`; with
# DS_RUST_SINGLE=1 also one Rust server on DS_RUST_PORT measured as `rust-ds-1` at 10,000
# streams only (to show what sharding does to the Rust figures).
#
# Env: FOLIO_NATS_URL, CARGO_TARGET_DIR, DS_BENCH_DIR (npm cache, default ~/.cache/folio/ds-bench),
#      DS_PEER_URLS (space-separated name=url[@pid]), DS_BENCH (ds or many), SHAPE_EDGE_BIN (skip
#      the build and run this binary, e.g. an earlier build to compare with), BENCH_OUT (JSON
#      results), DS_RUST_SERVER, DS_RUST_PORT, DS_RUST_SHARDS and DS_RUST_SINGLE (DS_BENCH=many), and
#      the BENCH_* variables of ds-bench.mjs and ds-many.mjs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
nats_url=${FOLIO_NATS_URL:-nats://127.0.0.1:4333}
# shellcheck source=../../../scripts/lib-edge.sh
source "$root/scripts/lib-edge.sh"
dir=${DS_BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/folio/ds-bench}
mkdir -p "$dir"
if [ ! -d "$dir/node_modules/@durable-streams/server" ]; then
  (cd "$dir" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --no-audit --no-fund --silent @durable-streams/server@0.3.7 >/dev/null)
fi
if [ -z "${SHAPE_EDGE_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet --release -p shape-edge)
fi
edge_bin=${SHAPE_EDGE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/shape-edge}
wait_port() { for _ in $(seq 1 100); do curl -fsS -o /dev/null -X OPTIONS "http://127.0.0.1:$1/v1/stream/x" && return 0; sleep 0.1; done; echo "nothing on port $1"; return 1; }

pids=()
data=$(mktemp -d -t ds-bench.XXXXXX)
prefix="dsbench_$(date +%s)_$$"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$data"
  # Everything the edge creates under its prefix (the yjs and shapes buckets too).
  delete_jetstream_streams "${prefix}_streams" "KV_${prefix}_meta" "KV_${prefix}_shapes" "OBJ_${prefix}_yjs_snapshots"
}
trap cleanup EXIT

edge_port=$(free_port)
# The benchmark clients send no tokens: open mode, as the conformance suite runs it, on a
# local-measurement footing (built-in secrets, links from Host).
FOLIO_ENV=development FOLIO_DS_OPEN=true \
FOLIO_NATS_URL=$nats_url FOLIO_EDGE_ADDR=127.0.0.1:$edge_port FOLIO_DS_PREFIX=$prefix RUST_LOG=warn \
  "$edge_bin" >"$data/edge.log" 2>&1 &
edge_pid=$!
pids+=("$edge_pid")
nats_port=${nats_url##*:}; nats_port=${nats_port%%/*}
nats_pid=$(ss -ltnpH "sport = :$nats_port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
[ -n "$nats_pid" ] || echo "run.sh: no pid for the nats-server on port $nats_port: the edge's CPU and memory leave it out" >&2
# Any HTTP answer will do (the Rust server may refuse OPTIONS on an unknown stream).
wait_http() { for _ in $(seq 1 100); do curl -sS -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1"; return 1; }
rust_port=${DS_RUST_PORT:-4471}
start_rust() { # port name
  mkdir -p "$data/$2"
  "$DS_RUST_SERVER" --host 127.0.0.1 --port "$1" --data-dir "$data/$2" --long-poll-timeout-ms 30000 >"$data/$2.log" 2>&1 &
  pids+=($!)
}
if [ "${DS_BENCH:-ds}" = many ]; then
  wait_port "$edge_port"
  targets=("shape-edge=http://127.0.0.1:$edge_port@$edge_pid${nats_pid:+,$nats_pid}")
  if [ -n "${DS_RUST_SERVER:-}" ]; then
    urls=() rpids=()
    for k in $(seq 1 "${DS_RUST_SHARDS:-7}"); do
      start_rust $((rust_port + k)) "rust-shard-$k"
      urls+=("http://127.0.0.1:$((rust_port + k))") rpids+=("${pids[-1]}")
      wait_http $((rust_port + k))
    done
    targets+=("rust-ds=$(IFS='|'; echo "${urls[*]}")@$(IFS=,; echo "${rpids[*]}")")
    if [ "${DS_RUST_SINGLE:-0}" = 1 ]; then
      start_rust "$rust_port" rust-single
      wait_http "$rust_port"
      targets+=("rust-ds-1=http://127.0.0.1:$rust_port@${pids[-1]}#10000")
    fi
  fi
  for peer in ${DS_PEER_URLS:-}; do targets+=("$peer"); done
  node "$here/ds-many.mjs" "${targets[@]}"
  exit
fi
ref_port=$(free_port)
DS_SERVER_MODULE="$dir/node_modules/@durable-streams/server/dist/index.js" PORT=$ref_port DATA_DIR="$data/ref" \
  node "$here/reference-server.mjs" >"$data/ref.log" 2>&1 &
pids+=($!)
ref_pid=$!
# With pids the bench counts each server's CPU per operation (the edge's with its nats-server).
targets=("shape-edge=http://127.0.0.1:$edge_port@$edge_pid${nats_pid:+,$nats_pid}" "node-ref=http://127.0.0.1:$ref_port@$ref_pid")
wait_port "$edge_port"; wait_port "$ref_port"
if [ -n "${DS_RUST_SERVER:-}" ]; then
  start_rust "$rust_port" rust-ds
  targets+=("rust-ds=http://127.0.0.1:$rust_port@${pids[-1]}")
  wait_http "$rust_port"
fi
for peer in ${DS_PEER_URLS:-}; do targets+=("$peer"); done
node "$here/ds-bench.mjs" "${targets[@]}"
