"""A webhook consumer for the notifier's tests.

It verifies every request with the `standardwebhooks` package (an implementation independent
of the notifier's), answers as each endpoint is configured (fail the first N requests, ask
for a Retry-After, hold the first request), and keeps a log the test reads:

  POST /_endpoints  {"/path": {"secret": "whsec_..", "fail_first": 0, "fail_status": 500,
                     "fail_body_size": null, "retry_after": null, "hold_first_s": 0}}
  GET  /_log        [{"path", "webhook_id", "outcome", "status", "payload", "error"}]

outcome: accepted (2xx answered), failed (configured failure answered), rejected (signature
did not verify: 400), holding (a held request arrived), abandoned (the sender hung up while
it was held: nobody got an answer, so the delivery did not happen), unknown.
Prints "PORT <n>" once listening.
"""

import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
ENDPOINTS = {}
COUNTS = {}
LOG = []


def record(entry):
    with LOCK:
        LOG.append(entry)


def peer_gone(sock):
    """The sender closed its side (it was killed or gave up): nothing is waiting for us."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                body = json.dumps(LOG).encode()
            return self.reply(200, body, {"Content-Type": "application/json"})
        self.reply(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path == "/_endpoints":
            with LOCK:
                ENDPOINTS.update(json.loads(body))
            return self.reply(204)
        with LOCK:
            cfg = ENDPOINTS.get(self.path)
            n = COUNTS.get(self.path, 0) + 1
            COUNTS[self.path] = n
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = {"path": self.path, "webhook_id": headers.get("webhook-id"), "n": n, "payload": None, "error": None}
        if cfg is None:
            record({**entry, "outcome": "unknown", "status": 404})
            return self.reply(404)
        try:
            entry["payload"] = Webhook(cfg["secret"]).verify(body, headers)
        except WebhookVerificationError as e:
            record({**entry, "outcome": "rejected", "status": 400, "error": str(e)})
            return self.reply(400, b"bad signature")
        if n == 1 and cfg.get("hold_first_s"):
            record({**entry, "outcome": "holding", "status": None})
            deadline = time.monotonic() + cfg["hold_first_s"]
            while time.monotonic() < deadline:
                if peer_gone(self.connection):
                    record({**entry, "outcome": "abandoned", "status": None})
                    self.close_connection = True
                    return
                time.sleep(0.02)
        if n <= cfg.get("fail_first", 0):
            status = cfg.get("fail_status", 500)
            extra = {}
            if cfg.get("retry_after") is not None:
                extra["Retry-After"] = str(cfg["retry_after"])
            record({**entry, "outcome": "failed", "status": status})
            body = b"receiver failing on purpose (attempt %d)" % n
            if cfg.get("fail_body_size"):
                body = body + b"." * (cfg["fail_body_size"] - len(body))
            return self.reply(status, body, extra)
        record({**entry, "outcome": "accepted", "status": 200})
        self.reply(200, b"ok")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
