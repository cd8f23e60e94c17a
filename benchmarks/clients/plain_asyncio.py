"""The asyncio ceiling: the plain-socket reference client on an ``asyncio.Protocol``.

The opening handshake and the frame building are ``plain_socket``'s; after
it, the socket is handed to ``loop.create_connection(sock=...)`` and frames
are parsed straight out of ``data_received`` chunks, with the same least
work as ``plain_socket`` (no fragmentation, pings, limits or recovery). It
shows what an asyncio client cannot beat on this machine: the event loop's
own cost per read, write and task wake-up. It is a reference, not a peer.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from clients import plain_socket

NAME = "plain-asyncio"
TAIL = b"\x00\x00\xff\xff"


def probe() -> Dict:
    return {
        "available": True,
        "version": "-",
        "settings": "plain_socket's handshake and framing on an asyncio.Protocol "
        f"(default loop); masking: {plain_socket.MASK_IMPL}",
    }


def unsupported(scenario: Any) -> Optional[str]:
    if scenario.big:
        # Big payloads want recv_into on a BufferedProtocol to be a fair
        # ceiling; this reference is for the per-message cost only.
        return "a reference for small messages only"
    return None


class _Frames(asyncio.Protocol):
    """Parses frames as they arrive; wakes the waiting coroutine once ``want`` are in."""

    def __init__(self, inflater: Optional[Any]) -> None:
        self.data = b""
        self.inflater = inflater
        self.add: Callable[[Any], None] = lambda payload: None
        self.want = 0
        self.count = 0
        self.waiter: Optional[asyncio.Future[None]] = None
        self.error: Optional[str] = None

    def data_received(self, data: bytes) -> None:
        self.data = self.data + data if self.data else data
        self.parse()

    def parse(self) -> None:
        # The header parse is plain_socket.Connection.recv's, inlined on
        # purpose: a call per frame would lower the ceiling it measures.
        data, pos, end_data = self.data, 0, len(self.data)
        while self.count < self.want and end_data - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            h = pos + 2
            if length == 126:
                if end_data - pos < 4:
                    break
                length = (data[h] << 8) | data[h + 1]
                h += 2
            elif length == 127:
                if end_data - pos < 10:
                    break
                length = int.from_bytes(data[h:h + 8], "big")
                h += 8
            end = h + length
            if end > end_data:
                break
            payload = data[h:end]
            pos = end
            opcode = b0 & 0x0F
            if not b0 & 0x80 or opcode == 0 or opcode > 2:
                self.error = f"unexpected frame 0x{b0:02x}"
                break
            if b0 & 0x40:
                payload = self.inflater.decompress(payload + TAIL)  # type: ignore[union-attr]
            self.add(payload.decode() if opcode == 1 else payload)
            self.count += 1
        self.data = data[pos:]
        if (self.count >= self.want or self.error) and self.waiter is not None:
            if not self.waiter.done():
                self.waiter.set_result(None)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.error = self.error or f"connection lost: {exc}"
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Connection:
    def __init__(self, url: str, scenario: Any) -> None:
        plain = plain_socket.Connection(url, scenario)
        self.extensions = plain.extensions
        self.sock = plain.sock
        self.sock.setblocking(False)
        self.loop = asyncio.new_event_loop()
        inflater = zlib.decompressobj(-15) if plain.extensions else None
        self.frames = _Frames(inflater)
        self.frames.data = plain.data
        self.transport, _ = self.loop.run_until_complete(
            self.loop.create_connection(lambda: self.frames, sock=self.sock)
        )

    async def _recv(self, n: int, add: Callable[[Any], None]) -> None:
        frames = self.frames
        frames.add, frames.want, frames.count = add, n, 0
        frames.parse()
        while frames.count < n:
            if frames.error:
                raise plain_socket.PlainError(frames.error)
            frames.waiter = self.loop.create_future()
            await frames.waiter
            frames.waiter = None

    def recv(self, n: int, add: Callable[[Any], None]) -> None:
        if n > 0:
            self.loop.run_until_complete(self._recv(n, add))

    def _write(self, seq: Sequence[Union[bytes, str]]) -> None:
        keys = os.urandom(4 * len(seq))
        write, mask, header = self.transport.write, plain_socket.mask, plain_socket.masked_header
        for i, payload in enumerate(seq):
            if isinstance(payload, str):
                payload, opcode = payload.encode(), 1
            else:
                opcode = 2
            key = keys[4 * i:4 * i + 4]
            write(header(opcode, len(payload)) + key + mask(payload, key))

    async def _drained(self) -> None:
        while self.transport.get_write_buffer_size():
            await asyncio.sleep(0.001)

    def send(self, seq: Sequence[Union[bytes, str]]) -> None:
        self._write(seq)
        self.loop.run_until_complete(self._drained())

    async def _echo(self, seq: Sequence[Union[bytes, str]], add: Callable[[Any], None]) -> None:
        for payload in seq:
            self._write((payload,))
            await self._recv(1, add)

    def echo(self, seq: Sequence[Union[bytes, str]], add: Callable[[Any], None]) -> None:
        self.loop.run_until_complete(self._echo(seq, add))

    async def _close(self) -> None:
        key = os.urandom(4)
        payload = (1000).to_bytes(2, "big")
        self.transport.write(plain_socket.masked_header(8, 2) + key
                             + plain_socket.mask(payload, key))
        lost = self.loop.create_future()
        self.frames.connection_lost = lambda exc: lost.done() or lost.set_result(None)  # type: ignore[method-assign]
        try:
            await asyncio.wait_for(lost, 10)  # the server's Close, then its TCP close
        except asyncio.TimeoutError:
            pass

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self._close())
        finally:
            self.transport.abort()
            self.loop.close()


def connect(url: str, scenario: Any) -> Connection:
    return Connection(url, scenario)


__all__: List[str] = ["NAME", "connect", "probe", "unsupported"]
