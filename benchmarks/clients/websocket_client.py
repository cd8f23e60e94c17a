"""websocket-client (``import websocket``), used as its documentation shows.

``websocket.create_connection(url)`` with the library's defaults:
``enable_multithread=True`` (a lock around every send and recv) and
``skip_utf8_validation=False`` (text is validated, with wsaccel's validator
when wsaccel is installed, then decoded). With wsaccel installed its
``XorMaskerSimple`` masks outgoing frames. websocket-client has no
permessage-deflate support, so the deflate scenario is n/a.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Union

NAME = "websocket-client"


def probe() -> Dict:
    try:
        import websocket
    except ImportError as exc:
        return {"available": False, "reason": str(exc)}
    try:
        import wsaccel

        accel = "wsaccel " + getattr(wsaccel, "__version__", "installed")
    except ImportError:
        accel = "no wsaccel"
    return {
        "available": True,
        "version": websocket.__version__,
        "settings": f"create_connection defaults: enable_multithread=True, "
        f"skip_utf8_validation=False; {accel}",
    }


def unsupported(scenario) -> Optional[str]:  # type: ignore[no-untyped-def]
    if scenario.deflate:
        return "no permessage-deflate support"
    return None


class Connection:
    def __init__(self, url: str, scenario) -> None:  # type: ignore[no-untyped-def]
        import websocket

        self.ws = websocket.create_connection(url, timeout=60)
        self.extensions = self.ws.getheaders().get("sec-websocket-extensions")

    def recv(self, n: int, add: Callable) -> None:
        recv = self.ws.recv
        for _ in range(n):
            add(recv())

    def send(self, seq: Sequence[Union[bytes, str]]) -> None:
        ws = self.ws
        send_binary = ws.send_binary
        send_text = ws.send
        for payload in seq:
            if isinstance(payload, str):
                send_text(payload)
            else:
                send_binary(payload)

    def echo(self, seq: Sequence[Union[bytes, str]], add: Callable) -> None:
        ws = self.ws
        recv = ws.recv
        for payload in seq:
            if isinstance(payload, str):
                ws.send(payload)
            else:
                ws.send_binary(payload)
            add(recv())

    def close(self) -> None:
        self.ws.close()


def connect(url: str, scenario) -> Connection:  # type: ignore[no-untyped-def]
    return Connection(url, scenario)
