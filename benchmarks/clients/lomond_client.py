"""lomond, used the way its README shows.

``WebSocket(url, compress=<deflate scenario>)`` and one event loop,
``connect(ping_rate=0, poll=60)`` (no automatic pings, no poll events during
a run); ``send_binary``/``send_text`` with ``compress=False`` except in the
deflate scenario. Everything else is lomond's default, including its choice
of masking accelerator (its C extension, then wsaccel, then pure Python).

``LOMOND_BENCH_TRACE=noop`` in the environment passes
``WebSocket(..., trace=<a no-op callable>)`` instead (``compare.py --trace``
uses it to show what the trace hook costs when a callable is installed).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence, Union

NAME = "lomond"

#: ``noop``: give WebSocket a trace callable that does nothing (see the module docstring).
TRACE = os.environ.get("LOMOND_BENCH_TRACE", "")


def _noop_trace(step: Any) -> None:
    """Receives every trace step and drops it: only the hook's own cost remains."""


FATAL = (
    "disconnected",
    "connect_fail",
    "rejected",
    "protocol_error",
    "closing",
    "closed",
    "unresponsive",
)


class LomondFailed(Exception):
    pass


def probe() -> Dict:
    try:
        import lomond
        from lomond import WebSocket

        WebSocket("ws://127.0.0.1:1").connect  # noqa: B018 - the core must be usable
    except Exception as exc:
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    try:
        from lomond import accel

        mask_impl = str(getattr(accel, "IMPLEMENTATION", "?"))
    except Exception:
        mask_impl = "?"
    trace = ", trace=<no-op>" if TRACE == "noop" else ""
    return {
        "available": True,
        "version": getattr(lomond, "__version__", "?"),
        "file": getattr(lomond, "__file__", "?"),
        "accel": mask_impl,
        "settings": f"WebSocket(url, compress=deflate scenario{trace}), "
        f"connect(ping_rate=0, poll=60); accel: {mask_impl}",
    }


def unsupported(scenario) -> Optional[str]:  # type: ignore[no-untyped-def]
    return None


class Connection:
    def __init__(self, url: str, scenario) -> None:  # type: ignore[no-untyped-def]
        from lomond import WebSocket

        self.compress = bool(scenario.deflate)
        if TRACE == "noop":
            self.ws = WebSocket(url, compress=self.compress, trace=_noop_trace)
        else:
            self.ws = WebSocket(url, compress=self.compress)
        self.events = iter(self.ws.connect(ping_rate=0, poll=60))
        self.extensions = None
        for event in self.events:
            if event.name == "ready":
                ext = getattr(event, "extensions", None)
                if not ext:
                    response = getattr(event, "response", None)
                    headers = getattr(response, "headers", None)
                    if headers is not None:
                        try:
                            ext = headers.get(b"sec-websocket-extensions") or headers.get(
                                "sec-websocket-extensions"
                            )
                        except Exception:
                            ext = None
                if isinstance(ext, bytes):
                    ext = ext.decode("latin-1")
                elif isinstance(ext, (set, frozenset, list, tuple)):
                    ext = ", ".join(sorted(str(e) for e in ext))
                self.extensions = str(ext) if ext else None
                return
            if event.name in FATAL:
                raise LomondFailed(f"before ready: {event!r}")
        raise LomondFailed("event stream ended before ready")

    def recv(self, n: int, add: Callable) -> None:
        if n <= 0:
            return
        count = 0
        for event in self.events:
            name = event.name
            if name == "binary":
                add(event.data)
                count += 1
                if count == n:
                    return
            elif name == "text":
                add(event.text)
                count += 1
                if count == n:
                    return
            elif name in FATAL:
                raise LomondFailed(f"after {count} of {n} messages: {event!r}")
        raise LomondFailed(f"event stream ended after {count} of {n} messages")

    def send(self, seq: Sequence[Union[bytes, str]]) -> None:
        send_binary = self.ws.send_binary
        send_text = self.ws.send_text
        compress = self.compress
        for payload in seq:
            if isinstance(payload, str):
                send_text(payload, compress=compress)
            else:
                send_binary(payload, compress=compress)

    def echo(self, seq: Sequence[Union[bytes, str]], add: Callable) -> None:
        send_binary = self.ws.send_binary
        send_text = self.ws.send_text
        recv = self.recv
        compress = self.compress
        for payload in seq:
            if isinstance(payload, str):
                send_text(payload, compress=compress)
            else:
                send_binary(payload, compress=compress)
            recv(1, add)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        for event in self.events:
            if event.name == "disconnected":
                break


def connect(url: str, scenario) -> Connection:  # type: ignore[no-untyped-def]
    return Connection(url, scenario)
