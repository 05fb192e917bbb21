#!/usr/bin/env bash
# Installs the example's npm packages (npm ci, from the npm cache once it was filled: offline
# after the first run) when node_modules is missing or stale, generates the TypeScript of
# proto/folio/events/v1 with buf + protoc-gen-es into src/gen and compiles to dist/.
#   examples/events-consumer-ts/prepare.sh && node examples/events-consumer-ts/dist/consumer.js --help
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "events-consumer-ts: node and npm are required (Debian: apt-get install nodejs npm)" >&2; exit 1; }
cache=${FOLIO_NPM_CACHE:-/var/cache/folio-npm}
stamp=node_modules/.folio-lock.sha256
want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --prefer-offline --cache "$cache" --no-audit --no-fund --loglevel=error >&2
  echo "$want" >"$stamp"
fi
npm run --silent build >&2
