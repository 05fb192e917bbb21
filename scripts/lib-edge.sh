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
