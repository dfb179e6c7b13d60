"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, keeping what it accepts.

`refuse` maps a recipient to the reply its RCPT gets ("451 Try again later", "550 No such
user"); `delay` slows every DATA down (to catch a worker mid-batch).
"""

import asyncio
import contextlib
import email
import socket
import threading
import time

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sink:
    def __init__(self, *, delay: float = 0.0):
        self.delay = delay
        self.refuse: dict[str, str] = {}
        self.messages: list = []  # email.message.Message, in arrival order
        self.arrived: list[float] = []  # time.time() each message's DATA began, same order
        self._lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        arrived = time.time()  # the message has been handed over: its DATA is here
        if self.delay:
            await asyncio.sleep(self.delay)
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        with self._lock:
            self.messages.append(message)
            self.arrived.append(arrived)
        return "250 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        with self._lock:
            return [m["Message-ID"] for m in self.messages]

    def to(self, address: str) -> list:
        with self._lock:
            return [m for m in self.messages if m["To"] == address]


@contextlib.contextmanager
def running(sink: Sink, port: int | None = None):
    """Serve `sink` on `port` (a free one by default); yields the port."""
    port = port or free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
