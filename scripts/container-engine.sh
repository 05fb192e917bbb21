# Source me: makes sure a container engine answers on /var/run/docker.sock, starting Debian's
# docker.io when it does not (installed when missing), and exports DOCKER_HOST. Nothing here is
# pre-started on a fresh machine; the engine keeps images between runs, so builds are cached.
#   source scripts/container-engine.sh
export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
_folio_sock=${DOCKER_HOST#unix://}
_folio_engine_up() { curl -sf --unix-socket "$_folio_sock" http://d/_ping >/dev/null 2>&1; }
if ! _folio_engine_up; then
  if ! command -v dockerd >/dev/null; then
    echo "container-engine: installing docker.io" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  echo "container-engine: starting dockerd (log /var/log/folio-dockerd.log)" >&2
  setsid dockerd --host="$DOCKER_HOST" >/var/log/folio-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 120); do _folio_engine_up && break; sleep 0.25; done
  _folio_engine_up || { echo "container-engine: dockerd did not come up, see /var/log/folio-dockerd.log" >&2; return 1 2>/dev/null || exit 1; }
fi
unset _folio_sock
