"""What every driver shares: its settings, the interface a WebSocket uses, and sends.

A driver moves one connection's bytes: the threaded
:class:`~lomond.sync.session.WebsocketSession` (the caller's thread) or the
:class:`~lomond.hub.session.HubSession` (many connections on one thread).
:class:`~lomond.websocket.WebSocket` builds a :class:`SessionSettings` for
each connection and talks to the driver through :class:`Session`.
:class:`DriverBase` implements that interface over a
:class:`~lomond.lifecycle.Lifecycle`, so a driver only adds how it opens
the socket, reads, waits and delivers events.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Callable, Mapping, Optional, Protocol, Tuple, Union

import attrs

from .compression import PerMessageDeflate
from .constants import DEFAULT_MAX_SIZE, DEFAULT_SEND_TIMEOUT
from .errors import TransportFail, WebSocketClosed
from .handshake import URL
from .lifecycle import Lifecycle
from .options import DEFAULT_CONNECT, ConnectOptions, SocketOption
from .protocol import ClientProtocol, State
from .response import Response
from .status import Status
from .trace import TraceFunc, Tracer
from .wakeup import Latch, StopSignal


@attrs.frozen(kw_only=True)
class SessionSettings:
    """Everything one connection needs, fixed when it starts.

    Built by :class:`~lomond.websocket.WebSocket` for each connection; a
    driver reads nothing else from it.
    """

    url: URL
    #: ``{"http": ..., "https": ...}`` proxy URLs; ``None`` reads the
    #: environment (resolved when the connection starts, so that a bad
    #: environment setting is reported as ``ConnectFail``).
    proxies: Optional[Mapping[str, str]] = None
    ssl_context: Optional[ssl.SSLContext] = None
    source_address: Optional[Tuple[str, int]] = None
    socket_options: Tuple[SocketOption, ...] = ()
    #: A pre-connected socket to use instead of connecting (no proxy then).
    sock: Optional[socket.socket] = None
    agent: Optional[str] = None
    protocols: Tuple[str, ...] = ()
    headers: Tuple[Tuple[str, str], ...] = ()
    offers: Tuple[PerMessageDeflate, ...] = ()
    max_size: Optional[int] = DEFAULT_MAX_SIZE
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    options: ConnectOptions = DEFAULT_CONNECT
    trace: Optional[TraceFunc] = None
    #: A stop request: set, it closes the connection gracefully (or abandons
    #: the attempt before Ready) and wakes the driver at once.
    stop: Optional[StopSignal] = None
    #: Called with the upgrade response (Lomond 0.3's ``on_response`` hook).
    on_response: Optional[Callable[[Response], None]] = None
    #: When the caller abandons the event loop: finish the close handshake
    #: (bounded by ``close_timeout``) rather than drop with a Close 1001.
    #: Set inside ``with WebSocket(...)``.
    close_on_exit: bool = False


class Session(Protocol):
    """What a :class:`~lomond.websocket.WebSocket` needs of the driver of its connection.

    Sends and :meth:`close` may be called from any thread.
    """

    @property
    def settings(self) -> SessionSettings:
        """The connection's fixed settings."""
        ...

    @property
    def protocol(self) -> ClientProtocol:
        """The sans-I/O protocol of the connection."""
        ...

    @property
    def state(self) -> State:
        """The protocol state (RFC 6455 sections 4 and 7)."""
        ...

    @property
    def supports_compression(self) -> bool:
        """Whether permessage-deflate was negotiated."""
        ...

    @property
    def sent_close_time(self) -> Optional[float]:
        """``time.time()`` when our Close frame was sent, or ``None``."""
        ...

    @property
    def finished(self) -> bool:
        """Whether the connection is over (its socket closed)."""
        ...

    @property
    def is_active(self) -> bool:
        """Ready, and no Close sent: sends are accepted."""
        ...

    def send_message(self, opcode: int, payload: bytes, compress: bool = True) -> None:
        """Send a whole Text or Binary message (RFC 6455 section 5.6)."""

    def send_control(self, opcode: int, data: bytes) -> None:
        """Send a Ping or a Pong (RFC 6455 section 5.5)."""

    def close(self, code: Optional[int] = Status.NORMAL, reason: Union[str, bytes] = "") -> None:
        """Start the close handshake (RFC 6455 section 7.1.2)."""

    def force_disconnect(self, reason: str = "disconnected by the application") -> None:
        """Drop the connection without a close handshake."""

    def wait_finished(self, timeout: Optional[float] = None) -> bool:
        """Wait until the connection is over; whether it is."""
        ...

    def drain(self) -> None:
        """Run a loop suspended in this thread to its end (a no-op for other drivers)."""


class Writable(Protocol):
    """The part of a transport a waiting sender needs (see :meth:`DriverBase.send_message`)."""

    def wait_writable(self, timeout: float) -> None:
        """Return once the socket may take more, it was closed, or ``timeout`` passed."""


