#!/usr/bin/env bash
# The property tests as a soak (issue 18): every proptest property of the workspace, release
# build, with many more cases than the test command's. Needs what the test command needs
# (PostgreSQL and NATS: started when FOLIO_DATABASE_URL / FOLIO_NATS_URL are not given).
#
#   scripts/proptest-soak.sh            # 1,000,000 cases per pure property
#   scripts/proptest-soak.sh 100000
#
# Pure properties (parsers, offsets, producers, the pgoutput decoder) run CASES cases each; the
# ones that go through PostgreSQL (clauses judged by Postgres, tuples through real replication)
# run CASES / 100, which still takes hours at a million. A failure is shrunk and saved under the
# crate's proptest-regressions/ (commit it: it is replayed first from then on).
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-1000000}
if [ -z "${FOLIO_DATABASE_URL:-}" ] || [ -z "${FOLIO_NATS_URL:-}" ]; then
  eval "$(scripts/start-services.sh)"
fi
export FOLIO_DATABASE_URL FOLIO_NATS_URL
run() {
  local n=$1; shift
  echo "=== $n cases: cargo test --release $*"
  FOLIO_PROPTEST_CASES=$n cargo test --release --locked "$@" -- --nocapture
}
run "$cases" -p folio-durable-streams --lib properties
run "$cases" -p wal-ingest --lib decode::properties
run "$cases" -p folio-shape-api --lib request::tests
run "$cases" -p folio-shapes --test it properties::any
run $((cases / 100)) -p folio-shapes --test it pg_properties
run $((cases / 100)) -p wal-ingest --test it replicated_properties
