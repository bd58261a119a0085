# An SMTP receiver (aiosmtpd, a real peer) that accepts mail for every domain but one, which it
# defers (451 4.7.1, as greylisting does) at RCPT, or with "data" at the end of the data. Each
# accepted recipient is appended to LOG as "MESSAGE-ID RECIPIENT", so a test can count deliveries
# per message. With "slow=S" it commits (logs) each message, then waits S seconds before its 250,
# as a receiver with a slow filter does.
#
#   python3 deferring_receiver.py PORT LOG DEFERRED-DOMAIN [rcpt|data|slow=SECONDS]
import asyncio
import email
import os
import signal
import sys

from aiosmtpd.controller import Controller

port, log_path, deferred = int(sys.argv[1]), sys.argv[2], sys.argv[3].lower()
at_data = len(sys.argv) > 4 and sys.argv[4] == "data"
slow = float(sys.argv[4][5:]) if len(sys.argv) > 4 and sys.argv[4].startswith("slow=") else 0


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().endswith("@" + deferred) and not at_data:
            return "451 4.7.1 Deferred for the test, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(r.lower().endswith("@" + deferred) for r in envelope.rcpt_tos):
            return "451 4.7.1 Deferred for the test, try again later"
        mid = email.message_from_bytes(envelope.original_content or envelope.content)["Message-ID"]
        with open(log_path, "a") as f:
            for r in envelope.rcpt_tos:
                f.write(f"{mid} {r}\n")
            f.flush()
            os.fsync(f.fileno())
        if slow:
            await asyncio.sleep(slow)
        return "250 2.0.0 OK"


controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print("listening", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
