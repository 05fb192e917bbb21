#!/usr/bin/env bash
# CI entry for the Durable Streams conformance suite: builds shape-edge, starts it on a free port
# against NATS with a fresh JetStream prefix in open mode (FOLIO_DS_OPEN: the suite sends no
# tokens), runs scripts/ds-conformance.sh (all 338 tests, subscriptions included), then the
# npm-client tests against edges of their own in the default closed mode (a proposal's activity
# followed live; two agencies kept apart), and stops the edge on exit. Exits non-zero on any
# failure.
#
#   FOLIO_NATS_URL=nats://127.0.0.1:4333 scripts/ds-conformance-ci.sh
#
# Env: FOLIO_NATS_URL (default nats://127.0.0.1:4333), CARGO_TARGET_DIR, CARGO_PROFILE
#      (default dev), SHAPE_EDGE_BIN (skip the build and use this binary), plus the
#      DS_CONFORMANCE_* variables of ds-conformance.sh; DS_CONFORMANCE_EDGES=N (default 1) runs N
#      edges on one JetStream prefix behind a round-robin proxy; DS_CARGO_SCOPE (default
#      `-p shape-edge`; scripts/test.sh passes --workspace to reuse its build); FOLIO_DS_KEEP=1 keeps the run's
#      JetStream streams for inspection.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
nats_url=${FOLIO_NATS_URL:-nats://127.0.0.1:4333}
# shellcheck source=../scripts/lib-edge.sh
source "$root/scripts/lib-edge.sh"
profile=${CARGO_PROFILE:-dev}
if [ -z "${SHAPE_EDGE_BIN:-}" ]; then
  cargo build --quiet --profile "$profile" -p shape-edge
  target_dir=${CARGO_TARGET_DIR:-$root/target}
  [ "$profile" = dev ] && subdir=debug || subdir=$profile
  SHAPE_EDGE_BIN=$target_dir/$subdir/shape-edge
fi
wait_ready() { # port pid log
  for _ in $(seq 1 100); do
    if curl -fs -o /dev/null -X OPTIONS "http://127.0.0.1:$1/v1/stream/ready-check" 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then echo "process on port $1 exited during start-up:"; cat "$3"; exit 1; fi
    sleep 0.1
  done
  echo "nothing answered on port $1"; exit 1
}
prefix="dsconf_$(date +%s)_$$"
# Open mode reads no token, but the edge refuses to start on the built-in development secret.
jwt_secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
edges=${DS_CONFORMANCE_EDGES:-1}
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ -n "${FOLIO_DS_KEEP:-}" ] || delete_jetstream_streams "${prefix}_streams" "KV_${prefix}_meta" "KV_${prefix}_shapes" "OBJ_${prefix}_yjs_snapshots"
}
trap stop EXIT
ports=()
# Behind the proxy (below) every edge names the proxy in the links it sends, as edges behind a
# load balancer name the public address.
proxy_port=$(free_port)
for _ in $(seq 1 "$edges"); do
  port=$(free_port)
  while [ "$port" = "$proxy_port" ]; do port=$(free_port); done
  public_port=$([ "$edges" -gt 1 ] && echo "$proxy_port" || echo "$port")
  log=$(mktemp -t shape-edge-conformance.XXXXXX.log)
  FOLIO_NATS_URL=$nats_url \
  FOLIO_EDGE_ADDR=127.0.0.1:$port \
  FOLIO_EDGE_PUBLIC_URL=http://127.0.0.1:$public_port \
  FOLIO_DS_PREFIX=$prefix \
  FOLIO_DS_LONG_POLL_TIMEOUT=500ms \
  FOLIO_DS_WEBHOOK_ALLOW_LOOPBACK=true \
  FOLIO_WEBHOOK_ALLOWED_SUBNETS=127.0.0.0/8,::1/128 \
  FOLIO_DS_OPEN=true \
  FOLIO_JWT_SECRET=$jwt_secret \
  RUST_LOG=${RUST_LOG:-warn} \
    "$SHAPE_EDGE_BIN" >"$log" 2>&1 &
  pids+=($!)
  wait_ready "$port" "$!" "$log"
  ports+=("$port")
  echo "shape-edge on 127.0.0.1:$port (prefix $prefix, log $log)"
done
url="http://127.0.0.1:${ports[0]}"
if [ "$edges" -gt 1 ]; then
  # Several edges sharing one JetStream prefix behind a proxy that sends each request to the
  # next edge in turn: the suite then checks that any edge serves any stream and offset.
  proxy_js=$(mktemp -t ds-rr-proxy.XXXXXX.mjs)
  cat >"$proxy_js" <<'JS'
import http from "node:http";
const [listen, ...edges] = process.argv.slice(2).map(Number);
let next = 0;
http.createServer((req, res) => {
  const port = edges[next++ % edges.length];
  const upstream = http.request({ host: "127.0.0.1", port, path: req.url, method: req.method, headers: req.headers }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  upstream.on("error", (e) => { res.writeHead(502); res.end(String(e)); });
  req.pipe(upstream);
  res.on("close", () => upstream.destroy());
}).listen(listen, "127.0.0.1");
JS
  proxy_log=$(mktemp -t ds-rr-proxy.XXXXXX.log)
  node "$proxy_js" "$proxy_port" "${ports[@]}" >"$proxy_log" 2>&1 &
  pids+=($!)
  wait_ready "$proxy_port" "$!" "$proxy_log"
  url="http://127.0.0.1:$proxy_port"
  echo "round-robin proxy on $url over ${edges} edges"
fi
"$root/scripts/ds-conformance.sh" "$url"

# The unmodified npm client (installed with the suite, so cached with it): it follows a proposal's
# activity stream (activity::npm_client_follows_a_proposal_live), and two agencies' clients
# cannot reach each other's streams or subscriptions
# (security::npm_client_of_another_agency_can_neither_read_append_list_nor_delete). The filter
# `npm_client` selects both.
version=${DS_CONFORMANCE_VERSION:-0.3.6}
dir=${DS_CONFORMANCE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/folio/ds-conformance-$version}
DS_CLIENT_MODULE="$dir/node_modules/@durable-streams/client/dist/index.js" FOLIO_NATS_URL=$nats_url \
  cargo test --quiet --profile "$profile" ${DS_CARGO_SCOPE:--p shape-edge} --test it npm_client -- --ignored
