#!/usr/bin/env bash
# The Yjs protocol's conformance suite (durable-streams/durable-streams,
# packages/y-durable-streams/test/yjs-conformance.test.ts, 61 tests) against shape-edge's
# /v1/yjs route: builds (or takes) the edge, starts it on a free port in open mode (the suite
# sends no tokens; as scripts/ds-conformance-ci.sh runs the Durable Streams suite) with a fresh
# JetStream prefix and a compaction threshold of 1500 bytes (the suite's own server uses 1500;
# its compaction tests write about 2 KB), runs the suite in external mode
# (YJS_CONFORMANCE_URL) and stops the edge on exit.
#
#   FOLIO_NATS_URL=nats://127.0.0.1:4333 services/shape-edge/tests/yjs-conformance.sh
#
# Expected: 57 passed, 1 skipped ("Server Restart", local mode only), 3 failed. The three fail
# against every external server, the reference one included: two read the awareness streams
# through the suite's own in-process DS server (`dsServer!.url`), one spies on the reference
# compactor object. The script exits 0 exactly when the counts are these and the failures are
# those three; restart, single-writer compaction and the rest are covered by the Rust tests
# (crates/folio-yjs/tests). The two that read the streams behind the route then run once more
# from a copy of the file pointed at this edge's own /v1/stream (the edge keeps the reference's
# stream layout for `{service}` = test), and must pass.
#
# The suite's source is never part of this repository: it is exported at a pinned commit from
# a local git mirror (YJS_CONFORMANCE_SRC, a git directory) or cloned from GitHub, into a cache
# directory with its npm packages (pnpm from npm), so a rerun installs nothing.
#
# Env: FOLIO_NATS_URL, SHAPE_EDGE_BIN (skip the build), CARGO_TARGET_DIR, YJS_CONFORMANCE_DIR
#      (cache, default /var/cache/folio-yjs-conformance), YJS_CONFORMANCE_SRC, YJS_CONFORMANCE_FILTER
#      (vitest -t pattern).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
nats_url=${FOLIO_NATS_URL:-nats://127.0.0.1:4333}
commit=82f9963ae0b489566352393be9b4796c788c99c2
dir=${YJS_CONFORMANCE_DIR:-/var/cache/folio-yjs-conformance}
# shellcheck source=../../../scripts/lib-edge.sh
source "$root/scripts/lib-edge.sh"

ws=$dir/ws-$commit
if [ ! -f "$ws/.installed" ]; then
  mkdir -p "$dir/tools" "$ws"
  [ -x "$dir/tools/node_modules/.bin/pnpm" ] ||
    npm install --prefix "$dir/tools" --no-audit --no-fund --silent pnpm@10.25.0
  src=${YJS_CONFORMANCE_SRC:-}
  if [ -z "$src" ] && [ -d /work/.mirror/durable-streams+durable-streams/repo ]; then
    src=/work/.mirror/durable-streams+durable-streams/repo
  fi
  if [ -z "$src" ]; then
    # Only the pinned commit, fetched by its id.
    src=$dir/repo.git
    [ -d "$src" ] || git init -q --bare "$src"
    git --git-dir="$src" cat-file -e "$commit^{commit}" 2>/dev/null ||
      git --git-dir="$src" fetch -q --depth 1 https://github.com/durable-streams/durable-streams "$commit"
  fi
  # The five packages the test file imports (the provider, the reference server it also
  # imports, the DS client and test server) and the root's vitest projects.
  git --git-dir="$src" archive "$commit" package.json pnpm-lock.yaml vitest.config.ts tsconfig.json \
    packages/client packages/server packages/state packages/server-conformance-tests \
    packages/y-durable-streams | tar -x -C "$ws"
  printf 'packages:\n  - packages/*\n' >"$ws/pnpm-workspace.yaml"
  (cd "$ws" && "$dir/tools/node_modules/.bin/pnpm" install --silent --no-frozen-lockfile --ignore-scripts \
    --store-dir "$dir/store")
  touch "$ws/.installed"
fi

if [ -z "${SHAPE_EDGE_BIN:-}" ]; then
  cargo build --quiet -p shape-edge
  SHAPE_EDGE_BIN=${CARGO_TARGET_DIR:-$root/target}/debug/shape-edge
fi
prefix="yjsconf_$(date +%s)_$$"
port=$(free_port)
log=$(mktemp -t shape-edge-yjs.XXXXXX.log)
# Open mode reads no token, but the edge refuses to start on the built-in development secret.
jwt_secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
FOLIO_NATS_URL=$nats_url \
FOLIO_EDGE_ADDR=127.0.0.1:$port \
FOLIO_ADMIN_ADDR=127.0.0.1:0 \
FOLIO_EDGE_PUBLIC_URL=http://127.0.0.1:$port \
FOLIO_DS_PREFIX=$prefix \
FOLIO_DS_OPEN=true \
FOLIO_JWT_SECRET=$jwt_secret \
FOLIO_YJS_COMPACTION_THRESHOLD=1500 \
RUST_LOG=${RUST_LOG:-warn} \
  "$SHAPE_EDGE_BIN" >"$log" 2>&1 &
pid=$!
stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  delete_jetstream_streams "${prefix}_streams" "KV_${prefix}_meta" "OBJ_${prefix}_yjs_snapshots"
}
trap stop EXIT
for _ in $(seq 1 100); do
  curl -fs -o /dev/null -X OPTIONS "http://127.0.0.1:$port/v1/stream/ready-check" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "shape-edge exited during start-up:"; cat "$log"; exit 1; }
  sleep 0.1
