#!/usr/bin/env bash
# dev-users.json from seed-demo's printed tokens (for a seed-demo built before --json):
#   web/tests/dev-users.sh SEED_OUTPUT DATABASE_URL > dev-users.json
set -euo pipefail
out=$1 db=$2
agency=$(sed -n 's/^agency \(.*\): \([0-9a-f-]*\)$/\1\t\2/p' "$out")
awk -v agency="$agency" '$1 ~ /^(viewer|editor|admin)$/ {print $1 "\t" $2 "\t" $3 "\t" agency}' "$out" |
  while IFS=$'\t' read -r role email token aname aid; do
    name=$(printf "SELECT name FROM users WHERE email = :'e';\n" | psql "$db" -qAtX -v e="$email")
    jq -n --arg name "$name" --arg email "$email" --arg role "$role" --arg token "$token" \
      --arg agency "$aname" --arg agency_id "$aid" '{name:$name,email:$email,role:$role,token:$token,agency:$agency,agency_id:$agency_id}'
  done | jq -s .
