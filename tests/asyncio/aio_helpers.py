"""Helpers for the asyncio driver's tests: one connection through each driver, compared.

:func:`run_threaded` and :func:`run_asyncio` run one connection to ``url``
through :class:`lomond.WebSocket` and :class:`lomond.asyncio.WebSocket`
(closing on Ready if asked); :func:`summary` is what both must agree on.
"""

from __future__ import annotations

import socket
from typing import Any, List, Optional

from core_helpers import LoopFactory, Run, acollect, collect, run_async

import lomond
from lomond import events
from lomond.asyncio import WebSocket


def run_threaded(url: str, close_on_ready: bool = False, **options: Any) -> Run:
    """One connection through the threaded driver (``websocket_options`` in ``options``)."""
    websocket = lomond.WebSocket(url, **options.pop("websocket_options", {}))

    def on_event(event: events.Event) -> None:
        if close_on_ready and isinstance(event, events.Ready):
            websocket.close()

    return collect(websocket, on_event, **options)


def run_asyncio(
    url: str,
    close_on_ready: bool = False,
    loop_factory: Optional[LoopFactory] = None,
    **options: Any,
) -> Run:
    """One connection through the asyncio driver, on a new loop from ``loop_factory``."""
    websocket = WebSocket(url, **options.pop("websocket_options", {}))

    async def on_event(event: events.Event) -> None:
        if close_on_ready and isinstance(event, events.Ready):
            await websocket.close()

    return run_async(acollect(websocket, on_event, **options), loop_factory=loop_factory)


def summary(run: Run) -> List[Any]:
    """What both drivers must agree on: each event's name, reason and graceful (no Poll)."""
    return [
        (event.name, getattr(event, "reason", None), getattr(event, "graceful", None))
        for event in run.events
        if event.name != "poll"
    ]


def no_dns(*args: Any, **kwargs: Any) -> Any:
    """A replacement for ``socket.getaddrinfo``: no query leaves the machine."""
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
