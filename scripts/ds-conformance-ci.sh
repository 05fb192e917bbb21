#!/usr/bin/env bash
# CI entry for the Durable Streams conformance suite: builds shape-edge, starts it on a free port
# against NATS with a fresh JetStream prefix, runs scripts/ds-conformance.sh (all 338 tests,
# subscriptions included) and stops the edge. Exits non-zero on any failure.
#
#   FOLIO_NATS_URL=nats://127.0.0.1:4333 scripts/ds-conformance-ci.sh
#
# Env: FOLIO_NATS_URL (default nats://127.0.0.1:4333), CARGO_TARGET_DIR, CARGO_PROFILE
#      (default dev), SHAPE_EDGE_BIN (skip the build and use this binary), plus the
#      DS_CONFORMANCE_* variables of ds-conformance.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
nats_url=${FOLIO_NATS_URL:-nats://127.0.0.1:4333}
profile=${CARGO_PROFILE:-dev}
if [ -z "${SHAPE_EDGE_BIN:-}" ]; then
  cargo build --quiet --profile "$profile" -p shape-edge
  target_dir=${CARGO_TARGET_DIR:-$root/target}
  [ "$profile" = dev ] && subdir=debug || subdir=$profile
  SHAPE_EDGE_BIN=$target_dir/$subdir/shape-edge
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
prefix="dsconf_$(date +%s)_$$"
log=$(mktemp -t shape-edge-conformance.XXXXXX.log)
FOLIO_NATS_URL=$nats_url \
FOLIO_EDGE_ADDR=127.0.0.1:$port \
FOLIO_DS_PREFIX=$prefix \
FOLIO_DS_LONG_POLL_TIMEOUT=500ms \
FOLIO_DS_WEBHOOK_ALLOW_LOOPBACK=true \
FOLIO_DS_ALLOW_UNAUTHENTICATED_CLAIMS=true \
RUST_LOG=${RUST_LOG:-warn} \
  "$SHAPE_EDGE_BIN" >"$log" 2>&1 &
edge=$!
trap 'kill "$edge" 2>/dev/null || true; wait "$edge" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null -X OPTIONS "http://127.0.0.1:$port/v1/stream/ready-check"; then break; fi
  if ! kill -0 "$edge" 2>/dev/null; then echo "shape-edge exited during start-up:"; cat "$log"; exit 1; fi
  sleep 0.1
done
echo "shape-edge on 127.0.0.1:$port (prefix $prefix, log $log)"
"$root/scripts/ds-conformance.sh" "http://127.0.0.1:$port"