done
echo "shape-edge on 127.0.0.1:$port (prefix $prefix, log $log)"

args=(vitest run --project y-durable-streams --reporter=default)
[ -z "${YJS_CONFORMANCE_FILTER:-}" ] || args+=(-t "$YJS_CONFORMANCE_FILTER")
rc=0
(cd "$ws" && YJS_CONFORMANCE_URL="http://127.0.0.1:$port/v1/yjs/test" "$dir/tools/node_modules/.bin/pnpm" "${args[@]}") \
  >"$dir/run.log" 2>&1 || rc=$?
plain=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/run.log")
grep -E "^ +(×|✗)|FAIL |Tests +[0-9]" <<<"$plain" || true
echo "full log: $dir/run.log"
[ -z "${YJS_CONFORMANCE_FILTER:-}" ] || exit $rc
summary=$(grep -E "^ +Tests +" <<<"$plain" | tail -1)
failed=$(grep -oE "[0-9]+ failed" <<<"$summary" | grep -oE "[0-9]+" || echo 0)
passed=$(grep -oE "[0-9]+ passed" <<<"$summary" | grep -oE "[0-9]+" || echo 0)
# The three tests that need the suite's in-process servers (see above).
harness_bound=$(grep -cE "FAIL .*(recover from TTL expiry|named-streams-separate|concurrent-writes)" <<<"$plain" || true)
if ! { [ "$passed" -ge 57 ] && [ "$failed" -le 3 ] && [ "$failed" -eq "$harness_bound" ]; }; then
  echo "Yjs conformance: $passed passed, $failed failed (expected 57 passed, 3 harness-bound failures)"
  exit 1
fi
echo "Yjs conformance: $passed passed, $failed failed (harness-bound only)"

# The DS-peeking pair, with the suite's in-process DS server replaced by this edge.
peek=$ws/packages/y-durable-streams/test/edge-streams.test.ts
trap 'rm -f "$peek"; stop' EXIT
sed 's/\${dsServer!\.url}/${process.env.YJS_CONFORMANCE_DS_URL}/g' \
  "$ws/packages/y-durable-streams/test/yjs-conformance.test.ts" >"$peek"
rc=0
(cd "$ws" && YJS_CONFORMANCE_URL="http://127.0.0.1:$port/v1/yjs/test" YJS_CONFORMANCE_DS_URL="http://127.0.0.1:$port" \
  "$dir/tools/node_modules/.bin/pnpm" vitest run --project y-durable-streams edge-streams \
  -t "recover from TTL expiry|keep named awareness streams separate") >"$dir/run-peek.log" 2>&1 || rc=$?
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/run-peek.log" | grep -E "^ +Tests +" | tail -1)
if [ "$rc" -ne 0 ] || ! grep -qE "^ +Tests +2 passed" <<<"$summary"; then
  echo "the two cases reading the edge's streams: $summary (full log: $dir/run-peek.log)"
  exit 1
fi
echo "and the two cases reading the edge's own streams: 2 passed"
