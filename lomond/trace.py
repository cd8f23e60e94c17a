"""The ``trace`` hook (Lomond 0.3.4): one small dict per step of a connection.

``WebSocket(url, trace=callable)`` calls ``callable(record)`` for every step,
in the thread where the step happens (sends happen in the sending thread).
Every record has ``stage``, ``url`` (without credentials), ``time`` (epoch
seconds) and ``elapsed`` (seconds since the connection attempt started);
some stages add fields:

========================  ==================================================
stage                     extra fields
========================  ==================================================
``connect_start``         ``proxy`` (without credentials, or ``None``)
``tcp_connected``         ``address`` (the peer, or ``None``)
``proxy_tunnel``          ``proxy``
``tls_wrapped``           ``version``, ``cipher``
``upgrade_sent``          (none: ``socket_send`` has the size)
``handshake_ready``       ``status``, ``protocol``, ``extensions``
``handshake_rejected``    ``status``, ``reason``
``connect_fail``          ``reason``
``socket_send``           ``bytes``
``socket_recv``           ``bytes``
``send_text``             ``length`` (characters), ``compress``
``send_binary``           ``length`` (bytes), ``compress``
``send_ping``             ``length``
``send_pong``             ``length``
``message_text``          ``length`` (characters)
``message_binary``        ``length`` (bytes)
``close_requested``       ``code``, ``reason``
``close_received``        ``code``, ``reason``
``disconnected``          ``reason``, ``graceful``
========================  ==================================================

A record never holds credentials or payload bytes, only lengths. An
exception raised by the callable is logged and ignored: tracing must not
break the connection. With no callable, the steps cost one ``is None``
check each.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict

log = logging.getLogger("lomond.trace")

#: The ``trace=`` callable: receives one record per step.
TraceFunc = Callable[[Dict[str, Any]], None]


class Tracer:
    """Builds and delivers the records of one connection to a ``trace`` callable."""

    __slots__ = ("_func", "_started", "_url")

    def __init__(self, func: TraceFunc, url: str) -> None:
        if not callable(func):
            raise TypeError(f"trace must be a callable taking one dict, not {func!r}")
        self._func = func
        self._url = url
        self._started = time.monotonic()

    def __call__(self, stage: str, **fields: Any) -> None:
        """Deliver the record for ``stage``."""
        record: Dict[str, Any] = {
            "stage": stage,
            "url": self._url,
            "time": time.time(),
            "elapsed": time.monotonic() - self._started,
        }
        record.update(fields)
        try:
            self._func(record)
        except Exception:
            log.exception("the trace callable %r raised at stage %r; ignored", self._func, stage)


__all__ = ["TraceFunc", "Tracer"]
