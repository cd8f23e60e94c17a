"""A cheap asyncio WebSocket server for many concurrent connections (idle.py, hub_scale.py).

Run as its own process so that it never shares a GIL with the client under
test. It prints ``PORT <n>`` once listening, and serves until stdin closes
(or it is killed). Raw asyncio protocols, pre-built frames, no extensions:
the server should never be what limits a client.

Paths (after the upgrade):

- ``/idle``: send one text message ``hello``, then nothing (no pings).
- ``/feed?count=K&size=S``: wait for one message from the client, then send
  ``K`` text messages of ``S`` bytes, then nothing.

Any other path is refused with 404. Every connection answers pings, and
answers the client's Close with a Close and then closes the TCP connection
(RFC 6455 section 7.1.1: the server closes first). The fd soft limit is
raised to the hard limit.

Each connection is a :class:`lomond.protocol.ServerProtocol` (this
repository's lomond, put first on ``sys.path``): the upgrade request's
checks, the answer, unmasking with :mod:`lomond.accel`, pings and the close
handshake are lomond's, so the server holds no second implementation of
RFC 6455. The messages it sends are frames built once by
:func:`lomond.frame.build_frame` (``mask=False``) and written as they are:
the protocol only has to see what it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lomond import events
from lomond.frame import Opcode, build_frame
from lomond.protocol import ServerProtocol, UpgradeRequest

HELLO = build_frame(Opcode.TEXT, b"hello", mask=False)
_BLOCKS: Dict[Tuple[int, int], bytes] = {}


def feed_block(count: int, size: int) -> bytes:
    """``count`` text frames of ``size`` bytes, built once per shape."""
    key = (count, size)
    block = _BLOCKS.get(key)
    if block is None:
        block = _BLOCKS[key] = build_frame(Opcode.TEXT, b"m" * size, mask=False) * count
    return block


class Connection(asyncio.Protocol):
    """One client: bytes in and out of its :class:`ServerProtocol`."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.protocol = ServerProtocol()
        # For /feed: the block to send once the client's first message arrives.
        self.feed: Optional[bytes] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        protocol = self.protocol
        self.handle(protocol.receive_data(data))
        reply = protocol.data_to_send()
        if reply:
            transport.write(reply)
        if protocol.should_close:
            # The close handshake is done (the server closes TCP first), the
            # request was refused, or the client broke the protocol.
            transport.close()

    def handle(self, got: List[events.Event]) -> None:
        transport = self.transport
        assert transport is not None
        for event in got:
            if isinstance(event, UpgradeRequest):
                self.upgrade(event.request.target)
            elif isinstance(event, (events.Text, events.Binary)) and self.feed is not None:
                transport.write(self.feed)
                self.feed = None

    def upgrade(self, target: str) -> None:
        transport = self.transport
        assert transport is not None
        protocol = self.protocol
        parts = urlsplit(target)
        if parts.path not in ("/idle", "/feed"):
            protocol.reject(404, f"no such path: {parts.path}")
            return
        # Frames behind the request (a client should wait for the answer).
        early = protocol.accept()
        transport.write(protocol.data_to_send())  # the 101 answer goes first
        if parts.path == "/idle":
            transport.write(HELLO)
        else:
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            self.feed = feed_block(int(query.get("count", "1000")), int(query.get("size", "16")))
        self.handle(early)

    def eof_received(self) -> Optional[bool]:
        self.protocol.receive_eof()
        return None  # asyncio closes the transport


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, "127.0.0.1", port, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()  # until stdin closes: the parent is done
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(args.port))
