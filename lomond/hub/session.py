"""A connection driven by a :class:`~lomond.hub.reactor.Reactor`: many connections, one thread.

:class:`HubSession` is the reactor's counterpart of the threaded
:class:`~lomond.sync.session.WebsocketSession`: the same sans-I/O
:class:`~lomond.protocol.ClientProtocol` and :class:`~lomond.timers.ConnectionTimers`,
the same sends and close (:class:`~lomond.sync.session.SessionBase`), and the
same event order (Connecting, Connected, Ready, a Poll right after Ready,
..., Disconnected once the socket is closed). What differs is waiting:

* Connection setup (DNS, TCP, an optional proxy tunnel, TLS) runs on a
  small bounded pool of threads (:class:`Connector`): name resolution blocks
  anyway, and :func:`~lomond.sync.connect.open_connection` already bounds
  every step and can be aborted. The connected socket is handed to the
  reactor's thread, which writes the upgrade request and reads the response.
* Reads happen when the reactor's selector says so; timers are one entry in
  the reactor's heap per connection (its next deadline).
* Writes never block the reactor's thread: what the kernel does not take is
  buffered and flushed when the socket is writable. The buffer is bounded in
  time: a server that takes nothing for ``send_timeout`` seconds fails that
  connection only. A send from another thread writes directly when nothing
  is queued, and wakes the reactor when something is left over; it waits
  while more than :data:`HIGH_WATER` bytes are queued (back-pressure, as
  the threaded driver's blocking send gives).
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional

from .. import events
from ..constants import READ_SIZE
from ..errors import (
    ConnectError,
    TransportFail,
    WebSocketClosed,
    WebSocketUnavailable,
    describe_os_error,
)
from ..frame import Opcode
from ..protocol import State
from ..proxy import Proxy, select_proxy
from ..status import Status
from ..sync.session import SessionBase, SessionSettings, observe_event, trace_end, trace_event
from ..timers import INFINITY, Due
from ..wakeup import Wakeup
from .reactor import Reactor, Timer

log = logging.getLogger("lomond.hub")

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_READ = selectors.EVENT_READ
_READ_WRITE = selectors.EVENT_READ | selectors.EVENT_WRITE

#: Bytes per read of small messages. Smaller than the threaded driver's
#: :data:`~lomond.constants.READ_SIZE`: every message of one read is an event
#: alive until the read is handled, and fewer than the garbage collector's
#: first threshold (700 objects) keeps them from being promoted to older
#: generations, whose collections would then walk every connection's objects.
#: Large payloads still use the protocol's larger sizes.
HUB_READ_SIZE = 8 * 1024
#: Reads of one connection per turn, before the other connections' turn.
_READS_PER_TURN = 8
#: A send from a thread other than the hub's waits while more than this is
#: queued for the connection (the hub's own thread never waits): producers
#: get back-pressure, as with the threaded driver, and memory stays bounded.
HIGH_WATER = 4 * 1024 * 1024
#: ... until the queue is down to this.
LOW_WATER = 1024 * 1024

#: Where a hub connection's events go: called on the reactor's thread, must not raise.
Emit = Callable[[events.Event], None]


def check_workers(workers: object, name: str) -> None:
    """``ValueError`` unless ``workers`` is a whole number of threads, at least 1."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"{name} must be a whole number >= 1, not {workers!r}")


