"""The threaded driver: runs one connection in the caller's thread.

A :class:`WebsocketSession` only moves bytes and runs timers. It opens the
connection (:func:`~lomond.sync.connect.open_connection`), feeds what the
socket delivers to the sans-I/O :class:`~lomond.protocol.ClientProtocol`,
yields the events that come back, writes the protocol's own replies once
those events were handled, and asks :class:`~lomond.timers.ConnectionTimers`
what is due. Every rule of RFC 6455 (answering pings, echoing the server's
Close, failing the connection, reading end-of-stream) lives in the protocol.

It waits in one ``select()`` on the socket and a :class:`~lomond.wakeup.Wakeup`,
with a timeout that is the connection's next timer: an idle connection wakes
for its own timers and its own bytes only. ``close()``, a failed send and a
:class:`~lomond.wakeup.StopSignal` wake it at once.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import (
    Any,
    Callable,
    Iterator,
    List,
    Mapping,
    NoReturn,
    Optional,
    Protocol,
    Tuple,
    Union,
)

import attrs

from .. import events
from ..compression import PerMessageDeflate
from ..errors import (
    ConnectError,
    TransportFail,
    WebSocketClosed,
    WebSocketUnavailable,
    describe_os_error,
)
from ..frame import Opcode
from ..handshake import URL
from ..options import DEFAULT_CONNECT, ConnectOptions, SocketOption
from ..protocol import ClientProtocol, State
from ..proxy import Proxy, select_proxy
from ..response import Response
from ..status import Status
from ..timers import INFINITY, ConnectionTimers, Due
from ..trace import TraceFunc, Tracer
from ..wakeup import StopSignal, Wakeup
from .connect import open_connection
from .transport import Transport

log = logging.getLogger("lomond.session")


@attrs.frozen(kw_only=True)
class SessionSettings:
    """Everything one connection needs, fixed when it starts.

    Built by :class:`~lomond.websocket.WebSocket` for each connection; a
    session reads nothing else from it.
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
    max_size: Optional[int] = None
    send_timeout: float = 30.0
    options: ConnectOptions = DEFAULT_CONNECT
    trace: Optional[TraceFunc] = None
    #: A stop request: set, it closes the connection gracefully (or abandons
    #: the attempt before Ready) and wakes the session at once.
    stop: Optional[StopSignal] = None
    #: Called with the upgrade response (Lomond 0.3's ``on_response`` hook).
    on_response: Optional[Callable[[Response], None]] = None
    #: When the caller abandons the event loop: finish the close handshake
    #: (bounded by ``close_timeout``) rather than drop with a Close 1001.
    #: Set inside ``with WebSocket(...)``.
    close_on_exit: bool = False


