#!/usr/bin/env bash
# Runs every Folio test: proto lint, the workspace's unit and integration tests against a real
# PostgreSQL and NATS, and the Durable Streams conformance suite against the edge.
# Starts PostgreSQL and NATS when FOLIO_DATABASE_URL / FOLIO_NATS_URL are not given.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
step() { printf '\n=== %s\n' "$*"; }

if [ -z "${FOLIO_DATABASE_URL:-}" ] || [ -z "${FOLIO_NATS_URL:-}" ]; then
  step "starting PostgreSQL and NATS"
  eval "$(scripts/start-services.sh)"
fi
export FOLIO_DATABASE_URL FOLIO_NATS_URL
# How long a test waits for something to happen before it fails (folio_testkit::eventually).
# Passing tests never wait it out; a debug-build render or catch-up on a busy 2-core machine can
# take longer than the 15 s a developer's run uses.
export FOLIO_TEST_PATIENCE_MS=${FOLIO_TEST_PATIENCE_MS:-60000}
# wal-ingest's tests restart a private nats-server of their own from this binary.
export FOLIO_NATS_SERVER_BIN=${FOLIO_NATS_SERVER_BIN:-/opt/folio-nats/bin/nats-server}
echo "FOLIO_DATABASE_URL=$FOLIO_DATABASE_URL FOLIO_NATS_URL=$FOLIO_NATS_URL"

if ! command -v pdftotext >/dev/null || ! command -v pdfinfo >/dev/null; then
  step "installing poppler-utils (pdf-render tests read PDFs back with pdftotext and pdfinfo)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils >/dev/null
fi

step "removing databases and slots left by earlier runs"
psql "$FOLIO_DATABASE_URL" -Atq -v ON_ERROR_STOP=1 <<'SQL'
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
 WHERE NOT active AND (database LIKE 'folio_test_%' OR slot_name LIKE 't\_%');
SQL
for db in $(psql "$FOLIO_DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'folio_test_%'"); do
  psql "$FOLIO_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
done

step "notifier test tools (aiosmtpd, standardwebhooks)"
scripts/notifier-test-deps.sh >/dev/null

step "container engine (the container test runs the service images under it)"
# Started here when not running; images it keeps are rebuilt only when their inputs change.
source scripts/container-engine.sh

step "buf lint"
scripts/buf.sh lint

step "Kubernetes manifests (offline validation)"
scripts/validate-k8s.sh

step "Prometheus alert rules and Grafana dashboards (promtool check rules, promtool test rules)"
# Which metrics they read is checked against what the services export by tests/tests/observability.rs.
scripts/observability-check.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (workspace, every target, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace, built once; the container test packages the binaries it built)"
cargo test --workspace --locked --no-fail-fast

step "faults at live shape clients: nats-server, wal-ingest, an edge and the walsender killed under load (recovery-bench, one round each)"
# Two edges, two wal-ingest, long-poll and SSE clients failing over; fails unless every client
# ends with exactly the committed rows, live ones in commit order (docs/reliability.md).
"${CARGO_TARGET_DIR:-$PWD/target}/debug/recovery-bench" --rounds 1 --baseline 3s

step "ElectricSQL's npm client (@electric-sql/client) against shape-edge, wal-ingest and PostgreSQL"
# The binaries cargo test just built.
SHAPE_EDGE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/shape-edge" \
WAL_INGEST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/wal-ingest" \
  tests/electric-client/run.sh

step "the local gateway (nginx, deploy/gateway): shapes, live long-poll, Durable Streams + SSE, gRPC-Web and / through one origin"
FOLIO_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug" scripts/gateway-check.sh

step "the web app in Chromium through the gateway (web/tests/run.sh: live edits, rollback, PDF, activity, offline, edge restart, axe)"
FOLIO_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug" web/tests/run.sh

if [ -x scripts/ds-conformance-ci.sh ]; then
  step "Durable Streams conformance suite against shape-edge"
  # The binary and test targets cargo test just built: the workspace is built once per run.
  SHAPE_EDGE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/shape-edge" DS_CARGO_SCOPE=--workspace \
    scripts/ds-conformance-ci.sh
fi

step "proposal documents: three y-durable-streams providers, an edge killed, the API, pdf-render (tests/yjs-providers)"
# Converge, offline merge, failover to another edge, compaction, persisted through the API,
# viewer / other agency / sent proposal refused, an edited sentence in the PDF; npm cached.
FOLIO_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug" tests/yjs-providers/run.sh

step "the Yjs protocol's conformance suite against shape-edge (/v1/yjs, crates/folio-yjs)"
# 57 passed, 3 harness-bound failures, 1 skipped: the script checks exactly that (see its header).
SHAPE_EDGE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/shape-edge" services/shape-edge/tests/yjs-conformance.sh
echo
echo "all tests passed"
