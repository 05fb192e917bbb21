#!/usr/bin/env bash
# Runs the official Durable Streams server conformance suite (npm, pinned) against a running
# server, with the subscription APIs enabled.
#
#   scripts/ds-conformance.sh http://127.0.0.1:PORT
#
# The package's own CLI (`--run URL`) finds no tests when installed from npm (vitest excludes
# node_modules), so this writes a local vitest file that calls runConformanceTests().
# The npm package lives in a cache directory outside the repository.
# Env: DS_CONFORMANCE_DIR (cache dir), DS_CONFORMANCE_VERSION (default 0.3.6),
#      DS_CONFORMANCE_FILTER (optional vitest -t pattern).
# Prints the failing tests and vitest's summary; the exit code is vitest's.
set -euo pipefail
url=${1:?usage: ds-conformance.sh BASE_URL}
version=${DS_CONFORMANCE_VERSION:-0.3.6}
dir=${DS_CONFORMANCE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/folio/ds-conformance-$version}
mkdir -p "$dir"
cd "$dir"
if [ ! -d node_modules/@durable-streams/server-conformance-tests ]; then
  [ -f package.json ] || npm init -y >/dev/null
  npm install --no-audit --no-fund --silent "@durable-streams/server-conformance-tests@$version" >/dev/null
fi
cat > conformance.test.mjs <<'JS'
import { runConformanceTests } from "@durable-streams/server-conformance-tests";
runConformanceTests({ baseUrl: process.env.CONFORMANCE_TEST_URL, subscriptions: true });
JS
args=(run conformance.test.mjs --no-coverage --reporter=default)
if [ -n "${DS_CONFORMANCE_FILTER:-}" ]; then args+=(-t "$DS_CONFORMANCE_FILTER"); fi
rc=0
CONFORMANCE_TEST_URL="$url" npx vitest "${args[@]}" >run.log 2>&1 || rc=$?
sed 's/\x1b\[[0-9;]*m//g' run.log | grep -E "×|FAIL|Tests |Test Files|Duration" || true
echo "full log: $dir/run.log"
exit $rc
