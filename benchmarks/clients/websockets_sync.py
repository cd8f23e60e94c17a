"""websockets' threaded client: ``websockets.sync.client.connect``.

Library defaults except ``compression``: ``"deflate"`` (its default offer,
``permessage-deflate; client_max_window_bits``) in the deflate scenario and
``None`` elsewhere, so it never compresses what it sends where the others
don't (the server declines compression there anyway). ``max_size`` stays at
its default of 1 MiB, which the 1 MiB messages fit exactly. A background
thread reads the socket and hands messages over through a queue; masking
and UTF-8 work use its C ``speedups`` and the standard library.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Union

NAME = "websockets"


def probe() -> Dict:
    try:
        import websockets
        from websockets.sync.client import connect  # noqa: F401
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
        "settings": "sync.client.connect defaults (max_size=1 MiB, ping_interval=20), "
        f"compression='deflate' only in deflate scenarios else None; {speedups}",
    }


def unsupported(scenario) -> Optional[str]:  # type: ignore[no-untyped-def]
    return None


class Connection:
    def __init__(self, url: str, scenario) -> None:  # type: ignore[no-untyped-def]
        from websockets.sync.client import connect

        self.ws = connect(url, compression="deflate" if scenario.deflate else None)
        self.extensions = self.ws.response.headers.get("Sec-WebSocket-Extensions")

    def recv(self, n: int, add: Callable) -> None:
        recv = self.ws.recv
        for _ in range(n):
            add(recv())

    def send(self, seq: Sequence[Union[bytes, str]]) -> None:
        send = self.ws.send
        for payload in seq:
            send(payload)

    def echo(self, seq: Sequence[Union[bytes, str]], add: Callable) -> None:
        send = self.ws.send
        recv = self.ws.recv
        for payload in seq:
            send(payload)
            add(recv())

    def close(self) -> None:
        self.ws.close()


def connect(url: str, scenario) -> Connection:  # type: ignore[no-untyped-def]
    return Connection(url, scenario)
