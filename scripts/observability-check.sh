#!/usr/bin/env bash
# Checks the Prometheus alert rules in deploy/observability with promtool: the rules parse and
# are valid (promtool check rules) and the key alerts fire, and stay quiet, on the series of
# their unit tests (promtool test rules, alerts.test.yaml). That every metric the rules and the
# Grafana dashboards read is one a service exports is tests/tests/observability.rs (cargo test).
# promtool comes from Debian's prometheus package, installed when missing (apt keeps it).
set -euo pipefail
cd "$(dirname "$0")/../deploy/observability"

if ! command -v promtool >/dev/null; then
  echo "installing promtool (Debian's prometheus package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version | head -1
promtool check rules alerts.yaml
promtool test rules alerts.test.yaml
for dashboard in dashboards/*.json; do
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["uid"] and d["panels"], sys.argv[1]' "$dashboard"
  echo "  $dashboard: valid JSON with a uid and panels"
done