class Session(Protocol):
    """What a :class:`~lomond.websocket.WebSocket` needs of the driver of its connection.

    :class:`WebsocketSession` (one connection in the caller's thread) and
    :class:`~lomond.hub.session.HubSession` (many connections on one
    :class:`~lomond.hub.reactor.Reactor` thread) both provide it. Sends and
    :meth:`close` may be called from any thread.
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


def observe_event(event: events.Event, timers: ConnectionTimers, settings: SessionSettings) -> bool:
    """What every driver does with an event after its handlers ran; whether a Poll is due now.

    Timers hear of pongs and Ready, and ``on_response`` gets the upgrade
    response. Pings are the driver's (it writes the pong before later events
    are delivered); tracing is :func:`trace_event`'s, before delivery.
    """
    if isinstance(event, events.Pong):
        timers.pong_received()
    elif isinstance(event, events.Ready):
        if settings.on_response is not None:
            settings.on_response(event.response)
        return timers.ready(time.monotonic())
    elif isinstance(event, events.Rejected):
        if settings.on_response is not None:
            settings.on_response(event.response)
    return False


def trace_event(trace: Tracer, event: events.Event) -> None:
    """The trace record of a received event, before its handlers run."""
    if isinstance(event, events.Text):
        trace("message_text", length=len(event.text))
    elif isinstance(event, events.Binary):
        trace("message_binary", length=len(event.data))
    elif isinstance(event, events.Ready):
        trace("handshake_ready", status=event.response.status_code,
              protocol=event.protocol, extensions=sorted(event.extensions))
    elif isinstance(event, events.Rejected):
        trace("handshake_rejected", status=event.response.status_code, reason=event.reason)
    elif isinstance(event, (events.Closing, events.Closed)):
        trace("close_received", code=event.code, reason=event.reason)


def trace_end(trace: Optional[Tracer], event: events.Event) -> None:
    """Trace an event of :meth:`~lomond.protocol.ClientProtocol.finish` (the end)."""
    if trace is not None:
        if isinstance(event, events.ConnectFail):
            trace("connect_fail", reason=event.reason)
        elif isinstance(event, events.Disconnected):
            trace("disconnected", reason=event.reason, graceful=event.graceful)


class SessionBase:
    """The part of a driver that does not depend on how it waits: state, sends, close.

    A driver subclasses it and provides ``_write_locked`` (write or buffer
    bytes, under the send lock), ``_wake`` (make its loop look at the
    connection now) and :attr:`finished`, and sets ``_sendable`` (under the
    send lock) once its socket is connected.
    """

    def __init__(
        self,
        settings: SessionSettings,
        on_end: Optional[Callable[[Any], None]] = None,
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
        self.timers = ConnectionTimers(settings.options)
        self._on_end = on_end
        self._send_lock = threading.Lock()
        #: Why the loop must drop the connection (set from any thread).
        self._drop_reason: Optional[str] = None
        self._trace = Tracer(settings.trace, settings.url.url) if settings.trace else None
        self._sent_close_time: Optional[float] = None
        # True while a socket is connected and the connection is neither
        # dropped nor over: one attribute for the send path to test. A driver
        # sets it when its socket is attached; _drop and the end clear it.
        self._sendable = False

    # -- what a driver provides ---------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the connection is over (its socket closed)."""
        raise NotImplementedError

    def _write_locked(self, data: bytes) -> None:
        """Write under the send lock; a failure drops the connection and raises TransportFail."""
        raise NotImplementedError

    def _wake(self) -> None:
        """Make the loop look at this connection now (from any thread)."""
        raise NotImplementedError

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
        return self._sent_close_time

    @property
    def is_active(self) -> bool:
        """Ready, and no Close sent: sends are accepted."""
        return (
            self.protocol.state is State.OPEN
            and not self.protocol.close_sent
            and self._drop_reason is None
            and not self.finished
        )

    # -- sending, from any thread ---------------------------------------------

    def _check_open_locked(self) -> None:
        if not self._sendable:
            self._refuse_locked()

    def _refuse_locked(self) -> NoReturn:
        """Raise why nothing can be sent now."""
        if self._drop_reason is not None or self.finished:
            # Being dropped (a failed send, for one): another write could
            # only block for a further send_timeout on a dead connection.
            raise WebSocketClosed("the websocket is closed")
        raise WebSocketUnavailable("the websocket is not connected yet")

    def send_message(self, opcode: int, payload: bytes, compress: bool = True) -> None:
        """Send a whole Text or Binary message (RFC 6455 section 5.6), atomically.

        One lock covers building and writing, so frames from different
        threads stay whole and in the compressor's order.
        """
        with self._send_lock:
            if not self._sendable:
                self._refuse_locked()
            self._write_locked(self.protocol.send_data(opcode, payload, compress))
        if self._trace is not None:
            stage = "send_text" if opcode == Opcode.TEXT else "send_binary"
            self._trace(stage, length=len(payload), compress=compress)

    def send_control(self, opcode: int, data: bytes) -> None:
        """Send a Ping or Pong (at most 125 bytes)."""
        with self._send_lock:
            if not self._sendable:
                self._refuse_locked()
            if opcode == Opcode.PING:
                frame = self.protocol.send_ping(data)
            else:
                frame = self.protocol.send_pong(data)
            self._write_locked(frame)
            if opcode == Opcode.PING:
                self.timers.ping_sent(time.monotonic())
        if self._trace is not None:
            self._trace("send_ping" if opcode == Opcode.PING else "send_pong", length=len(data))

    def close(self, code: Optional[int] = Status.NORMAL, reason: Union[str, bytes] = "") -> None:
        """Start the close handshake now (RFC 6455 section 7.1.2), from any thread.

        Idempotent. Before the upgrade completed there is nothing to close
        gracefully, so the attempt is abandoned instead.
        """
        if self._trace is not None:
            self._trace("close_requested", code=code, reason=reason)
        with self._send_lock:
            protocol = self.protocol
            if (
                self.finished
                or self._drop_reason is not None
                or protocol.close_sent
                or protocol.should_close
            ):
                return  # closing, or ending already
            if protocol.state is State.CONNECTING or not self._sendable:
                self._drop("closed before the connection was ready")
                return
            data = protocol.send_close(code, reason)
            self._sent_close_time = time.time()
            try:
                self._write_locked(data)
            except TransportFail:
                pass  # _write_locked dropped the connection
        self._wake()

    def force_disconnect(self, reason: str = "disconnected by the application") -> None:
        """Drop the connection without a close handshake, from any thread."""
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        self._sendable = False
        if self._drop_reason is None:
            self._drop_reason = reason
        self._wake()

    def _aborted(self) -> bool:
        stop = self.settings.stop
        if stop is not None and stop.is_set():
            self._drop("stopped before the connection was ready")
        return self._drop_reason is not None

    def _open_socket(self, proxy: Optional[Proxy], wakeup: Optional[Wakeup]) -> socket.socket:
        """DNS, TCP, ``proxy``'s tunnel and TLS (:func:`~lomond.sync.connect.open_connection`).

        The step both drivers share; ``wakeup`` interrupts it. Raises
        :class:`~lomond.errors.ConnectError`.
        """
        settings = self.settings
        if self._trace is not None:
            self._trace("connect_start", proxy=proxy.display_url if proxy else None)
        return open_connection(
            settings.url,
            proxy=proxy,
            ssl_context=settings.ssl_context,
            connect_timeout=settings.options.connect_timeout,
            handshake_timeout=settings.options.handshake_timeout,
            source_address=settings.source_address,
            socket_options=settings.socket_options,
            sock=settings.sock,
            agent=settings.agent,
            wakeup=wakeup,
            aborted=self._aborted,
            on_handshake=self.timers.handshake_started,
            trace=self._trace,
        )

    def _flush_replies(self, include_close: bool = True) -> None:
        """Write what the protocol owes the server (pongs, the Close echo, a failing Close)."""
        with self._send_lock:
            data = self.protocol.data_to_send(include_close)
            if data and self._drop_reason is None and not self.finished:
                try:
                    self._write_locked(data)
                except TransportFail:
                    pass  # _write_locked dropped the connection
                else:
                    if self.protocol.close_sent and self._sent_close_time is None:
                        self._sent_close_time = time.time()


