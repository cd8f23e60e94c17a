"""The session: runs one connection, moving bytes between socket and protocol.

It owns the socket, the timers (poll, auto-ping, ping timeout, close timeout,
handshake timeout) and the one lock that serializes sends, and turns the
protocol's events into the documented event sequence. Policy that involves
I/O lives here too: answering pings, echoing the server's Close, and failing
the connection after a protocol violation.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from . import events
from .connection import open_connection
from .errors import (
    ConnectError,
    TransportFail,
    WebSocketClosed,
    WebSocketError,
    WebSocketUnavailable,
)
from .protocol import ClientProtocol, State
from .status import Status
from .transport import Transport, Wakeup, describe_os_error

if TYPE_CHECKING:
    from .websocket import WebSocket

log = logging.getLogger("lomond.session")

_INFINITY = float("inf")

#: Seconds between looks at a persist() ``exit_event`` while connected.
EXIT_CHECK_INTERVAL = 0.05


class WebsocketSession:
    """Drives one connection of a :class:`~lomond.websocket.WebSocket`.

    Created by :meth:`WebSocket.connect`; not meant to be used directly.
    Sends may come from any thread; :meth:`run` runs in the caller's thread.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.protocol = ClientProtocol(
            websocket.url,
            protocols=websocket.protocols,
            agent=websocket.agent,
            headers=websocket.headers,
            offers=websocket.offers,
            max_size=websocket.max_size,
        )
        self._send_lock = threading.Lock()
        self._wakeup = Wakeup()
        self._transport: Optional[Transport] = None
        #: Why the loop must drop the connection (set from any thread).
        self._drop_reason: Optional[str] = None
        self._close_timeout: Optional[float] = None
        self._close_deadline = _INFINITY
        self._handshake_started: Optional[float] = None
        #: ``time.time()`` when our Close frame was sent.
        self.sent_close_time: Optional[float] = None
        self._ping_sent_at: Optional[float] = None
        self._exit_event: Optional[threading.Event] = None
        self.finished = False

    # -- sending, from any thread -------------------------------------------

    def send(self, build: Callable[..., bytes], *args: Any) -> None:
        """Build frame bytes with a protocol method and write them, atomically.

        Holding one lock across both steps keeps frames from different
        threads whole and in the compressor's order.
        """
        with self._send_lock:
            transport = self._transport
            if self._drop_reason is not None:
                # Being dropped (a failed send, for one): another write could
                # only block for a further send_timeout on a dead connection.
                raise WebSocketClosed("the websocket is closed")
            if transport is None or transport.closed:
                if self.finished:
                    raise WebSocketClosed("the websocket is closed")
                raise WebSocketUnavailable("the websocket is not connected yet")
            data = build(*args)
            try:
                transport.write(data)
            except TransportFail as error:
                self._drop(str(error))
                raise

    def send_ping(self, data: bytes) -> None:
        """Send a Ping, remembering when the oldest unanswered one left."""
        self.send(self.protocol.send_ping, data)
        if self._ping_sent_at is None:
            self._ping_sent_at = time.monotonic()

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake now (RFC 6455 section 7.1.2), from any thread.

        Idempotent. Before the handshake completes there is nothing to close
        gracefully, so the connection attempt is abandoned instead.
        """
        with self._send_lock:
            protocol = self.protocol
            if (
                self.finished
                or self._drop_reason is not None
                or protocol.close_sent
                or protocol.failure is not None
            ):
                return
            if protocol.state is State.CONNECTING or self._transport is None:
                self._drop("closed before the connection was ready")
                return
            data = protocol.send_close(code, reason)
            self.sent_close_time = time.time()
            if self._close_timeout:
                self._close_deadline = time.monotonic() + self._close_timeout
            try:
                self._transport.write(data)
            except TransportFail as error:
                self._drop(str(error))
        self._wakeup.wake()

    def force_disconnect(self, reason: str = "disconnected by the application") -> None:
        """Drop the connection without a close handshake, from any thread."""
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        if self._drop_reason is None:
            self._drop_reason = reason
        self._wakeup.wake()

    # -- the loop ---------------------------------------------------------------

    def run(
        self,
        poll: float = 5.0,
        ping_rate: float = 30.0,
        ping_timeout: Optional[float] = None,
        auto_pong: bool = True,
        close_timeout: Optional[float] = 30.0,
        connect_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        exit_event: Optional[threading.Event] = None,
    ) -> Iterator[events.Event]:
        """Connect and yield the connection's events (see :mod:`lomond.events` for the order)."""
        websocket = self.websocket
        url = websocket.url
        self._close_timeout = close_timeout or None
        self._exit_event = exit_event
        try:
            yield events.Connecting(url.url)
            given = websocket.take_socket()
            proxy = None
            try:
                # A pre-connected socket already leads to the server: no proxy.
                proxy = websocket.proxy if given is None else None
                sock = open_connection(
                    url,
                    proxy=proxy,
                    ssl_context=websocket.ssl_context,
                    connect_timeout=connect_timeout,
                    handshake_timeout=handshake_timeout,
                    source_address=websocket.source_address,
                    socket_options=websocket.socket_options,
                    sock=given,
                    agent=websocket.agent,
                    wakeup=self._wakeup,
                    aborted=self._aborted,
                    on_handshake=self._on_handshake_start,
                )
            except ConnectError as error:
                reason = self._drop_reason or str(error)
                log.debug("connect to %s failed: %s", url.url, reason)
                self._shutdown()
                yield events.ConnectFail(reason)
                return
            with self._send_lock:
                self._transport = Transport(sock, self._wakeup, websocket.send_timeout)
            yield events.Connected(url.url, proxy.display_url if proxy else None)
            yield from self._run_connected(
                poll, ping_rate, ping_timeout, auto_pong, handshake_timeout
            )
        except GeneratorExit:
            # The caller stopped iterating (its loop body raised, or it broke
            # out): say goodbye with a best-effort Close 1001 instead of
            # vanishing. The socket is closed right after; nothing is awaited.
            self._abandon()
            raise
        finally:
            self._shutdown()

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
            try:
                data = protocol.send_close(Status.GOING_AWAY, "going away")
            except WebSocketError:
                return
            self.sent_close_time = time.time()
            transport.try_write(data)

    def _on_handshake_start(self, started: float) -> None:
        self._handshake_started = started

    def _aborted(self) -> bool:
        exit_event = self._exit_event
        if exit_event is not None and exit_event.is_set():
            self._drop("stopped before the connection was ready")
        return self._drop_reason is not None

    def _shutdown(self) -> None:
        if self.finished:
            return
        with self._send_lock:
            self.finished = True
            if self._transport is not None:
                self._transport.close()
            self._wakeup.close()
        self.websocket._on_session_end(self)

    def _disconnected(self, reason: str, graceful: bool) -> events.Disconnected:
        """Close the socket, then report it: a handler for Disconnected sees it gone."""
        self._shutdown()
        return events.Disconnected(reason, graceful=graceful)

    def _failed_to_connect(self, reason: str) -> Iterator[events.Event]:
        yield events.ConnectFail(reason)
        yield self._disconnected(reason, graceful=False)

    def _run_connected(
        self,
        poll: float,
        ping_rate: float,
        ping_timeout: Optional[float],
        auto_pong: bool,
        handshake_timeout: float,
    ) -> Iterator[events.Event]:
        protocol = self.protocol
        transport = self._transport
        assert transport is not None
        try:
            self.send(protocol.request)
        except (TransportFail, WebSocketUnavailable) as error:
            yield from self._failed_to_connect(f"could not send the upgrade request: {error}")
            return
        # One budget for TLS and the upgrade together, from when TLS started.
        handshake_deadline = (self._handshake_started or time.monotonic()) + handshake_timeout
        next_poll = next_ping = _INFINITY
        exit_event = self._exit_event
        Ready, Ping, Pong = events.Ready, events.Ping, events.Pong
        while True:
            if exit_event is not None and exit_event.is_set() and not protocol.close_sent:
                self.close(Status.NORMAL, "goodbye")
            if self._drop_reason is not None:
                if protocol.state is State.CONNECTING:
                    yield from self._failed_to_connect(self._drop_reason)
                else:
                    yield self._disconnected(self._drop_reason, graceful=False)
                return
            # Read first and wait only when nothing is buffered: while data is
            # streaming in, this saves a select() call per read.
            try:
                data = transport.recv(protocol.read_size)
            except OSError as error:
                reason = describe_os_error(error)
                if protocol.state is State.CONNECTING:
                    yield from self._failed_to_connect(
                        f"connection failed during the handshake: {reason}"
                    )
                else:
                    yield self._disconnected(reason, graceful=False)
                return
            if data is None:
                yield from self._on_eof()
                return
            if data:
                for event in protocol.receive_data(data):
                    yield event
                    kind = type(event)
                    if kind is events.Text or kind is events.Binary:
                        continue
                    if kind is Ping:
                        if auto_pong and not protocol.close_received:
                            try:
                                self.send(protocol.answer_ping, event.data)  # type: ignore[attr-defined]
                            except (TransportFail, WebSocketUnavailable):
                                pass  # the drop is reported at the top of the loop
                    elif kind is Pong:
                        self._ping_sent_at = None
                    elif kind is Ready:
                        now = time.monotonic()
                        next_poll = now + poll if poll else _INFINITY
                        next_ping = now + ping_rate if ping_rate else _INFINITY
                    elif kind is events.Closing:
                        self._echo_close(event)  # type: ignore[arg-type]
                    elif kind is events.ProtocolError:
                        yield from self._on_protocol_error(event)  # type: ignore[arg-type]
                        return
                    elif kind is events.Rejected:
                        yield self._disconnected("handshake rejected", graceful=False)
                        return
                    elif kind is events.ConnectFail:
                        yield self._disconnected(event.reason, graceful=False)  # type: ignore[attr-defined]
                        return
            # -- timers
            now = time.monotonic()
            if protocol.state is State.CONNECTING:
                if now >= handshake_deadline:
                    yield from self._failed_to_connect(
                        f"no response to the upgrade request within {handshake_timeout:g} s"
                    )
                    return
                deadline = handshake_deadline
            else:
                if now >= self._close_deadline:
                    yield self._disconnected(
                        "close timeout: the server did not complete the close handshake",
                        graceful=protocol.handshake_complete,
                    )
                    return
                if protocol.close_received:
                    # The close handshake is done or being answered: only
                    # the TCP close (or the close timeout) comes next, so no
                    # Poll or Unresponsive between Closing/Closed and
                    # Disconnected.
                    next_poll = next_ping = _INFINITY
                    self._ping_sent_at = None
                elif protocol.close_sent:
                    next_ping = _INFINITY
                    self._ping_sent_at = None  # close_timeout bounds the wait now
                if (
                    ping_timeout
                    and self._ping_sent_at is not None
                    and now - self._ping_sent_at >= ping_timeout
                ):
                    yield events.Unresponsive()
                    yield self._disconnected(
                        f"unresponsive: no pong within {ping_timeout:g} s", graceful=False
                    )
                    return
                if now >= next_poll:
                    next_poll = now + poll
                    yield events.Poll()
                    continue  # the handler may have taken a while: re-read the clock
                if now >= next_ping:
                    next_ping = now + ping_rate
                    if protocol.state is State.OPEN and not protocol.close_sent:
                        try:
                            self.send_ping(b"")
                        except (TransportFail, WebSocketUnavailable):
                            continue  # _drop_reason is set; handled at the loop top
                deadline = min(next_poll, next_ping, self._close_deadline)
                if ping_timeout and self._ping_sent_at is not None:
                    deadline = min(deadline, self._ping_sent_at + ping_timeout)
            if data:
                continue  # more may be buffered already: read again before waiting
            timeout = None if deadline == _INFINITY else max(0.0, deadline - now)
            if exit_event is not None and not protocol.close_sent:
                # A threading.Event cannot wake a selector: look at it often.
                if timeout is None or timeout > EXIT_CHECK_INTERVAL:
                    timeout = EXIT_CHECK_INTERVAL
            transport.wait_readable(timeout)

    def _echo_close(self, event: events.Closing) -> None:
        # RFC 6455 section 5.5.1: reply with a Close, echoing the status code.
        # The handler for Closing has already run, so it could still send.
        with self._send_lock:
            protocol = self.protocol
            if not protocol.close_sent and self._transport is not None:
                data = protocol.send_close(event.code, "")
                self.sent_close_time = time.time()
                try:
                    self._transport.write(data)
                except TransportFail as error:
                    self._drop(str(error))
        if self._close_timeout:
            self._close_deadline = min(
                self._close_deadline, time.monotonic() + self._close_timeout
            )

    def _on_protocol_error(self, event: events.ProtocolError) -> Iterator[events.Event]:
        # RFC 6455 section 7.1.7: fail the connection: send a Close with the
        # error's code unless one was sent already, then drop without waiting.
        with self._send_lock:
            data = self.protocol.fail_close(event.code, event.error)
            if data and self._transport is not None:
                try:
                    self._transport.write(data)
                except TransportFail:
                    pass
        yield self._disconnected(f"protocol error: {event.error}", graceful=False)

    def _on_eof(self) -> Iterator[events.Event]:
        protocol = self.protocol
        if protocol.state is State.CONNECTING:
            yield from self._failed_to_connect(
                "server closed the connection during the handshake"
            )
        elif protocol.handshake_complete:
            yield self._disconnected("closed", graceful=True)
        elif protocol.close_sent:
            yield self._disconnected(
                "server closed the connection without answering our close", graceful=False
            )
        else:
            yield self._disconnected(
                "server closed the connection without a close frame", graceful=False
            )


__all__ = ["WebsocketSession"]
