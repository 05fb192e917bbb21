# Shell helpers shared by the edge's scripts (sourced, not run). Expects $nats_url.

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# Deletes JetStream streams by name over the NATS text protocol (no nats CLI on these machines).
# Best effort: a failure leaves the streams behind, nothing else.
delete_jetstream_streams() {
  local hp=${nats_url#nats://}; hp=${hp##*@}; hp=${hp%%/*}
  local host=${hp%:*} port=${hp##*:} line cmds
  exec 3<>"/dev/tcp/$host/$port" || return 0
  IFS= read -r -t 2 line <&3 || true
  cmds='CONNECT {"verbose":false,"pedantic":false}\r\n'
  for s in "$@"; do cmds+="PUB \$JS.API.STREAM.DELETE.$s _INBOX.folio_cleanup 0\r\n\r\n"; done
  printf "${cmds}PING\r\n" >&3
  while IFS= read -r -t 2 line <&3; do [[ $line == PONG* ]] && break; done
  exec 3>&-
}

# A throwaway cluster's names, for scripts that start the real services next to other runs
# (gateway-check.sh, web/tests/run.sh). Expects server_url, nats_url, run_id, db, db_url, work,
# root and pids (the services' pids) to be set. scratch_cluster_env TAG exports the environment
# every service reads: a database of its own, and a slot, subjects, streams and buckets named
# after TAG and run_id.
scratch_cluster_env() {
  local tag=$1 upper
  upper=$(echo "$1" | tr '[:lower:]' '[:upper:]')
  psql "$server_url" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
  export FOLIO_ENV=development
  export FOLIO_JWT_SECRET
  FOLIO_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  export FOLIO_DATABASE_URL=$db_url FOLIO_NATS_URL=$nats_url
  export FOLIO_WAL_SLOT=t_${tag}_$run_id FOLIO_SUBJECT_ROOT=$tag$run_id
  export FOLIO_CHANGES_STREAM=${upper}${run_id}_CHANGES FOLIO_JOBS_STREAM=${upper}${run_id}_JOBS
  export FOLIO_DS_PREFIX=$tag$run_id FOLIO_QUOTA_RATE_BUCKET=$tag$run_id-rates FOLIO_QUOTA_COUNT_BUCKET=$tag$run_id-quotas
  export FOLIO_PDF_BUCKET=$tag$run_id-pdfs FOLIO_PDF_DEAD_LETTER_STREAM=${upper}${run_id}_JOBS_DEAD
}

# scratch_cluster_cleanup LABEL KEEP STATUS: stops the services in pids, then (unless KEEP is
# non-empty) drops the slot, database and JetStream names; keeps and prints the logs in work
# when STATUS is not 0.
scratch_cluster_cleanup() {
  local label=$1 keep=$2 status=$3 p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  if [ -n "$keep" ]; then
    echo "$label: kept database $db, slot ${FOLIO_WAL_SLOT:-}, JetStream names *$run_id*, logs $work" >&2
    return
  fi
  for _ in $(seq 20); do
    psql "$server_url" -Atqc "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '${FOLIO_WAL_SLOT:-}'" \
      >/dev/null 2>&1 && break
    sleep 0.25
  done
  psql "$server_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  timeout 10 node "$root/tests/electric-client/lib/nats-cleanup.mjs" "$nats_url" "$run_id" >/dev/null 2>&1
  if [ "$status" = 0 ]; then
    rm -rf "$work"
  else
    echo "$label: logs kept in $work:" >&2
    for f in "$work"/*.log "$work"/gateway/error.log; do
      [ -s "$f" ] && { echo "--- $f (last 15 lines)" >&2; tail -n 15 "$f" >&2; }
    done
  fi
}