class WebsocketSession(SessionBase):
    """Drives one connection; :meth:`lomond.websocket.WebSocket.connect` creates it.

    Sends may come from any thread; :meth:`run` runs in the caller's thread.
    ``on_end`` is called once, from the loop's thread, when the connection
    is over and its socket closed.
    """

    def __init__(
        self,
        settings: SessionSettings,
        on_end: Optional[Callable[[WebsocketSession], None]] = None,
    ) -> None:
        super().__init__(settings, on_end)
        self._wakeup = Wakeup()
        self._transport: Optional[Transport] = None
        self._finished = threading.Event()
        self._done = False  # _finished as a plain attribute, for the hot paths
        self._events: Optional[Iterator[events.Event]] = None

    @property
    def finished(self) -> bool:
        """Whether the connection is over (its socket closed)."""
        return self._done

    @property
    def socket(self) -> Optional[socket.socket]:
        """The connected socket (``None`` before it connects and once it is closed)."""
        transport = self._transport
        return None if transport is None or transport.closed else transport.sock

    def wait_finished(self, timeout: Optional[float] = None) -> bool:
        """Wait until the connection is over; whether it is."""
        return self._finished.wait(timeout)

    def _wake(self) -> None:
        self._wakeup.wake()

    def _write_locked(self, data: bytes) -> None:
        """Write under the send lock; a failure drops the connection and is raised."""
        transport = self._transport
        assert transport is not None
        try:
            transport.write(data)
        except TransportFail as error:
            self._drop(str(error))
            raise
        if self._trace is not None:
            self._trace("socket_send", bytes=len(data))

    # -- the loop -------------------------------------------------------------

    def run(self) -> Iterator[events.Event]:
        """Connect and yield the connection's events (see :mod:`lomond.events` for the order).

        Nothing happens until the first event is requested.
        """
        if self._events is None:
            self._events = self._run()
        return self._events

    def drain(self) -> None:
        """Run a suspended event loop to its end, discarding events (after :meth:`close`).

        For a context manager's exit: the close handshake is finished within
        ``close_timeout``. Does nothing if the loop runs in another thread.
        """
        generator = self._events
        if generator is None or getattr(generator, "gi_running", False):
            return
        for _ in generator:
            pass

    def _run(self) -> Iterator[events.Event]:
        settings = self.settings
        url = settings.url
        stop = settings.stop
        if stop is not None:
            stop.attach(self._wakeup)
        try:
            yield events.Connecting(url.url)
            proxy: Optional[Proxy] = None
            try:
                # A pre-connected socket already leads to the server: no proxy.
                if settings.sock is None:
                    proxy = select_proxy(url, settings.proxies)
                sock = self._open_socket(proxy, self._wakeup)
            except ConnectError as error:
                reason = self._drop_reason or str(error)
                log.debug("connect to %s failed: %s", url.url, reason)
                if self._trace is not None:
                    self._trace("connect_fail", reason=reason)
                self._shutdown()
                yield events.ConnectFail(reason)
                return
            with self._send_lock:
                self._transport = Transport(sock, self._wakeup, settings.send_timeout)
                self._sendable = self._drop_reason is None
            yield events.Connected(url.url, proxy.display_url if proxy else None)
            yield from self._run_connected()
        except GeneratorExit:
            # The caller stopped iterating (its loop body raised, or it broke
            # out). Inside ``with WebSocket(...)`` the close handshake is
            # finished, bounded by close_timeout; otherwise say goodbye with a
            # best-effort Close 1001 instead of vanishing, and await nothing.
            if settings.close_on_exit and self.is_active:
                self._close_gracefully()
            else:
                self._abandon()
            raise
        finally:
            if stop is not None:
                stop.detach(self._wakeup)
            self._shutdown()

    def _close_gracefully(self) -> None:
        """Close (1000) and run the loop to its end, discarding the events."""
        self.close(Status.NORMAL, "goodbye")
        try:
            for _ in self._loop():
                pass
        except Exception:  # the loop's own failures end in events; this is a hook's
            log.exception("error while closing %s on leaving a with block", self.settings.url)

    def _abandon(self) -> None:
        with self._send_lock:
            protocol = self.protocol
            transport = self._transport
            if (
                transport is None
                or transport.closed
                or self._drop_reason is not None
                or protocol.state is not State.OPEN
                or protocol.close_sent
            ):
                return
            data = protocol.send_close(Status.GOING_AWAY, "going away")
            self._sent_close_time = time.time()
            transport.try_write(data)

    def _shutdown(self) -> None:
        if self.finished:
            return
        with self._send_lock:
            if self._transport is not None:
                self._transport.close()
            # The wake-up pair is left to the garbage collector: a thread may
            # still be about to wake() it, and closing it under that thread
            # could hand its descriptor number to a new file.
            self._sendable = False
            self._done = True
            self._finished.set()
        if self._on_end is not None:
            self._on_end(self)

    def _end(self, reason: Optional[str] = None, graceful: bool = False) -> Iterator[events.Event]:
        """Close the socket, then report the end: a Disconnected handler sees it gone."""
        self._shutdown()
        for event in self.protocol.finish(reason, graceful):
            trace_end(self._trace, event)
            yield event

    def _observe(self, event: events.Event) -> bool:
        """Act on the few events the driver cares about, after their handlers ran.

        Returns whether a Poll is due at once (right after Ready).
        """
        if isinstance(event, events.Ping):
            self._flush_replies(include_close=False)  # the pong, before later events
            return False
        return observe_event(event, self.timers, self.settings)

    def _run_connected(self) -> Iterator[events.Event]:
        protocol = self.protocol
        trace = self._trace
        if self._drop_reason is not None:
            # Closed (or stopped) while connecting, by a Connected handler say.
            yield from self._end(self._drop_reason)
            return
        try:
            with self._send_lock:
                self._check_open_locked()
                self._write_locked(protocol.request())
        except (TransportFail, WebSocketUnavailable) as error:
            yield from self._end(f"could not send the upgrade request: {error}")
            return
        if trace is not None:
            trace("upgrade_sent")
        yield from self._loop()

    def _loop(self) -> Iterator[events.Event]:
        """Receive, dispatch, reply and run the timers until the connection ends."""
        protocol = self.protocol
        transport = self._transport
        timers = self.timers
        trace = self._trace
        stop = self.settings.stop
        assert transport is not None
        Text, Binary = events.Text, events.Binary
        observe = self._observe
        while True:
            if stop is not None and stop.is_set() and not protocol.close_sent:
                self.close(Status.NORMAL, "goodbye")
            if self._drop_reason is not None:
                yield from self._end(self._drop_reason)
                return
            # Read first and wait only when nothing is buffered: while data is
            # streaming in, this saves a select() call per read.
            try:
                data = transport.recv(protocol.read_size)
            except OSError as error:
                reason = describe_os_error(error)
                if protocol.state is State.CONNECTING:
                    reason = f"connection failed during the handshake: {reason}"
                yield from self._end(reason)
                return
            if data is None:
                batch: List[events.Event] = protocol.receive_eof()
            elif data:
                if trace is not None:
                    trace("socket_recv", bytes=len(data))
                batch = protocol.receive_data(data)
            else:
                batch = []
            for event in batch:
                if trace is not None:
                    trace_event(trace, event)
                yield event
                kind = type(event)
                if kind is not Text and kind is not Binary and observe(event):
                    yield events.Poll()  # the first Poll, right after Ready
            if protocol.replies_pending:
                self._flush_replies()
            if protocol.should_close:
                yield from self._end()
                return
            # -- timers
            now: float = time.monotonic()
            due = timers.due(protocol, now)
            while due is not None:
                if due is Due.HANDSHAKE_TIMEOUT:
                    limit = self.settings.options.handshake_timeout
                    yield from self._end(f"no response to the upgrade request within {limit:g} s")
                    return
                if due is Due.CLOSE_TIMEOUT:
                    yield from self._end(
                        "close timeout: the server did not complete the close handshake",
                        graceful=protocol.handshake_complete,
                    )
                    return
                if due is Due.UNRESPONSIVE:
                    yield events.Unresponsive()
                    yield from self._end(
                        f"unresponsive: no pong within {self.settings.options.ping_timeout:g} s"
                    )
                    return
                if due is Due.POLL:
                    yield events.Poll()
                elif protocol.state is State.OPEN and not protocol.close_sent:  # Due.PING
                    try:
                        self.send_control(Opcode.PING, b"")
                    except (TransportFail, WebSocketUnavailable):
                        break  # _drop_reason is set; handled at the loop top
                if self._drop_reason is not None:
                    break
                now = time.monotonic()  # a Poll handler may have taken a while
                due = timers.due(protocol, now)
            if data:
                continue  # more may be buffered already: read again before waiting
            deadline = timers.deadline(protocol)
            timeout = None if deadline == INFINITY else max(0.0, deadline - now)
            transport.wait_readable(timeout)


__all__ = [
    "Session", "SessionBase", "SessionSettings", "WebsocketSession", "observe_event",
    "trace_end", "trace_event",
]
