"""One connection on a :class:`~lomond.hub.reactor.Reactor`: many connections, one thread.

:class:`HubSession` is the reactor's counterpart of the threaded
:class:`~lomond.sync.session.WebsocketSession`, over the same
:class:`~lomond.lifecycle.Lifecycle` (hence the same events in the same
order, the same timers and the same Close frames). What differs is waiting:

* The socket is opened on a worker of the hub's
  :class:`~lomond.hub.connector.Connector` (name resolution blocks); the
  connected socket comes back to the reactor's thread.
* Reads happen when the reactor's selector says so; the connection's timers
  are one entry in the reactor's heap (its next deadline).
* Writes never block the reactor's thread: what the socket does not take
  is queued by the lifecycle and written when the socket is writable; a
  server that takes nothing for ``send_timeout`` seconds fails that
  connection only. A send from another thread waits while more than
  :data:`HIGH_WATER` bytes are queued, writing the queue itself (the same
  back-pressure as the threaded driver's, without depending on the hub's
  thread being free).
"""

from __future__ import annotations

import logging
import selectors
import socket
from typing import Any, Callable, Iterable, Optional, Tuple

from .. import events
from ..constants import READ_SIZE
from ..driver import DriverBase, SessionSettings
from ..errors import ConnectError, describe_os_error
from ..shield import ctrl_c_deferred
from ..sync.connect import open_for
from ..sync.transport import Transport
from ..timers import INFINITY
from ..wakeup import Wakeup
from .connector import Connector
from .reactor import Reactor, Timer

log = logging.getLogger("lomond.hub")

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_READ_WRITE = _READ | _WRITE

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
#: queued for the connection (the hub's own thread never waits) ...
HIGH_WATER = 4 * 1024 * 1024
#: ... until the queue is down to this.
LOW_WATER = 1024 * 1024

#: Where a hub connection's events go: called on the reactor's thread, must not raise.
Emit = Callable[[events.Event], None]

_Opened = Tuple[Optional[socket.socket], Optional[str], str]


