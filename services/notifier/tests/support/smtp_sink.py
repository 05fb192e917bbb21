"""An SMTP server for the notifier's tests: aiosmtpd writing every accepted message into a
Maildir. `--fail-first N` answers the first N messages with a temporary failure (451), as a
busy mail server would. Prints "PORT <n>" once listening.
"""

import argparse
import asyncio
import mailbox

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, maildir, fail_first):
        self.box = mailbox.Maildir(maildir, create=True)
        self.fail_first = fail_first

    async def handle_DATA(self, server, session, envelope):
        if self.fail_first > 0:
            self.fail_first -= 1
            return "451 4.3.0 Temporary failure on purpose, try again later"
        self.box.add(envelope.original_content or envelope.content)
        return "250 2.0.0 Message accepted for delivery"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("maildir")
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    handler = Handler(args.maildir, args.fail_first)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="sink.folio.test"), "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
