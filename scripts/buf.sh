#!/usr/bin/env bash
# Runs buf (from the @bufbuild/buf npm package, cached outside the repository) in the repo root.
#   scripts/buf.sh lint
#   scripts/buf.sh breaking --against '.git#branch=main'
set -euo pipefail
tools=${FOLIO_TOOLS_DIR:-/var/cache/folio-tools}
if [ ! -x "$tools/node_modules/.bin/buf" ]; then
  mkdir -p "$tools"
  (cd "$tools" && { [ -f package.json ] || npm init -y >/dev/null; } &&
    npm install --no-audit --no-fund --silent @bufbuild/buf@1.75.0 >/dev/null 2>&1)
fi
cd "$(dirname "$0")/.."
exec "$tools/node_modules/.bin/buf" "$@"
