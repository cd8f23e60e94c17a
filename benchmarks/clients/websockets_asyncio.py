"""websockets' asyncio client: ``websockets.asyncio.client.connect``, in a loop of its own.

The same settings as the threaded websockets adapter (``compression``
``"deflate"`` only in the deflate scenario, ``max_size`` 1 MiB, which the
1 MiB messages fit exactly); ``await ws.recv()`` and ``await ws.send()``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Optional, Sequence, Union

NAME = "websockets-asyncio"


def probe() -> Dict:
    try:
        import websockets
        from websockets.asyncio.client import connect  # noqa: F401
    except ImportError as exc:
        return {"available": False, "reason": str(exc)}
    try:
        import websockets.speedups

        speedups = "C speedups"
    except ImportError:
        speedups = "no C speedups"
    return {
        "available": True,
        "version": websockets.__version__,
        "settings": "asyncio.client.connect defaults (max_size=1 MiB, ping_interval=20), "
        f"compression='deflate' only in deflate scenarios else None; {speedups}",
    }


def unsupported(scenario: Any) -> Optional[str]:
    return None


class Connection:
    def __init__(self, url: str, scenario: Any) -> None:
        from websockets.asyncio.client import connect

        self.loop = asyncio.new_event_loop()
        compression = "deflate" if scenario.deflate else None
        self.ws: Any = self.loop.run_until_complete(connect(url, compression=compression))
        self.extensions: Optional[str] = None
        extensions = self.ws.response.headers.get("Sec-WebSocket-Extensions")
        self.extensions = extensions or None

    async def _recv(self, n: int, add: Callable[[Any], None]) -> None:
        recv = self.ws.recv
        for _ in range(n):
            add(await recv())

    def recv(self, n: int, add: Callable[[Any], None]) -> None:
        if n > 0:
            self.loop.run_until_complete(self._recv(n, add))

    async def _send(self, seq: Sequence[Union[bytes, str]]) -> None:
        send = self.ws.send
        for payload in seq:
            await send(payload)

    def send(self, seq: Sequence[Union[bytes, str]]) -> None:
        self.loop.run_until_complete(self._send(seq))

    async def _echo(self, seq: Sequence[Union[bytes, str]], add: Callable[[Any], None]) -> None:
        send, recv = self.ws.send, self.ws.recv
        for payload in seq:
            await send(payload)
            add(await recv())

    def echo(self, seq: Sequence[Union[bytes, str]], add: Callable[[Any], None]) -> None:
        self.loop.run_until_complete(self._echo(seq, add))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.ws.close())
        except Exception:
            pass
        finally:
            self.loop.close()


def connect(url: str, scenario: Any) -> Connection:
    return Connection(url, scenario)
