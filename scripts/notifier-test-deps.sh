#!/usr/bin/env bash
# Installs what the notifier's tests start next to the service: a Python venv with aiosmtpd
# (the SMTP server writing a Maildir) and standardwebhooks (the independent signature check
# the webhook receiver runs). Idempotent; prints the venv's python on success.
set -euo pipefail
VENV=${FOLIO_NOTIFIER_VENV:-/var/cache/folio-tools/notifier-venv}
AIOSMTPD_VERSION=1.4.6
STANDARDWEBHOOKS_VERSION=1.1.0
stamp="$VENV/.folio-deps-aiosmtpd-$AIOSMTPD_VERSION-standardwebhooks-$STANDARDWEBHOOKS_VERSION"
if [ ! -f "$stamp" ]; then
  mkdir -p "$(dirname "$VENV")"
  # A lock, because several test binaries may call this at once.
  exec 9>"$VENV.lock"
  flock 9
  if [ ! -f "$stamp" ]; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "aiosmtpd==$AIOSMTPD_VERSION" "standardwebhooks==$STANDARDWEBHOOKS_VERSION" >&2
    touch "$stamp"
  fi
fi
echo "$VENV/bin/python"
