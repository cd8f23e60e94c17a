"""lomond on asyncio: the same core, the same events, awaitable sends.

::

    import asyncio
    from lomond.asyncio import WebSocket

    async def main() -> None:
        websocket = WebSocket("wss://example.org/feed")
        async for event in websocket.connect(ping_rate=20):
            if event.name == "ready":
                await websocket.send_json(type="subscribe", channels=["ticker"])
            elif event.name == "text":
                print(event.json)

    asyncio.run(main())

:class:`WebSocket` takes :class:`lomond.WebSocket`'s parameters and yields
the same :mod:`events <lomond.events>` in the same order, over the same
sans-I/O :class:`~lomond.lifecycle.Lifecycle` as the threaded driver and the
hub (the driver is :class:`~lomond.asyncio.session.AsyncioSession`, on an
:class:`asyncio.Protocol`). :func:`persist` reconnects with the same
back-off. For handlers, see :meth:`lomond.handlers.WebSocketApp.run_async`.
"""

from __future__ import annotations

from .websocket import AsyncExitEvent, Events, WebSocket, connect_events, persist

__all__ = ["AsyncExitEvent", "Events", "WebSocket", "connect_events", "persist"]