class HubSession(DriverBase):
    """One connection on a :class:`~lomond.hub.reactor.Reactor` (see the module documentation).

    ``emit(event)`` receives the connection's events on the reactor's
    thread; ``on_over()`` is called after the last one. ``owner`` is
    whoever runs on this connection, for diagnostics (the hub's app). Sends
    and :meth:`close` may come from any thread.
    """

    __slots__ = (
        "_connect_wakeup", "_connector", "_emit", "_on_over", "_opened_result", "_reactor",
        "_timer", "_watching", "owner",
    )

    wait_above = HIGH_WATER
    wait_until = LOW_WATER

    def __init__(
        self,
        settings: SessionSettings,
        on_end: Optional[Callable[[Any], None]],
        *,
        reactor: Reactor,
        connector: Connector,
        emit: Emit,
        on_over: Callable[[], None],
        owner: object = None,
    ) -> None:
        super().__init__(settings, on_end)
        self._reactor = reactor
        self._connector = connector
        self._emit = emit
        self._on_over = on_over
        #: Who runs on this connection (diagnostics: a slow callback names it).
        self.owner = owner
        self._timer: Optional[Timer] = None
        self._watching = 0
        self._connect_wakeup: Optional[Wakeup] = None
        self._opened_result: Optional[_Opened] = None

    def _may_wait(self) -> bool:
        return not self._reactor.in_loop()

    def wake(self) -> None:
        """Look at this connection on the reactor's thread soon (any thread, lock-free)."""
        wakeup = self._connect_wakeup
        if wakeup is not None:
            wakeup.wake()  # a connect in progress on a worker: abort its wait
        self._reactor.call_soon_threadsafe(self._service)

    # -- connecting (starts on the reactor's thread, runs on a worker) -------------

    def start(self) -> None:
        """Begin: Connecting, then the socket is opened on a worker (reactor's thread)."""
        self._deliver(self.lifecycle.begin())
        try:
            self._connector.submit(self._open)
        except RuntimeError:
            self._opened_result = (None, None, "the hub is shutting down")
            self._opened()

    def _open(self) -> None:
        """On a worker: DNS, TCP, proxy, TLS; the result goes back to the reactor."""
        wakeup = self._connector.thread_wakeup()
        if wakeup is not None:
            wakeup.drain()  # a wake-up meant for the worker's previous connection
        self._connect_wakeup = wakeup
        result: _Opened
        try:
            sock, proxy = open_for(self.settings, self.lifecycle, wakeup)
            result = (sock, proxy, "")
        except ConnectError as failure:
            result = (None, None, str(failure))
        finally:
            self._connect_wakeup = None
        self._opened_result = result
        self._reactor.call_soon_threadsafe(self._opened)

    def _opened(self) -> None:
        """Back on the reactor's thread with a connected socket, or why there is none."""
        assert self._opened_result is not None
        sock, proxy, error = self._opened_result
        self._opened_result = None
        lifecycle = self.lifecycle
        transport: Optional[Transport] = None
        if sock is not None:
            try:
                transport = Transport(sock)
                self._reactor.register(sock, _READ, self._on_io)
                self._watching = _READ
            except (OSError, ValueError) as failure:
                sock.close()
                transport = None
                error = f"could not watch the socket: {describe_os_error(failure)}"
        if transport is None:
            self._shutdown()
            self._deliver(lifecycle.connect_failed(error or "connection failed"))
            self._on_over()
            return
        self.transport = transport
        self._deliver(lifecycle.connected(transport.send, proxy))
        self._service()

    # -- on the reactor's thread --------------------------------------------------------

    def _deliver(self, batch: Iterable[events.Event]) -> None:
        emit = self._emit
        delivered = self.lifecycle.delivered
        for event in batch:
            emit(event)
            for follow in delivered(event):
                emit(follow)

    def _on_io(self, mask: int) -> None:
        if mask & _WRITE:
            self.lifecycle.flush()
        if mask & _READ:
            self._read()
        self._service()

    def _read(self) -> None:
        transport = self.transport
        if not isinstance(transport, Transport) or self.finished:
            return
        lifecycle = self.lifecycle
        protocol = self.protocol
        recv = transport.recv
        receive_data = lifecycle.receive_data
        delivered = lifecycle.delivered
        emit = self._emit
        Text, Binary = events.Text, events.Binary
        reads = _READS_PER_TURN
        while True:
            size = lifecycle.read_size
            if size <= READ_SIZE:
                size = HUB_READ_SIZE
            try:
                data = recv(size)
            except OSError as error:
                lifecycle.read_failed(error)
                return
            if data is None:
                self._deliver(lifecycle.receive_eof())
                return
            if not data:
                return
            for event in receive_data(data):
                emit(event)
                kind = type(event)
                if kind is not Text and kind is not Binary:
                    for follow in delivered(event):
                        emit(follow)
            if protocol.replies_pending or protocol.should_close or lifecycle.ending:
                return  # the service step writes the replies or ends the connection
            if transport.pending():
                continue  # decrypted bytes that select() cannot see
            reads -= 1
            if len(data) < size or not reads:
                return  # drained, or another connection's turn

    def _service(self) -> None:
        """Everything but reading: the lifecycle's step, then what to watch and when to wake."""
        transport = self.transport
        if self.finished or not isinstance(transport, Transport):
            return  # over, or still connecting on a worker (which reports back)
        lifecycle = self.lifecycle
        due = lifecycle.service()
        if due:
            self._deliver(due)
        if lifecycle.ending:
            self._end(transport)
            return
        wanted = _READ_WRITE if lifecycle.wants_write else _READ
        if wanted != self._watching:
            self._watching = wanted
            self._reactor.modify(transport.sock, wanted, self._on_io)
        when = lifecycle.deadline()
        timer = self._timer
        if timer is not None and not timer.cancelled:
            if timer.when == when:
                return
            timer.cancel()
        self._timer = None if when == INFINITY else self._reactor.call_at(when, self._service)

    def _end(self, transport: Transport) -> None:
        """Close the socket, then report the end: a Disconnected handler sees it gone."""
        # Whole, or a Ctrl-C landing in the middle leaves the socket open.
        with ctrl_c_deferred():
            timer = self._timer
            if timer is not None:
                timer.cancel()
                self._timer = None
            self._reactor.unregister(transport.sock)
            final = self.lifecycle.finish()
            transport.close()
        self._shutdown()  # outside: it runs the on_disconnect hook (user code)
        self._deliver(final)
        self._on_over()

    def input_waiting(self) -> bool:
        """Whether bytes wait unread on the socket (any thread; for diagnostics)."""
        transport = self.transport
        return isinstance(transport, Transport) and transport.readable_now()

    def abort(self) -> None:
        """The hub stopped under this connection (an exception left its loop): close now.

        No events: nothing delivers them any more.
        """
        transport = self.transport
        self.lifecycle.drop("the hub stopped")
        if isinstance(transport, Transport) and not self.finished:
            self._reactor.unregister(transport.sock)
            self.lifecycle.finish()
            transport.close()
            self._shutdown()


__all__ = ["HIGH_WATER", "HUB_READ_SIZE", "LOW_WATER", "Emit", "HubSession"]
