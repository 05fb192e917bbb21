#!/usr/bin/env bash
# The web image serves the app: builds localhost/folio/web:<tag> (scripts/build-images.sh
# --web-only, from web/build as it is), runs it as k8s/base/web.yaml does (uid 65532, read-only
# root with /tmp writable, no capabilities, no privilege escalation) and fetches with curl:
#   /healthz 200; /p/<token> and /invite/<token> are index.html with no-store and no-referrer,
#   their tokens not logged;
#   / is web/build/index.html byte for byte (text/html, no-cache); a deep link
#   (/proposals/<uuid>) gets the same index.html (SPA fallback); a hashed asset comes as
#   JavaScript, cached immutable, gzip-encoded from its .gz when asked; a missing asset is a 404,
#   not the app; /dev-users.json and the API paths are 404s; the image has no shell; the server
#   runs as 65532 and wrote nothing outside /tmp.
#
#   web/tests/image.sh [TAG]      (TAG default: test; the container engine: scripts/container-engine.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
tag=${1:-test}
image=localhost/folio/web:$tag
fail() { echo "web-image: FAILED: $*" >&2; exit 1; }
# shellcheck source=../../scripts/container-engine.sh
source scripts/container-engine.sh
[ -f web/build/index.html ] || fail "web/build is missing: (cd web && npm run build)"
scripts/build-images.sh --web-only --tag "$tag"
docker image inspect "$image" >/dev/null 2>&1 || fail "$image was not built"

name=folio-web-check-$$
work=$(mktemp -d -t folio-web-image.XXXXXX)
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
docker run -d --name "$name" --read-only --tmpfs /tmp:rw,size=64m,mode=1777 --user 65532:65532 \
  --cap-drop ALL --security-opt no-new-privileges -p 127.0.0.1::8080 "$image" >/dev/null
port=$(docker port "$name" 8080/tcp | head -1 | sed 's/.*://')
base=http://127.0.0.1:$port
for _ in $(seq 100); do curl -fs -o /dev/null "$base/healthz" && break; sleep 0.1; done
curl -fs -o /dev/null "$base/healthz" || { docker logs "$name" >&2; fail "/healthz did not answer"; }

# get PATH [CURL ARGS...]: status, content type, cache control, content encoding; body in $work/body
get() {
  local path=$1; shift
  curl -s -o "$work/body" -D "$work/headers" "$@" "$base$path" >/dev/null
  awk 'NR == 1 { printf "%s", $2 } tolower($1) ~ /^(content-type|cache-control|content-encoding):$/ { sub(/\r$/, ""); $1 = ""; printf " |%s", $0 }' "$work/headers"
}
expect() { # what, got, pattern
  [[ $2 =~ $3 ]] || fail "$1: got '$2', expected /$3/"
  echo "web-image: ok  $1: $2"
}
expect "/" "$(get /)" '^200 .*text/html.*no-cache'
cmp -s "$work/body" web/build/index.html || fail "/ is not web/build/index.html"
deep=/proposals/0b7e3c1a-6d2f-4c55-9a0e-3f1d2c4b5a69
expect "deep link $deep (SPA fallback)" "$(get "$deep")" '^200 .*text/html'
cmp -s "$work/body" web/build/index.html || fail "the deep link did not get index.html"
expect "deep link with a query" "$(get '/proposals/x?tab=items')" '^200 .*text/html'
asset=$(cd web/build && find _app/immutable -name '*.js' | head -1)
[ -n "$asset" ] || fail "no JavaScript asset in web/build"
expect "/$asset" "$(get "/$asset")" '^200 .*application/javascript.*immutable'
cmp -s "$work/body" "web/build/$asset" || fail "/$asset differs from web/build/$asset"
expect "/$asset, Accept-Encoding: gzip" "$(get "/$asset" -H 'Accept-Encoding: gzip')" '^200 .*[|] gzip'
gunzip -c "$work/body" | cmp -s - "web/build/$asset" || fail "the gzip answer does not unpack to the asset"
missing=$(get /_app/immutable/chunks/missing.js)
expect "a missing asset" "$missing" '^404'
[[ $missing != *immutable* ]] || fail "a missing asset's 404 is cached as immutable"
expect "a deep link's HTML" "$(get /proposals/new)" '^200 .*no-cache'
token=client-link-token-must-not-be-logged-0123456789
expect "the client's page /p/<token> (never cached)" "$(get "/p/$token")" '^200 .*text/html.*no-store'
cmp -s "$work/body" web/build/index.html || fail "the client's page did not get index.html"
grep -qi '^referrer-policy: no-referrer' "$work/headers" || fail "the client's page may leak its token in Referer headers"
echo "web-image: ok  the client's page sends Referrer-Policy: no-referrer"
if docker logs "$name" 2>&1 | grep -q "$token"; then fail "the access log holds a client link's token"; fi
echo "web-image: ok  the client link's token is not in the access log"
invite=invitation-token-must-not-be-logged-0123456789
expect "an invitation /invite/<token> (never cached)" "$(get "/invite/$invite")" '^200 .*text/html.*no-store'
cmp -s "$work/body" web/build/index.html || fail "the invitation page did not get index.html"
grep -qi '^referrer-policy: no-referrer' "$work/headers" || fail "the invitation page may leak its token in Referer headers"
echo "web-image: ok  the invitation page sends Referrer-Policy: no-referrer"
if docker logs "$name" 2>&1 | grep -q "$invite"; then fail "the access log holds an invitation's token"; fi
docker logs "$name" 2>&1 | grep -q 'GET /proposals/new' || fail "the access log is not written, so it proves nothing about tokens"
echo "web-image: ok  the invitation's token is not in the access log (which logs other paths)"
expect "/dev-users.json" "$(get /dev-users.json)" '^404'
expect "/v1/shape (the Gateway's, not this server's)" "$(get '/v1/shape?table=proposals')" '^404'

# The posture: no shell in the image, the server as 65532, nothing written outside /tmp.
if docker run --rm --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then fail "the image has a shell"; fi
echo "web-image: ok  no /bin/sh in the image"
users=$(docker top "$name" -eo pid,uid,comm | awk 'NR > 1 { print $2 }' | sort -u | tr '\n' ' ')
[ "$users" = "65532 " ] || fail "processes run as uid(s) $users"
echo "web-image: ok  nginx runs as uid 65532 (master and worker)"
changed=$(docker diff "$name" | grep -v -E '^[AC] /tmp(/|$)' || true)
[ -z "$changed" ] || fail "files changed outside /tmp: $changed"
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "web-image: passed ($image, $((size / 1024)) KiB)"