class Connector:
    """Opens connections on a bounded pool of threads (``workers`` at a time).

    Each worker keeps one :class:`~lomond.wakeup.Wakeup` for its whole life,
    so that a stop request interrupts a connect in progress at once, with a
    bounded number of descriptors however many connections are opened.
    """

    def __init__(self, workers: int = 8) -> None:
        check_workers(workers, "connect_workers")
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="lomond-hub-connect")
        self._local = threading.local()

    def submit(self, task: Callable[[], None]) -> None:
        """Run ``task()`` on a worker (``RuntimeError`` once shut down)."""
        self._executor.submit(task)

    def thread_wakeup(self) -> Optional[Wakeup]:
        """This worker's wake-up channel (``None`` if descriptors ran out)."""
        wakeup: Optional[Wakeup] = getattr(self._local, "wakeup", None)
        if wakeup is None:
            try:
                wakeup = self._local.wakeup = Wakeup()
            except OSError:
                return None  # out of descriptors: connects then end at their deadlines
        return wakeup

    def shutdown(self) -> None:
        """Stop accepting tasks; running ones finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=False)


class HubSession(SessionBase):
    """One connection on a :class:`~lomond.hub.reactor.Reactor` (see the module documentation).

    ``emit(event)`` receives the connection's events on the reactor's
    thread; ``on_over()`` is called after the last one. Sends and
    :meth:`close` may come from any thread.
    """

    def __init__(
        self,
        settings: SessionSettings,
        on_end: Optional[Callable[[Any], None]],
        *,
        reactor: Reactor,
        connector: Connector,
        emit: Emit,
        on_over: Callable[[], None],
    ) -> None:
        super().__init__(settings, on_end)
        self._reactor = reactor
        self._connector = connector
        self._emit = emit
        self._on_over = on_over
        self._sock: Optional[socket.socket] = None
        self._tls = False
        self._out = bytearray()
        self._writing = False
        self._stalled_since = 0.0
        self._timer: Optional[Timer] = None
        self._done = False
        self._finished_event: Optional[threading.Event] = None
        self._connect_wakeup: Optional[Wakeup] = None
        #: Set when the queue drained below LOW_WATER (created by the first waiter).
        self._room: Optional[threading.Event] = None

    # -- the Session interface ------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the connection is over (its socket closed)."""
        return self._done

    def wait_finished(self, timeout: Optional[float] = None) -> bool:
        """Wait until the connection is over; whether it is (never from the reactor's thread)."""
        with self._send_lock:
            if self._done:
                return True
            if self._finished_event is None:
                # Created only when someone waits: most connections never need one.
                self._finished_event = threading.Event()
            finished = self._finished_event
        return finished.wait(timeout)

    def drain(self) -> None:
        """Nothing to do: the reactor's thread runs the connection."""

    def wake(self) -> None:
        """Look at the connection on the reactor thread soon (a Wakeable)."""
        self._wake()

    def _wake(self) -> None:
        wakeup = self._connect_wakeup
        if wakeup is not None:
            wakeup.wake()  # a connect in progress on a worker: abort its wait
        self._reactor.call_soon_threadsafe(self._service)

    def send_message(self, opcode: int, payload: bytes, compress: bool = True) -> None:
        """Send a whole message; from another thread, wait while too much is queued.

        The hub's thread never waits (its handlers' sends are only queued).
        Another thread waits while more than :data:`HIGH_WATER` bytes are
        queued, until the hub wrote the queue down to :data:`LOW_WATER`, or
        the connection ended (a server that reads nothing for
        ``send_timeout`` seconds fails it).
        """
        super().send_message(opcode, payload, compress)
        if len(self._out) > HIGH_WATER and not self._reactor.in_loop():
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        with self._send_lock:
            if len(self._out) <= HIGH_WATER or self._done:
                return
            room = self._room
            if room is None:
                room = self._room = threading.Event()
            room.clear()
        # The stall timer ends the connection within send_timeout of the last
        # progress, and the end sets the event: this bound is only a backstop.
        room.wait(self.settings.send_timeout + 5.0)

    def _write_locked(self, data: bytes) -> None:
        """Write what the kernel takes now and queue the rest; never blocks."""
        out = self._out
        if out:
            out += data  # queued already: stay behind it
            return
        sock = self._sock
        assert sock is not None
        try:
            sent = sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as error:
            reason = f"send failed: {describe_os_error(error)}"
            self._drop(reason)
            raise TransportFail(reason) from None
        if sent < len(data):
            out += memoryview(data)[sent:]
            self._stalled_since = time.monotonic()
            self._wake()  # the reactor watches for writability now
        if self._trace is not None:
            self._trace("socket_send", bytes=len(data))

    # -- connecting (starts on the reactor's thread, runs on a worker) -------------

    def start(self) -> None:
        """Begin: Connecting, then the connection is opened on a worker (reactor's thread)."""
        stop = self.settings.stop
        if stop is not None:
            stop.attach(self)
        self._emit(events.Connecting(self.settings.url.url))
        try:
            self._connector.submit(self._open)
        except RuntimeError:
            self._opened(None, None, "the hub is shutting down")

    def _open(self) -> None:
        """On a worker: DNS, TCP, proxy, TLS; the result goes back to the reactor."""
        settings = self.settings
        url = settings.url
        wakeup = self._connector.thread_wakeup()
        if wakeup is not None:
            wakeup.drain()  # a wake-up meant for the worker's previous connection
        self._connect_wakeup = wakeup
        proxy: Optional[Proxy] = None
        sock: Optional[socket.socket] = None
        error: Optional[str] = None
        try:
            if self._aborted():
                raise ConnectError("connection aborted")
            if settings.sock is None:
                proxy = select_proxy(url, settings.proxies)
            sock = self._open_socket(proxy, wakeup)
        except ConnectError as failure:
            error = str(failure)
        except Exception as failure:  # reported as this connection's failure, not raised
            error = f"could not connect: {describe_os_error(failure)}"
        finally:
            self._connect_wakeup = None
        self._reactor.call_soon_threadsafe(lambda: self._opened(sock, proxy, error))

    def _opened(
        self, sock: Optional[socket.socket], proxy: Optional[Proxy], error: Optional[str]
    ) -> None:
        """Back on the reactor's thread with a connected socket, or why there is none."""
        if sock is not None:
            try:
                sock.setblocking(False)
                self._reactor.register(sock, _READ, self._on_io)
            except (OSError, ValueError) as failure:
                sock.close()
                sock, error = None, f"could not watch the socket: {describe_os_error(failure)}"
        if sock is None:
            reason = self._drop_reason or error or "connection failed"
            log.debug("connect to %s failed: %s", self.settings.url.url, reason)
            if self._trace is not None:
                self._trace("connect_fail", reason=reason)
            self._shutdown()
            self._emit(events.ConnectFail(reason))
            self._on_over()
            return
        with self._send_lock:
            self._sock = sock
            self._tls = isinstance(sock, ssl.SSLSocket)
            self._sendable = self._drop_reason is None
        self._emit(events.Connected(self.settings.url.url, proxy.display_url if proxy else None))
        if self._drop_reason is not None:
            # Closed (or stopped) while connecting, by a Connected handler say.
            self._end(self._drop_reason)
            return
        try:
            with self._send_lock:
                self._check_open_locked()
                self._write_locked(self.protocol.request())
        except (TransportFail, WebSocketUnavailable, WebSocketClosed) as failure:
            self._end(self._drop_reason or f"could not send the upgrade request: {failure}")
            return
        if self._trace is not None:
            self._trace("upgrade_sent")
        self._service()

    # -- I/O on the reactor's thread -------------------------------------------------

    def _on_io(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_out()
        if mask & selectors.EVENT_READ:
            self._read()
        else:
            self._service()

    def _flush_out(self) -> None:
        with self._send_lock:
            out = self._out
            sock = self._sock
            if not out or self._done or sock is None:
                return
            try:
                sent = sock.send(out)
            except _WOULD_BLOCK:
                return
            except OSError as error:
                self._drop(f"send failed: {describe_os_error(error)}")
                return
            if sent:
                del out[:sent]
                self._stalled_since = time.monotonic()
                room = self._room
                if room is not None and len(out) <= LOW_WATER:
                    room.set()

    def _read(self) -> None:
        sock = self._sock
        if sock is None or self._done:
            return
        protocol = self.protocol
        if self._out:
            self._flush_out()  # TLS may need a read before a write can go on
        Text, Binary, Ping = events.Text, events.Binary, events.Ping
        emit = self._emit
        trace = self._trace
        reads = _READS_PER_TURN
        while True:
            batch: List[events.Event]
            size = protocol.read_size
            if size <= READ_SIZE:
                size = HUB_READ_SIZE
            try:
                if self._tls:
                    with self._send_lock:
                        data = sock.recv(size)
                else:
                    data = sock.recv(size)
            except _WOULD_BLOCK:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                batch = protocol.receive_eof()
            except OSError as error:
                reason = describe_os_error(error)
                if protocol.state is State.CONNECTING:
                    reason = f"connection failed during the handshake: {reason}"
                self._end(reason)
                return
            else:
                if data:
                    if trace is not None:
                        trace("socket_recv", bytes=len(data))
                    batch = protocol.receive_data(data)
                else:
                    batch = protocol.receive_eof()
            for event in batch:
                if trace is not None:
                    trace_event(trace, event)
                emit(event)
                kind = type(event)
                if kind is Text or kind is Binary:
                    continue
                if kind is Ping:
                    self._flush_replies(include_close=False)  # the pong, before later events
                elif observe_event(event, self.timers, self.settings):
                    emit(events.Poll())  # the first Poll, right after Ready
            if protocol.replies_pending:
                self._flush_replies()
            if protocol.should_close:
                self._end()
                return
            if self._done:
                break
            if self._tls and sock.pending():  # type: ignore[attr-defined]
                continue  # decrypted bytes that select() cannot see
            reads -= 1
            if not data or len(data) < size or not reads:
                break  # drained, or another connection's turn
        self._service()

    def _service(self) -> None:
        """Everything but reading: stop, drop, timers, the write buffer, the next deadline."""
        if self._done or self._sock is None:
            return  # over, or still connecting on a worker (which reports back)
        protocol = self.protocol
        stop = self.settings.stop
        if stop is not None and stop.is_set() and not protocol.close_sent:
            self.close(Status.NORMAL, "goodbye")
        if self._drop_reason is not None:
            self._end(self._drop_reason)
            return
        timers = self.timers
        options = self.settings.options
        now = time.monotonic()
        due = timers.due(protocol, now)
        while due is not None:
            if due is Due.HANDSHAKE_TIMEOUT:
                limit = options.handshake_timeout
                self._end(f"no response to the upgrade request within {limit:g} s")
                return
            if due is Due.CLOSE_TIMEOUT:
                self._end(
                    "close timeout: the server did not complete the close handshake",
                    graceful=protocol.handshake_complete,
                )
                return
            if due is Due.UNRESPONSIVE:
                self._emit(events.Unresponsive())
                self._end(f"unresponsive: no pong within {options.ping_timeout:g} s")
                return
            if due is Due.POLL:
                self._emit(events.Poll())
            elif protocol.state is State.OPEN and not protocol.close_sent:  # Due.PING
                try:
                    self.send_control(Opcode.PING, b"")
                except (TransportFail, WebSocketUnavailable, WebSocketClosed):
                    pass  # _drop_reason is set
            if self._drop_reason is not None:
                self._end(self._drop_reason)
                return
            if self._done:
                return
            now = time.monotonic()  # a Poll handler may have taken a while
            due = timers.due(protocol, now)
        deadline = timers.deadline(protocol)
        if self._out:
            send_timeout = self.settings.send_timeout
            if now - self._stalled_since >= send_timeout:
                self._end(
                    f"send timed out after {send_timeout:g} s: the server is not reading"
                )
                return
            deadline = min(deadline, self._stalled_since + send_timeout)
            if not self._writing:
                self._writing = True
                self._reactor.modify(self._sock, _READ_WRITE, self._on_io)
        elif self._writing:
            self._writing = False
            self._reactor.modify(self._sock, _READ, self._on_io)
        self._schedule(deadline)

    def _schedule(self, when: float) -> None:
        timer = self._timer
        if timer is not None and not timer.cancelled:
            if timer.when == when:
                return
            timer.cancel()
        self._timer = None if when == INFINITY else self._reactor.call_at(when, self._service)

    # -- the end ------------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self._done:
            return
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        stop = self.settings.stop
        if stop is not None:
            stop.detach(self)
        with self._send_lock:
            sock = self._sock
            if sock is not None:
                self._reactor.unregister(sock)
                try:
                    sock.close()
                except OSError:
                    pass
            self._sendable = False
            self._done = True
            self._out = bytearray()
            finished = self._finished_event
            room = self._room
        if room is not None:
            room.set()  # a waiting sender: the connection is over
        if finished is not None:
            finished.set()
        if self._on_end is not None:
            self._on_end(self)

    def _end(self, reason: Optional[str] = None, graceful: bool = False) -> None:
        """Close the socket, then report the end: a Disconnected handler sees it gone."""
        self._shutdown()
        for event in self.protocol.finish(reason, graceful):
            trace_end(self._trace, event)
            self._emit(event)
        self._on_over()


__all__ = [
    "HIGH_WATER", "HUB_READ_SIZE", "LOW_WATER", "Connector", "Emit", "HubSession",
    "check_workers",
]
