#!/usr/bin/env bash
# pdf-render's benchmark: typst vs Debian's chromium (warm via playwright-core, and one process
# per document) on the same 3-page proposal, in one run. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${FOLIO_TOOLS_DIR:-/var/cache/folio-tools}
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
mkdir -p "$tools"
if [ ! -d "$tools/node_modules/playwright-core" ]; then
  (cd "$tools" && { [ -f package.json ] || npm init -y >/dev/null; } &&
    npm install --no-audit --no-fund --silent playwright-core@1 >/dev/null)
fi
FOLIO_TOOLS_DIR=$tools cargo run -p pdf-render --release --quiet --bin pdf-bench -- "$@"
