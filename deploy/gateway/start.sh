#!/usr/bin/env bash
# Starts Folio's local gateway: Debian's nginx (installed when missing) as a process of its own
# with nginx.conf.template rendered into RUN_DIR — never the system service. Prints the
# master's pid once the gateway answers; stop it with `kill -TERM <pid>`.
#
#   FOLIO_GATEWAY_LISTEN=127.0.0.1:8080 FOLIO_EDGE_UPSTREAM=127.0.0.1:3000 \
#   FOLIO_API_UPSTREAM=127.0.0.1:50051 FOLIO_NOTIFIER_UPSTREAM=127.0.0.1:8090 \
#     deploy/gateway/start.sh RUN_DIR
#
# Optional: FOLIO_GATEWAY_WEB_ROOT: a directory of static files, or `auto` for the web app's
# build (web/build, `npm run build` in web/) when it is built and the placeholder otherwise;
# default deploy/gateway/placeholder. /dev-users.json is served from RUN_DIR/dev-users.json.
# FOLIO_GATEWAY_SHAPE_COLLAPSE=1: identical live shape reads of one token are collapsed into one
# edge request (off by default: nginx wakes the waiting requests only every 500 ms, which the
# web app's two tabs of one user pay on every change; see nginx.conf.template).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run_dir=${1:?usage: deploy/gateway/start.sh RUN_DIR}
mkdir -p "$run_dir/tmp"
run_dir=$(cd "$run_dir" && pwd)
: "${FOLIO_GATEWAY_LISTEN:?}" "${FOLIO_EDGE_UPSTREAM:?}" "${FOLIO_API_UPSTREAM:?}" "${FOLIO_NOTIFIER_UPSTREAM:?}"
export FOLIO_GATEWAY_RUN_DIR=$run_dir
FOLIO_GATEWAY_WEB_ROOT=${FOLIO_GATEWAY_WEB_ROOT:-$here/placeholder}
if [ "$FOLIO_GATEWAY_WEB_ROOT" = auto ]; then
  app=$(cd "$here/../.." && pwd)/web/build
  if [ -f "$app/index.html" ]; then FOLIO_GATEWAY_WEB_ROOT=$app; else FOLIO_GATEWAY_WEB_ROOT=$here/placeholder; fi
fi
[ -f "$FOLIO_GATEWAY_WEB_ROOT/index.html" ] || { echo "gateway: $FOLIO_GATEWAY_WEB_ROOT/index.html is missing" >&2; exit 1; }
export FOLIO_GATEWAY_WEB_ROOT
export FOLIO_GATEWAY_LISTEN FOLIO_EDGE_UPSTREAM FOLIO_API_UPSTREAM FOLIO_NOTIFIER_UPSTREAM
export FOLIO_GATEWAY_SHAPE_COLLAPSE=${FOLIO_GATEWAY_SHAPE_COLLAPSE:-0}
case "$FOLIO_GATEWAY_SHAPE_COLLAPSE" in
  0 | 1) ;;
  *) echo "gateway: FOLIO_GATEWAY_SHAPE_COLLAPSE must be 0 or 1, not '$FOLIO_GATEWAY_SHAPE_COLLAPSE'" >&2; exit 1 ;;
esac

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "gateway: installing nginx-light (Debian)" >&2
  { apt-get install -y -qq nginx-light || { apt-get update -qq && apt-get install -y -qq nginx-light; } ||
    apt-get install -y -qq nginx; } >&2 </dev/null
  # The package may start the distribution's service on :80; Folio's gateway is not it.
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v envsubst >/dev/null; then
  apt-get install -y -qq gettext-base >&2 </dev/null
fi

# Only Folio's variables: nginx's own ($host, $http_host, ...) stay as they are.
vars='${FOLIO_GATEWAY_LISTEN} ${FOLIO_GATEWAY_RUN_DIR} ${FOLIO_GATEWAY_WEB_ROOT} ${FOLIO_EDGE_UPSTREAM} ${FOLIO_API_UPSTREAM} ${FOLIO_NOTIFIER_UPSTREAM} ${FOLIO_GATEWAY_SHAPE_COLLAPSE}'
# As root, nginx's workers run as nobody: the web root must be readable by them, and they write
# the shape cache and proxy temp files under RUN_DIR/tmp (nginx hands them those directories).
# A RUN_DIR inside a private directory (mktemp -d makes 0700 ones) is out of their reach: every
# cached shape read would answer 500, so the gateway refuses to start instead.
if [ "$(id -u)" = 0 ] && ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -x "$run_dir/tmp" 2>/dev/null; then
  echo "gateway: nginx's workers (nobody) cannot reach $run_dir/tmp; make its parent directories searchable (chmod o+x) or choose another FOLIO_GATEWAY_RUN_DIR" >&2
  exit 1
fi
envsubst "$vars" <"$here/nginx.conf.template" >"$run_dir/nginx.conf"
args=(-p "$run_dir" -e "$run_dir/error.log" -c "$run_dir/nginx.conf")
"$nginx" "${args[@]}" -t -q >&2 || { echo "gateway: $run_dir/nginx.conf is invalid" >&2; exit 1; }

setsid "$nginx" "${args[@]}" -g 'daemon off;' >>"$run_dir/nginx.out" 2>&1 </dev/null &
pid=$!
port=${FOLIO_GATEWAY_LISTEN##*:}
host=${FOLIO_GATEWAY_LISTEN%:*}
case "$host" in "$FOLIO_GATEWAY_LISTEN" | 0.0.0.0 | "*" | "") host=127.0.0.1 ;; esac
for _ in $(seq 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "gateway: nginx exited during start-up:" >&2
    cat "$run_dir/nginx.out" "$run_dir/error.log" >&2 2>/dev/null || true
    exit 1
  fi
  if curl -fs -o /dev/null "http://$host:$port/"; then
    echo "$pid"
    exit 0
  fi
  sleep 0.1
done
echo "gateway: nothing answered on $host:$port within 10 s (log $run_dir/error.log)" >&2
kill -TERM "$pid" 2>/dev/null || true
exit 1
