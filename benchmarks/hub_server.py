"""A cheap asyncio WebSocket server for many concurrent connections (idle.py, hub_scale.py).

Run as its own process so that it never shares a GIL with the client under
test. It prints ``PORT <n>`` once listening, and serves until stdin closes
(or it is killed). Raw asyncio protocols, pre-built frames, no extensions:
the server should never be what limits a client.

Paths (after the upgrade):

- ``/idle``: send one text message ``hello``, then nothing (no pings).
- ``/feed?count=K&size=S``: wait for one message from the client, then send
  ``K`` text messages of ``S`` bytes, then nothing.

Every connection answers pings, and answers the client's Close with a Close
and then closes the TCP connection (RFC 6455 section 7.1.1: the server
closes first). The fd soft limit is raised to the hard limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import resource
import struct
import sys
from typing import Dict, Optional
from urllib.parse import parse_qs, urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_BLOCKS: Dict[tuple, bytes] = {}


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def feed_block(count: int, size: int) -> bytes:
    key = (count, size)
    block = _BLOCKS.get(key)
    if block is None:
        one = frame(0x1, b"m" * size)
        block = _BLOCKS[key] = one * count
    return block


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = bytearray()
        self.upgraded = False
        self.path = "/"
        self.query: Dict[str, str] = {}
        self.waiting_for_go = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            self.upgrade(head)
        self.frames()

    def upgrade(self, head: str) -> None:
        lines = head.split("\r\n")
        target = lines[0].split(" ")[1]
        parts = urlsplit(target)
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        key = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        assert self.transport is not None
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        self.upgraded = True
        if self.path == "/idle":
            self.transport.write(frame(0x1, b"hello"))
        elif self.path == "/feed":
            self.waiting_for_go = True

    def frames(self) -> None:
        buffer = self.buffer
        transport = self.transport
        assert transport is not None
        while len(buffer) >= 2:
            b0, b1 = buffer[0], buffer[1]
            length = b1 & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length = struct.unpack_from("!H", buffer, 2)[0]
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length = struct.unpack_from("!Q", buffer, 2)[0]
                offset = 10
            masked = b1 & 0x80
            if masked:
                offset += 4
            if len(buffer) < offset + length:
                return
            mask = bytes(buffer[offset - 4 : offset]) if masked else b"\0\0\0\0"
            payload = bytes(buffer[offset : offset + length])
            del buffer[: offset + length]
            if masked and payload:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:  # Close: answer, then close TCP (the server closes first)
                transport.write(frame(0x8, payload[:2]))
                transport.close()
                return
            if opcode == 0x9:
                transport.write(frame(0xA, payload))
            elif opcode in (0x1, 0x2) and self.waiting_for_go:
                self.waiting_for_go = False
                count = int(self.query.get("count", "1000"))
                size = int(self.query.get("size", "16"))
                transport.write(feed_block(count, size))


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
