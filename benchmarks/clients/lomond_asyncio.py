"""lomond on asyncio: ``lomond.asyncio.WebSocket`` in an event loop of its own.

Like the threaded adapter: ``WebSocket(url, compress=<deflate scenario>)``,
one ``connect(ping_rate=0, poll=60)`` iterator, ``await send_binary(data,
compress=...)``. Each adapter call runs the loop until it is done, so the
loop's own overhead (one ``run_until_complete`` per call, not per message)
is in the figures, as it is in any asyncio program.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Dict, Optional, Sequence, Union

NAME = "lomond-asyncio"

FATAL = ("disconnected", "connect_fail", "rejected", "protocol_error", "closing", "closed")


class LomondFailed(Exception):
    pass


def probe() -> Dict:
    try:
        import lomond
        from lomond import accel
        from lomond.asyncio import WebSocket  # noqa: F401
    except ImportError as exc:
        return {"available": False, "reason": str(exc)}
    return {
        "available": True,
        "version": getattr(lomond, "__version__", "?"),
        "file": getattr(lomond, "__file__", "?"),
        "accel": accel.IMPLEMENTATION,
        "settings": "lomond.asyncio.WebSocket(url, compress=deflate scenario), "
        f"connect(ping_rate=0, poll=60), default asyncio loop; accel: {accel.IMPLEMENTATION}",
    }


def unsupported(scenario: Any) -> Optional[str]:
    return None


class Connection:
    def __init__(self, url: str, scenario: Any) -> None:
        from lomond.asyncio import WebSocket

        self.loop = asyncio.new_event_loop()
        self.compress = bool(scenario.deflate)
        self.ws = WebSocket(url, compress=self.compress)
        self.events: AsyncIterator[Any] = self.ws.connect(ping_rate=0, poll=60)
        self.extensions: Optional[str] = None
        self.loop.run_until_complete(self._ready())

    async def _ready(self) -> None:
        async for event in self.events:
            if event.name == "ready":
                self.extensions = ", ".join(sorted(event.extensions)) or None
                return
            if event.name in FATAL:
                raise LomondFailed(f"before ready: {event!r}")
        raise LomondFailed("event stream ended before ready")

    async def _recv(self, n: int, add: Callable[[Any], None]) -> None:
        count = 0
        async for event in self.events:
            name = event.name
            if name == "binary":
                add(event.data)
            elif name == "text":
                add(event.text)
            elif name in FATAL:
                raise LomondFailed(f"after {count} of {n} messages: {event!r}")
            else:
                continue
            count += 1
            if count == n:
                return
        raise LomondFailed(f"event stream ended after {count} of {n} messages")

    def recv(self, n: int, add: Callable[[Any], None]) -> None:
        if n > 0:
            self.loop.run_until_complete(self._recv(n, add))

    async def _send(self, seq: Sequence[Union[bytes, str]]) -> None:
        send_binary, send_text, compress = self.ws.send_binary, self.ws.send_text, self.compress
        for payload in seq:
            if isinstance(payload, str):
                await send_text(payload, compress=compress)
            else:
                await send_binary(payload, compress=compress)

    def send(self, seq: Sequence[Union[bytes, str]]) -> None:
        self.loop.run_until_complete(self._send(seq))

    async def _echo(self, seq: Sequence[Union[bytes, str]], add: Callable[[Any], None]) -> None:
        send_binary, send_text, compress = self.ws.send_binary, self.ws.send_text, self.compress
        for payload in seq:
            if isinstance(payload, str):
                await send_text(payload, compress=compress)
            else:
                await send_binary(payload, compress=compress)
            await self._recv(1, add)

    def echo(self, seq: Sequence[Union[bytes, str]], add: Callable[[Any], None]) -> None:
        self.loop.run_until_complete(self._echo(seq, add))

    async def _close(self) -> None:
        try:
            await self.ws.close()
        except Exception:
            pass
        async for event in self.events:
            if event.name == "disconnected":
                break

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self._close())
        finally:
            self.loop.close()


def connect(url: str, scenario: Any) -> Connection:
    return Connection(url, scenario)
