"""The asyncio API: :class:`WebSocket`, :func:`connect_events` and :func:`persist`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, AsyncGenerator, Optional, Tuple, Union

from .. import events
from ..constants import DEFAULT_CLOSE_REASON
from ..errors import WebSocketError
from ..frame import Opcode
from ..options import DEFAULT_CONNECT, DEFAULT_PERSIST, ConnectOptions, PersistOptions
from ..persist import BackOff
from ..status import Status
from ..wakeup import StopSignal
from ..websocket import WebSocketBase
from .session import AsyncioSession

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..options import ConnectKeywords, MoreConnectKeywords

log = logging.getLogger("lomond.persist")

#: What :func:`persist` takes as ``exit_event``: a StopSignal (any thread, or a
#: signal handler) or an :class:`asyncio.Event` (the loop's own tasks).
AsyncExitEvent = Union[StopSignal, asyncio.Event]


class Events:
    """One connection's events: ``async for`` them; the connection starts with the iteration.

    ``async for`` gets the driver's own event generator
    (:meth:`AsyncioSession.run <lomond.asyncio.session.AsyncioSession.run>`),
    with no layer in between: a message costs one ``yield``. Iterating the
    same object again continues the same connection.
    """

    __slots__ = ("_events", "_options", "_stop", "_websocket")

    def __init__(
        self, websocket: WebSocketBase, options: ConnectOptions, stop: Optional[StopSignal]
    ) -> None:
        self._websocket = websocket
        self._options = options
        self._stop = stop
        self._events: Optional[AsyncGenerator[events.Event, None]] = None

    def __aiter__(self) -> AsyncGenerator[events.Event, None]:
        if self._events is None:
            session = self._websocket.open_session(AsyncioSession, self._options, self._stop)
            self._events = session.run()
        return self._events

    async def __anext__(self) -> events.Event:
        """The next event (``StopAsyncIteration`` after the last one)."""
        return await self.__aiter__().__anext__()

    async def aclose(self) -> None:
        """Stop iterating: a connection still open says goodbye (Close 1001) and is closed."""
        if self._events is not None:
            await self._events.aclose()


def connect_events(
    websocket: WebSocketBase, options: ConnectOptions, stop: Optional[StopSignal] = None
) -> Events:
    """One connection of ``websocket`` on the running loop: its events, in order.

    The seam under :meth:`WebSocket.connect`, :func:`persist` and
    :meth:`WebSocketApp.run_async <lomond.handlers.WebSocketApp.run_async>`
    (which passes its own, threaded :class:`lomond.WebSocket`: its sends and
    ``close()`` then work from any thread, the loop's included). Nothing
    happens until the iteration starts.
    """
    return Events(websocket, options, stop)


class WebSocket(WebSocketBase):
    """A WebSocket client connection (RFC 6455) for asyncio.

    Takes the same parameters as :class:`lomond.WebSocket`
    (:class:`~lomond.websocket.WebSocketBase`), and yields the same events
    in the same order::

        import asyncio
        from lomond.asyncio import WebSocket

        async def main():
            websocket = WebSocket("wss://example.org/feed")
            async for event in websocket.connect(ping_rate=20):
                if event.name == "ready":
                    await websocket.send_text("hello")
                elif event.name == "text":
                    print(event.text)

        asyncio.run(main())

    The ``send_*`` coroutines and :meth:`close` write at once and wait only
    for room in the socket's buffer (back-pressure). Call them from tasks on
    the loop that runs :meth:`connect`; from another thread use
    ``asyncio.run_coroutine_threadsafe(websocket.send_text(...), loop)``.
    """

    def connect(
        self, *, stop: Optional[StopSignal] = None, **options: Unpack[ConnectKeywords]
    ) -> Events:
        """Connect, and yield events until the connection ends (``async for``).

        The options are :class:`~lomond.options.ConnectOptions` (``poll``,
        ``ping_rate``, ``ping_timeout``, ``auto_pong``, ``close_timeout``,
        ``connect_timeout``, ``handshake_timeout``), checked here; ``stop``
        is a :class:`~lomond.wakeup.StopSignal` that closes the connection
        gracefully when set, from any thread or a signal handler. Nothing
        happens until the first event is awaited.
        """
        if stop is not None and not isinstance(stop, StopSignal):
            raise TypeError("stop must be a lomond.wakeup.StopSignal")
        return connect_events(self, ConnectOptions(**options), stop)

    def __aiter__(self) -> AsyncGenerator[events.Event, None]:
        return self.connect().__aiter__()

    async def _sent(self, opcode: int, payload: bytes, compress: bool) -> None:
        session = self._session()
        session.send_message(opcode, payload, compress)
        # Waiting only when the socket did not take everything: the common
        # case costs no coroutine.
        if isinstance(session, AsyncioSession) and session.lifecycle.pending_output:
            await session.drained()

    async def send_text(self, text: str, compress: bool = True) -> None:
        """Send a text message (RFC 6455 section 5.6); waits only for buffer room."""
        await self._sent(Opcode.TEXT, self._encode_text(text), compress)

    async def send_binary(
        self, data: Union[bytes, bytearray, memoryview], compress: bool = True
    ) -> None:
        """Send a binary message (RFC 6455 section 5.6); waits only for buffer room."""
        await self._sent(Opcode.BINARY, self._encode_binary(data), compress)

    async def send_json(self, _obj: Any = ..., **kwargs: Any) -> None:
        """Send ``_obj`` (or the keyword arguments as an object) as JSON text."""
        await self.send_text(self._encode_json(_obj, kwargs))

    async def send_ping(self, data: bytes = b"") -> None:
        """Send a Ping (RFC 6455 section 5.5.2), at most 125 bytes."""
        self._session().send_control(Opcode.PING, data)

    async def send_pong(self, data: bytes = b"") -> None:
        """Send a Pong (RFC 6455 section 5.5.3), at most 125 bytes."""
        self._session().send_control(Opcode.PONG, data)

    async def close(
        self, code: Optional[int] = Status.NORMAL, reason: Union[str, bytes] = DEFAULT_CLOSE_REASON
    ) -> None:
        """Start the close handshake (RFC 6455 section 7.1.2), as :meth:`lomond.WebSocket.close`.

        Returns once the Close frame is written (not when the server
        answered: the iterator then delivers ``Closed`` and ``Disconnected``).
        """
        session = self._request_close(code, reason)
        if isinstance(session, AsyncioSession) and session.lifecycle.pending_output:
            # Bounded by the close timeout too: from the loop body, with the
            # event iterator suspended, nothing else ends the wait.
            close_timeout = session.settings.options.close_timeout
            try:
                await asyncio.wait_for(session.drained(), close_timeout or None)
            except (asyncio.TimeoutError, WebSocketError):
                pass  # the connection ends anyway; its events say how


class _Waker:
    """A :class:`~lomond.wakeup.Wakeable` that completes a future on a loop (from any thread)."""

    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self._loop, self._future = loop, future

    def wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._done)
        except RuntimeError:
            pass  # the loop is closed: nobody waits

    def _done(self) -> None:
        if not self._future.done():
            self._future.set_result(None)


async def _wait_stop(signals: Tuple[StopSignal, ...], delay: float) -> None:
    """Sleep ``delay`` seconds unless one of ``signals`` is set; no polling, no thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    waker = _Waker(loop, future)
    for signal in signals:
        signal.attach(waker)
    try:
        if not any(signal.is_set() for signal in signals):
            await asyncio.wait((future,), timeout=delay)
    finally:
        for signal in signals:
            signal.detach(waker)


async def persist(
    websocket: WebSocketBase,
    poll: float = DEFAULT_CONNECT.poll,
    min_wait: float = DEFAULT_PERSIST.min_wait,
    max_wait: float = DEFAULT_PERSIST.max_wait,
    ping_rate: float = DEFAULT_CONNECT.ping_rate,
    ping_timeout: Optional[float] = DEFAULT_CONNECT.ping_timeout,
    exit_event: Optional[AsyncExitEvent] = None,
    respect_retry_after: bool = DEFAULT_PERSIST.respect_retry_after,
    **connect_options: Unpack[MoreConnectKeywords],
) -> AsyncGenerator[events.Event, None]:
    """:func:`lomond.persist.persist` for asyncio: reconnect forever (``async for``).

    The same events (a :class:`~lomond.events.BackOff` before each wait),
    the same full-jitter back-off and ``Retry-After`` handling. The loop
    ends when ``exit_event`` is set (a :class:`~lomond.wakeup.StopSignal`,
    from any thread or a signal handler, or an :class:`asyncio.Event`), at
    once wherever it is; ``websocket.close()`` ends the current connection
    only, and the loop reconnects after its back-off, as the threaded
    :func:`~lomond.persist.persist` does.
    """
    options = ConnectOptions(poll=poll, ping_rate=ping_rate, ping_timeout=ping_timeout,
                             **connect_options)
    settings = PersistOptions(
        min_wait=min_wait, max_wait=max_wait, respect_retry_after=respect_retry_after
    )
    if exit_event is not None and not isinstance(exit_event, (StopSignal, asyncio.Event)):
        raise TypeError(f"exit_event must be a StopSignal or an asyncio.Event, not {exit_event!r}")
    exit_signal = exit_event if isinstance(exit_event, StopSignal) else StopSignal()
    aio_event = exit_event if isinstance(exit_event, asyncio.Event) else None

    def stopping() -> bool:
        return exit_signal.is_set() or bool(aio_event is not None and aio_event.is_set())

    # An asyncio.Event is relayed to the signal by a task, so that setting it
    # wakes a connection at once too (a StopSignal needs no relay).
    relay = None if aio_event is None else asyncio.ensure_future(_relay(aio_event, exit_signal))
    back_off = BackOff(settings)
    try:
        while not stopping():
            connection = connect_events(websocket, options, exit_signal)
            try:
                async for event in connection:
                    back_off.observe(event)
                    yield event
            finally:
                # Also when the caller stops iterating: the connection is
                # closed now, not whenever the loop collects the generator.
                await connection.aclose()
            delay = back_off.next_delay()
            log.debug("reconnecting to %s in %.2f s", websocket.url, delay)
            # Also when stopping, as lomond.persist.persist: the last event
            # is the BackOff waited on (the wait then returns at once).
            yield events.BackOff(delay)
            await _wait_stop((exit_signal,), delay)
    finally:
        if relay is not None:
            relay.cancel()


async def _relay(event: asyncio.Event, signal: StopSignal) -> None:
    await event.wait()
    signal.set()


__all__ = ["AsyncExitEvent", "Events", "WebSocket", "connect_events", "persist"]
