"""The threaded driver: one connection in the caller's thread.

:class:`WebsocketSession` is the loop that :meth:`lomond.WebSocket.connect`
iterates. It opens the socket (:func:`~lomond.sync.connect.open_connection`),
then only moves bytes: it reads what the socket delivers into the
connection's :class:`~lomond.lifecycle.Lifecycle`, yields the events that
come back, and waits. Everything else (the protocol's replies, Close frames,
timers, the order of the first and last events) is the lifecycle's.

It waits in one ``select()`` on the socket and a :class:`~lomond.wakeup.Wakeup`,
with a timeout that is the connection's next deadline: an idle connection
wakes for its own timers and its own bytes only. ``close()``, a failed send
and a :class:`~lomond.wakeup.StopSignal` wake it at once. Sends come from any
thread and never wait for the loop: a send the socket cannot take at once
waits for the socket itself (:meth:`~lomond.driver.DriverBase.send_message`).
"""

from __future__ import annotations

import logging
import selectors
import socket as _socket
import time
from typing import Callable, Iterable, Iterator, Optional

from .. import events
from ..constants import DEFAULT_CLOSE_REASON
from ..driver import DriverBase, SessionSettings
from ..errors import ConnectError
from ..shield import ctrl_c_deferred
from ..status import Status
from ..timers import INFINITY
from ..wakeup import Wakeup
from .connect import open_for
from .transport import Transport

log = logging.getLogger("lomond.session")

_READ = selectors.EVENT_READ
_READ_WRITE = selectors.EVENT_READ | selectors.EVENT_WRITE


class WebsocketSession(DriverBase):
    """Drives one connection; :meth:`lomond.websocket.WebSocket.connect` creates it.

    Sends may come from any thread; :meth:`run` runs in the caller's thread.
    ``on_end`` is called once, from the loop's thread, when the connection
    is over and its socket closed.
    """

    __slots__ = ("_connect_error", "_events", "_proxy_url", "_wakeup")

    def __init__(
        self,
        settings: SessionSettings,
        on_end: Optional[Callable[[WebsocketSession], None]] = None,
    ) -> None:
        super().__init__(settings, on_end)
        # Dropped once the connection is over (a late wake() from another
        # thread then does nothing): its sockets are closed when the last
        # reference goes, never under a thread that is writing to it.
        self._wakeup: Optional[Wakeup] = Wakeup()
        self._events: Optional[Iterator[events.Event]] = None
        self._proxy_url: Optional[str] = None
        self._connect_error = ""

    @property
    def socket(self) -> Optional[_socket.socket]:
        """The connected socket (``None`` before it connects and once it is closed)."""
        transport = self.transport
        if isinstance(transport, Transport) and not transport.closed:
            return transport.sock
        return None

    def wake(self) -> None:
        """Wake the loop's ``select()`` (any thread, lock-free, signal-safe)."""
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.wake()

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
        lifecycle = self.lifecycle
        try:
            yield from lifecycle.begin()
            transport = self._open()
            if transport is None:
                self._close()
                yield from lifecycle.connect_failed(self._connect_error)
                return
            yield from self._deliver(lifecycle.connected(transport.send, self._proxy_url))
            yield from self._loop(transport)
            # Close the socket, then report the end: a Disconnected handler sees it gone.
            final = lifecycle.finish()
            self._close()
            yield from final
        except GeneratorExit:
            # The caller stopped iterating (its loop body raised, or it broke
            # out). Inside ``with WebSocket(...)`` the close handshake is
            # finished, bounded by close_timeout; otherwise say goodbye with a
            # best-effort Close 1001 instead of vanishing, and await nothing.
            current = self.transport
            if self.settings.close_on_exit and self.is_active and isinstance(current, Transport):
                self._close_gracefully(current)
            else:
                lifecycle.abandon()
            raise
        finally:
            self._close()
            if not lifecycle.over:
                lifecycle.finish()  # abandoned: nobody hears the last events

    def _open(self) -> Optional[Transport]:
        """DNS, TCP, the proxy's tunnel and TLS; ``None`` (and why) if that failed."""
        try:
            sock, self._proxy_url = open_for(self.settings, self.lifecycle, self._wakeup)
        except ConnectError as error:
            self._connect_error = str(error)
            return None
        transport = self.transport = Transport(sock)
        return transport

    def _deliver(self, batch: Iterable[events.Event]) -> Iterator[events.Event]:
        delivered = self.lifecycle.delivered
        for event in batch:
            yield event
            yield from delivered(event)

    def _close_gracefully(self, transport: Transport) -> None:
        """Close (1000) and run the loop to its end, discarding the events."""
        self.close(Status.NORMAL, DEFAULT_CLOSE_REASON)
        try:
            for _ in self._loop(transport):
                pass
        except Exception:  # the loop's own failures end in events; this is a hook's
            log.exception("error while closing %s on leaving a with block", self.settings.url)

    def _loop(self, transport: Transport) -> Iterator[events.Event]:
        """Receive, deliver, service and wait until the connection ends."""
        lifecycle = self.lifecycle
        wakeup = self._wakeup
        assert wakeup is not None
        recv = transport.recv
        receive_data = lifecycle.receive_data
        delivered = lifecycle.delivered
        service = lifecycle.service
        Text, Binary = events.Text, events.Binary
        monotonic = time.monotonic
        tls = transport.is_tls
        with selectors.DefaultSelector() as selector:
            selector.register(transport.sock, _READ)
            selector.register(wakeup.fileno(), _READ)
            watching = _READ
            while True:
                due = service()
                if due:
                    yield from self._deliver(due)
                if lifecycle.ending:
                    return
                try:
                    data = recv(lifecycle.read_size)
                except OSError as error:
                    lifecycle.read_failed(error)
                    continue
                if data:
                    for event in receive_data(data):
                        yield event
                        kind = type(event)
                        if kind is not Text and kind is not Binary:
                            yield from delivered(event)
                    continue  # more may be buffered already: read again before waiting
                if data is None:
                    yield from self._deliver(lifecycle.receive_eof())
                    continue
                # Nothing buffered: wait for bytes, a wake-up or the next deadline.
                if tls and transport.pending():
                    continue
                wanted = _READ_WRITE if lifecycle.wants_write else _READ
                if wanted != watching:
                    selector.modify(transport.sock, wanted)
                    watching = wanted
                deadline = lifecycle.deadline()
                timeout = None if deadline == INFINITY else max(0.0, deadline - monotonic())
                for key, mask in selector.select(timeout):
                    if key.fileobj is transport.sock:
                        if mask & selectors.EVENT_WRITE:
                            lifecycle.flush()
                    else:
                        wakeup.drain()

    def _close(self) -> None:
        """Close the socket and release the wake-up channel; the connection is over."""
        if self.finished:
            return
        # Whole, or a Ctrl-C landing in the middle leaves a socket open.
        with ctrl_c_deferred():
            transport = self.transport
            if isinstance(transport, Transport):
                transport.close()
            self._wakeup = None  # its sockets close here, with the last reference
        self._shutdown()  # outside: it runs the on_disconnect hook (user code)


__all__ = ["WebsocketSession"]