class DriverBase:
    """The :class:`Session` interface over a :class:`~lomond.lifecycle.Lifecycle`.

    A driver subclass provides :meth:`wake` (look at the connection now,
    from any thread; lock-free), sets :attr:`transport` once the socket is
    open, and calls ``_shutdown()`` once it closed the socket. ``on_end``
    is called once, then.
    """

    # Slots: a hub keeps thousands of sessions.
    __slots__ = ("_finished", "_on_end", "lifecycle", "protocol", "settings", "transport")

    #: A send from a thread that may wait waits while more than this many
    #: bytes are queued ... (0: until the socket took everything, as a
    #: blocking write would)
    wait_above = 0
    #: ... until the queue is down to this many.
    wait_until = 0

    def __init__(
        self, settings: SessionSettings, on_end: Optional[Callable[[Any], None]] = None
    ) -> None:
        self.settings = settings
        self.protocol = ClientProtocol(
            settings.url,
            protocols=settings.protocols,
            agent=settings.agent,
            headers=settings.headers,
            offers=settings.offers,
            max_size=settings.max_size,
            auto_pong=settings.options.auto_pong,
        )
        self.lifecycle = Lifecycle(
            self.protocol,
            settings.options,
            url=settings.url.url,
            send_timeout=settings.send_timeout,
            waker=self,
            clock=time.monotonic,
            stop=settings.stop,
            trace=Tracer(settings.trace, settings.url.url) if settings.trace else None,
            on_response=settings.on_response,
        )
        #: The open socket's transport (``None`` before it is open).
        self.transport: Optional[Writable] = None
        self._on_end = on_end
        self._finished = Latch()  # the socket is closed, the connection over

    # -- what a driver provides ---------------------------------------------------

    def wake(self) -> None:
        """Make the loop look at this connection now (any thread, lock-free)."""
        raise NotImplementedError

    def _may_wait(self) -> bool:
        """Whether the calling thread may wait for the socket (the hub's own thread may not)."""
        return True

    # -- state ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The protocol state (RFC 6455 sections 4 and 7)."""
        return self.protocol.state

    @property
    def close_sent(self) -> bool:
        """Whether our Close frame was sent."""
        return self.protocol.close_sent

    @property
    def supports_compression(self) -> bool:
        """Whether permessage-deflate was negotiated."""
        return self.protocol.deflate is not None

    @property
    def sent_close_time(self) -> Optional[float]:
        """``time.time()`` when our Close frame was sent, or ``None``."""
        sent_at = self.lifecycle.close_sent_at
        if sent_at is None:
            return None
        return time.time() - (time.monotonic() - sent_at)

    @property
    def finished(self) -> bool:
        """Whether the connection is over (its socket closed)."""
        return self._finished.is_set()

    @property
    def is_active(self) -> bool:
        """Ready, and no Close sent: sends are accepted."""
        return self.lifecycle.is_active and not self._finished.is_set()

    def wait_finished(self, timeout: Optional[float] = None) -> bool:
        """Wait until the connection is over; whether it is."""
        return self._finished.wait(timeout)

    def drain(self) -> None:
        """Run a loop suspended in this thread to its end (nothing to do by default)."""

    # -- sending, from any thread ---------------------------------------------------

    def send_message(self, opcode: int, payload: bytes, compress: bool = True) -> None:
        """Send a whole Text or Binary message (RFC 6455 section 5.6).

        A thread that may wait then waits while more than :attr:`wait_above`
        bytes are queued (back-pressure: memory stays bounded), writing the
        queue itself as the socket takes it. The wait ends with
        :class:`~lomond.errors.TransportFail` after ``send_timeout`` seconds
        without progress, and with :class:`~lomond.errors.WebSocketClosed` as
        soon as the connection ends (``close()`` from another thread ends it
        within ``close_timeout``, however long this wait would be).
        """
        if self.lifecycle.send_message(opcode, payload, compress) > self.wait_above:
            if self._may_wait():
                self._wait_for_room()

    def send_control(self, opcode: int, data: bytes) -> None:
        """Send a Ping or a Pong (at most 125 bytes)."""
        self.lifecycle.send_control(opcode, data)

    def _wait_for_room(self) -> None:
        lifecycle = self.lifecycle
        transport = self.transport
        limit = self.wait_until
        while lifecycle.pending_output > limit and transport is not None:
            failure = lifecycle.send_failure
            if failure is not None:
                raise TransportFail(failure)
            reason = lifecycle.end_reason
            if reason is not None:
                raise WebSocketClosed(f"the websocket is closed: {reason}")
            remaining = lifecycle.stalled_since + self.settings.send_timeout - time.monotonic()
            if remaining <= 0:
                raise TransportFail(lifecycle.send_timed_out())
            transport.wait_writable(remaining)
            lifecycle.flush()

    def close(self, code: Optional[int] = Status.NORMAL, reason: Union[str, bytes] = "") -> None:
        """Start the close handshake now (RFC 6455 section 7.1.2), from any thread."""
        self.lifecycle.close(code, reason)

    def force_disconnect(self, reason: str = "disconnected by the application") -> None:
        """Drop the connection without a close handshake, from any thread."""
        self.lifecycle.drop(reason)

    # -- the end ----------------------------------------------------------------------

    def _shutdown(self) -> None:
        """The driver closed the socket: mark the connection over, then ``on_end``."""
        if not self._finished.set():
            return
        if self._on_end is not None:
            self._on_end(self)


__all__ = ["DriverBase", "Session", "SessionSettings", "Writable"]
