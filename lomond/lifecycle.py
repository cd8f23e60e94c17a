"""One connection's life without I/O: from ``Connecting`` to ``Disconnected``.

:class:`~lomond.protocol.ClientProtocol` owns the rules of RFC 6455 for the
bytes of one connection. :class:`Lifecycle` owns everything around them that
every driver (the threaded :mod:`lomond.sync.session`, the
:mod:`lomond.hub.session`) would otherwise write again:

- the order of the connection's first and last events (``Connecting``,
  ``Connected``, then ``ConnectFail`` or ``Disconnected``), and writing the
  upgrade request once the ``Connected`` handlers ran;
- every Close we send: :meth:`Lifecycle.close` (1000 for a stop request),
  :meth:`Lifecycle.abandon` (1001 when the caller leaves the loop), the
  protocol's echo and failing Close (:meth:`Lifecycle.service`);
- the timers (:class:`~lomond.timers.ConnectionTimers`: poll, automatic
  pings, the ping timeout and ``Unresponsive``, the close and handshake
  timeouts) and the send timeout of a server that stopped reading;
- the pong going out before later events are delivered (:meth:`Lifecycle.delivered`);
- the bytes to send: sends from any thread are framed and written in one
  order, under one lock, through the non-blocking ``write`` the driver
  attached; what the socket does not take waits in a queue
  (:attr:`Lifecycle.pending_output`) that the driver flushes when the socket
  is writable (:meth:`Lifecycle.flush`);
- when the connection ends, and why (:attr:`Lifecycle.ending`, then
  :meth:`Lifecycle.finish`).

.. not-runnable: pseudo-code of a driver's loop

It never touches a socket, starts no thread and reads no clock of its own:
the driver passes its clock and a ``waker`` (whose ``wake()`` makes the
loop look at this connection now, from any thread). A driver is then a
short loop::

    events = lifecycle.begin()                     # [Connecting]
    ... open the socket; on failure: lifecycle.connect_failed(reason)
    events = lifecycle.connected(write, proxy)     # [Connected]
    while True:
        deliver(lifecycle.service())               # stop, replies, timers
        if lifecycle.ending: break
        data = read()                              # or wait until readable or
        for event in lifecycle.receive_data(data): #   lifecycle.deadline()
            deliver(event)
            deliver(lifecycle.delivered(event))    # not needed for messages
    close the socket; deliver(lifecycle.finish())  # [Disconnected]

Threads: :meth:`~Lifecycle.close`, :meth:`~Lifecycle.drop`, the ``send_*``
methods, :meth:`~Lifecycle.flush` and the state properties may be called
from any thread; everything else from the driver's loop only. One lock
serializes what changes the outgoing byte stream; it is never held while
waiting (the ``write`` callback never blocks), so ``close()`` is immediate
even while another thread waits for a server that stopped reading.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, NoReturn, Optional, Sequence, Tuple, Union

from . import events
from .constants import DEFAULT_CLOSE_REASON
from .errors import (
    TransportFail,
    WebSocketClosed,
    WebSocketUnavailable,
    describe_os_error,
)
from .frame import Opcode
from .options import ConnectOptions
from .protocol import ClientProtocol, State
from .response import Response
from .status import Status
from .timers import ConnectionTimers, Due
from .trace import Tracer
from .wakeup import StopSignal, Wakeable

log = logging.getLogger("lomond.lifecycle")

#: What may be written: the bytes of frames, or a view of what is left of them.
Buffer = Union[bytes, bytearray, memoryview]
#: The driver's non-blocking write: how many bytes the socket took (0, or
#: ``BlockingIOError``, if it would block); raises ``OSError`` if the socket
#: failed. A plain socket's own ``send`` is one.
Write = Callable[[Buffer], int]

_NO_EVENTS: Tuple[events.Event, ...] = ()
#: Queued chunks are joined into writes of about this size, not one per frame.
_COALESCE = 64 * 1024


class Lifecycle:
    """The sans-I/O life of one connection (see the module documentation).

    :param protocol: the connection's protocol.
    :param options: its timers (:class:`~lomond.options.ConnectOptions`).
    :param url: the URL for events (without credentials).
    :param send_timeout: seconds the queued output may wait for a server
        that reads nothing before the connection is dropped.
    :param waker: its ``wake()`` makes the driver's loop look at this
        connection soon; lock-free and safe in a signal handler (a stop
        request calls it). An object, not a callable: a bound method would
        cost each of a hub's connections one more object.
    :param clock: the driver's ``time.monotonic``.
    :param stop: a stop request: once set, the connection closes with 1000
        (or is abandoned before Ready).
    :param trace: the connection's tracer, if any.
    :param on_response: called with the upgrade response (accepted or not).
    """

    __slots__ = (
        "_clock", "_drop_reason", "_ending", "_lock", "_on_response", "_options", "_out",
        "_out_size", "_over", "_send_failure", "_send_timeout", "_sendable", "_stalled_since",
        "_stop", "_trace", "_url", "_waker", "_write", "close_sent_at", "protocol", "timers",
    )

    def __init__(
        self,
        protocol: ClientProtocol,
        options: ConnectOptions,
        *,
        url: str,
        send_timeout: float,
        waker: Wakeable,
        clock: Callable[[], float],
        stop: Optional[StopSignal] = None,
        trace: Optional[Tracer] = None,
        on_response: Optional[Callable[[Response], None]] = None,
    ) -> None:
        self.protocol = protocol
        self.timers = ConnectionTimers(options)
        self._options = options
        self._url = url
        self._send_timeout = send_timeout
        self._waker = waker
        self._clock = clock
        self._stop = stop
        self._trace = trace
        self._on_response = on_response
        self._lock = threading.Lock()
        self._over = False  # finish() or connect_failed() ended it
        self._write: Optional[Write] = None
        # True while a socket is attached and the connection neither dropped
        # nor over: the one attribute the send path tests.
        self._sendable = False
        #: Why the driver must drop the connection (set from any thread).
        self._drop_reason: Optional[str] = None
        # Once decided: why the connection ends and whether gracefully
        # (reason None: the protocol's own account, see ClientProtocol.finish).
        self._ending: Optional[Tuple[Optional[str], bool]] = None
        # Why writing failed (a socket error, or a server that stopped
        # reading): a sender whose bytes were left unsent is told this.
        self._send_failure: Optional[str] = None
        # A list, not a deque: an empty deque costs 760 bytes, on each of a
        # hub's thousands of connections; the queue is short (chunks are joined).
        self._out: List[Buffer] = []
        self._out_size = 0
        self._stalled_since = 0.0
        #: The driver's clock when our Close frame was framed, or ``None``.
        self.close_sent_at: Optional[float] = None

    def __repr__(self) -> str:
        return f"<Lifecycle {self._url!r} {self.protocol.state.value}>"

    # -- state, from any thread ------------------------------------------------------

    @property
    def state(self) -> State:
        """The protocol state (RFC 6455 sections 4 and 7)."""
        return self.protocol.state

    @property
    def is_active(self) -> bool:
        """Ready, and no Close sent or dropped: sends are accepted."""
        return (
            self._sendable
            and self.protocol.state is State.OPEN
            and not self.protocol.close_sent
        )

    @property
    def over(self) -> bool:
        """Whether :meth:`finish` or :meth:`connect_failed` ended the connection."""
        return self._over

    @property
    def dropped(self) -> Optional[str]:
        """Why the connection is being dropped (:meth:`drop`, a failed send), or ``None``."""
        return self._drop_reason

    @property
    def end_reason(self) -> Optional[str]:
        """Why the connection is being dropped or is ending (``None`` while it lives)."""
        if self._drop_reason is not None:
            return self._drop_reason
        if self._ending is not None:
            return self._ending[0] or "closed"
        return "closed" if self._over else None

    @property
    def send_failure(self) -> Optional[str]:
        """Why writing failed (a socket error, the send timeout), or ``None``."""
        return self._send_failure

    @property
    def ending(self) -> bool:
        """Whether the driver must close the socket now, then call :meth:`finish`."""
        return self._ending is not None

    @property
    def pending_output(self) -> int:
        """Bytes framed but not yet taken by the socket (the driver flushes them).

        Once the connection is over, what was left unsent.
        """
        return self._out_size

    @property
    def stalled_since(self) -> float:
        """The driver's clock when the queued output last made progress."""
        return self._stalled_since

    @property
    def wants_write(self) -> bool:
        """Whether the driver should watch the socket for writability and :meth:`flush`."""
        return bool(self._out)

    def deadline(self) -> float:
        """When the driver must call :meth:`service` again (``INFINITY``: only for bytes)."""
        deadline = self.timers.deadline(self.protocol)
        if self._out:
            deadline = min(deadline, self._stalled_since + self._send_timeout)
        return deadline

    @property
    def trace(self) -> Optional[Tracer]:
        """The connection's tracer (``None`` without ``trace=``), for the driver's own steps."""
        return self._trace

    def wake(self) -> None:
        """Make the driver look at this connection (a :class:`~lomond.wakeup.Wakeable`)."""
        self._waker.wake()

    # -- the start --------------------------------------------------------------------

    def begin(self) -> List[events.Event]:
        """The connection attempt starts: ``[Connecting]``; a stop request is watched."""
        if self._stop is not None:
            self._stop.attach(self)
        return [events.Connecting(self._url)]

    def aborted(self) -> bool:
        """Whether to give up opening the socket (a stop request, ``close()``): any thread."""
        stop = self._stop
        if stop is not None and stop.is_set():
            self.drop("stopped before the connection was ready")
        return self._drop_reason is not None

    def connect_failed(self, reason: str) -> List[events.Event]:
        """The socket could not be opened: ``[ConnectFail]`` (the reason of an abort wins)."""
        reason = self._drop_reason or reason
        log.debug("connect to %s failed: %s", self._url, reason)
        if self._trace is not None:
            self._trace("connect_fail", reason=reason)
        self._end_now()
        return [events.ConnectFail(reason)]

    def connected(self, write: Write, proxy: Optional[str] = None) -> List[events.Event]:
        """The socket is open: ``[Connected]``; sends go through ``write`` from now on.

        The upgrade request is written once the ``Connected`` handlers ran
        (:meth:`delivered`), unless one of them closed the connection.
        """
        with self._lock:
            self._write = write
            self._sendable = self._drop_reason is None
        return [events.Connected(self._url, proxy)]

    # -- receiving, on the driver's loop -----------------------------------------------

    @property
    def read_size(self) -> int:
        """How many bytes the next read should ask for (see :attr:`ClientProtocol.read_size`)."""
        return self.protocol.read_size

    def receive_data(self, data: bytes) -> List[events.Event]:
        """Bytes from the socket: the events they complete, to deliver in order."""
        trace = self._trace
        if trace is None:
            return self.protocol.receive_data(data)
        trace("socket_recv", bytes=len(data))
        batch = self.protocol.receive_data(data)
        for event in batch:
            trace_event(trace, event)
        return batch

    def receive_eof(self) -> List[events.Event]:
        """The server closed its end of the stream: the events that follow."""
        batch = self.protocol.receive_eof()
        if self._trace is not None:
            for event in batch:
                trace_event(self._trace, event)
        return batch

    def read_failed(self, error: BaseException) -> None:
        """Reading the socket failed: the connection ends."""
        reason = describe_os_error(error)
        if self.protocol.state is State.CONNECTING:
            reason = f"connection failed during the handshake: {reason}"
        self.end(reason)

    def delivered(self, event: events.Event) -> Sequence[events.Event]:
        """``event``'s handlers ran: act on it; returns the events that follow it now.

        Only non-message events need this (``Text`` and ``Binary`` change
        nothing here). A Ping's pong is written now, before later events;
        Ready starts the timers and is followed by the first Poll (Lomond
        0.3 programs subscribe on it); the upgrade request goes out after
        the ``Connected`` handlers ran.
        """
        kind = type(event)
        if kind is events.Ping:
            self._flush_replies(include_close=False)
        elif kind is events.Pong:
            self.timers.pong_received()
        elif isinstance(event, (events.Ready, events.Rejected)):
            if self._on_response is not None:
                self._on_response(event.response)
            if kind is events.Ready and self.timers.ready(self._clock()):
                return (events.Poll(),)
        elif kind is events.Connected:
            self._send_upgrade()
        return _NO_EVENTS

    def _send_upgrade(self) -> None:
        if self._drop_reason is not None:
            return  # closed (or stopped) while connecting, by a Connected handler say
        with self._lock:
            try:
                self._write_locked(self.protocol.request())
            except TransportFail as error:
                # Said this way rather than as the failed send's own reason.
                self._drop_reason = f"could not send the upgrade request: {error}"
                return
        if self._trace is not None:
            self._trace("upgrade_sent")

    # -- what is due, on the driver's loop ------------------------------------------

    def service(self) -> Sequence[events.Event]:
        """Everything but reading: stop, drop, replies, the end, the timers.

        Call it before each read and whenever woken or the :meth:`deadline`
        passed; deliver the events it returns (``Poll``, ``Unresponsive``).
        Afterwards, if :attr:`ending`, close the socket and call :meth:`finish`.
        """
        if self._ending is not None:
            return _NO_EVENTS
        protocol = self.protocol
        stop = self._stop
        if stop is not None and stop.is_set() and not protocol.close_sent:
            self.close(Status.NORMAL, DEFAULT_CLOSE_REASON)
        if self._drop_reason is not None:
            self._ending = (self._drop_reason, False)
            return _NO_EVENTS
        if protocol.replies_pending:
            self._flush_replies()
            if self._drop_reason is not None:
                self._ending = (self._drop_reason, False)
                return _NO_EVENTS
        if protocol.should_close:
            self._ending = (None, False)
            return _NO_EVENTS
        now = self._clock()
        if self._out and now - self._stalled_since >= self._send_timeout:
            self.end(self.send_timed_out())
            return _NO_EVENTS
        timers = self.timers
        due = timers.due(protocol, now)
        if due is None:
            return _NO_EVENTS
        out: List[events.Event] = []
        while due is not None:
            if due is Due.POLL:
                out.append(events.Poll())
            elif due is Due.PING:
                if protocol.state is State.OPEN and not protocol.close_sent:
                    try:
                        self.send_control(Opcode.PING, b"")
                    except WebSocketUnavailable:
                        pass  # closing or dropped meanwhile
                    except TransportFail:
                        break  # dropped: seen below
            elif due is Due.UNRESPONSIVE:
                out.append(events.Unresponsive())
                self.end(f"unresponsive: no pong within {self._options.ping_timeout:g} s")
                return out
            elif due is Due.CLOSE_TIMEOUT:
                self.end(
                    "close timeout: the server did not complete the close handshake",
                    graceful=protocol.handshake_complete,
                )
                return out
            else:  # Due.HANDSHAKE_TIMEOUT
                limit = self._options.handshake_timeout
                self.end(f"no response to the upgrade request within {limit:g} s")
                return out
            due = timers.due(protocol, now)
        if self._drop_reason is not None:
            self._ending = (self._drop_reason, False)
        return out

    def send_timed_out(self) -> str:
        """The queued output made no progress for ``send_timeout``: drop; the reason."""
        reason = f"send timed out after {self._send_timeout:g} s: the server is not reading"
        if self._send_failure is None:
            self._send_failure = reason
        self.drop(reason)
        return reason

    def end(self, reason: str, graceful: bool = False) -> None:
        """The connection ends for the driver's ``reason`` (a timeout, a failed socket)."""
        if self._ending is None:
            self._ending = (reason, graceful)

    # -- the end -------------------------------------------------------------------------

    def finish(self) -> List[events.Event]:
        """The driver closed the socket: the last events (``Disconnected``, after ``ConnectFail``
        if the upgrade never completed). Sends fail from now on."""
        self._end_now()
        ending = self._ending or (self._drop_reason, False)
        final = self.protocol.finish(*ending)
        if self._trace is not None:
            for event in final:
                if isinstance(event, events.ConnectFail):
                    self._trace("connect_fail", reason=event.reason)
                elif isinstance(event, events.Disconnected):
                    self._trace("disconnected", reason=event.reason, graceful=event.graceful)
        return final

    def _end_now(self) -> None:
        with self._lock:
            self._over = True
            self._sendable = False
            self._write = None
            self._out.clear()  # _out_size keeps what was left unsent
            if self._ending is None:
                self._ending = (self._drop_reason, False)
        if self._stop is not None:
            self._stop.detach(self)

    # -- sending, from any thread ----------------------------------------------------

    def _refuse(self) -> NoReturn:
        if self._drop_reason is not None or self._over:
            # Being dropped (a failed send, say): another write could only
            # wait for a further send_timeout on a dead connection.
            raise WebSocketClosed("the websocket is closed")
        raise WebSocketUnavailable("the websocket is not connected yet")

    def send_message(self, opcode: int, payload: bytes, compress: bool = True) -> int:
        """Frame and write (or queue) a whole Text or Binary message (RFC 6455 section 5.6).

        One lock covers framing and writing, so frames from different
        threads stay whole and in the compressor's order. Returns
        :attr:`pending_output`: what the socket has yet to take.
        """
        with self._lock:
            if not self._sendable:
                self._refuse()
            data = self.protocol.send_data(opcode, payload, compress)
            if self._out or self._trace is not None:
                self._write_locked(data)
            else:
                # The common case, inlined (a send is a few microseconds):
                # nothing queued, the socket takes it all.
                # _write_locked() without its queue and trace checks (done above).
                try:
                    # _sendable implies a write was attached: no None check here.
                    sent = self._write(data)  # type: ignore[misc]
                    if sent < len(data):
                        self._queue_rest(data, sent)
                except (BlockingIOError, InterruptedError):
                    self._queue_rest(data, 0)
                except OSError as error:
                    raise TransportFail(self._write_failed(error)) from None
                except BaseException:  # a Ctrl-C between the write and its bookkeeping
                    self._write_interrupted()
                    raise
        if self._trace is not None:
            stage = "send_text" if opcode == Opcode.TEXT else "send_binary"
            self._trace(stage, length=len(payload), compress=compress)
        return self._out_size

    def send_control(self, opcode: int, data: bytes) -> None:
        """Write (or queue) a Ping or Pong (RFC 6455 section 5.5), at most 125 bytes."""
        ping = opcode == Opcode.PING
        with self._lock:
            if not self._sendable:
                self._refuse()
            protocol = self.protocol
            self._write_locked(protocol.send_ping(data) if ping else protocol.send_pong(data))
            if ping:
                self.timers.ping_sent(self._clock())
        if self._trace is not None:
            self._trace("send_ping" if ping else "send_pong", length=len(data))

    def close(self, code: Optional[int] = Status.NORMAL, reason: Union[str, bytes] = "") -> None:
        """Start the close handshake now (RFC 6455 section 7.1.2), from any thread.

        The Close frame goes out behind what is queued; the close timeout
        counts from now. Before the upgrade completed there is nothing to
        close gracefully, so the attempt is dropped instead. Idempotent.
        """
        if self._trace is not None:
            self._trace("close_requested", code=code, reason=reason)
        with self._lock:
            protocol = self.protocol
            if (
                self._over
                or self._drop_reason is not None
                or self._ending is not None
                or protocol.close_sent
                or protocol.should_close
            ):
                return  # closing, or ending already
            if protocol.state is State.CONNECTING or not self._sendable:
                self._drop_locked("closed before the connection was ready")
                return
            data = protocol.send_close(code, reason)
            self.close_sent_at = now = self._clock()
            self.timers.close_started(now)  # even if a stuck send holds the Close back
            try:
                self._write_locked(data)
            except TransportFail:
                pass  # dropped by _write_locked: the loop ends the connection
        self._waker.wake()

    def abandon(self) -> None:
        """The caller left the event loop: a best-effort Close 1001, awaiting nothing.

        One attempt to write it, without queueing or waiting: the socket is
        about to be closed.
        """
        with self._lock:
            protocol = self.protocol
            write = self._write
            if (
                write is None
                or not self._sendable
                or protocol.state is not State.OPEN
                or protocol.close_sent
            ):
                return
            data = protocol.send_close(Status.GOING_AWAY, "going away")
            self.close_sent_at = self._clock()
            try:
                if not self._out:
                    write(data)
            except (OSError, ValueError):
                pass

    def drop(self, reason: str) -> None:
        """Drop the connection without a close handshake, from any thread (first reason wins)."""
        self._drop_locked(reason)

    def _drop_locked(self, reason: str) -> None:
        # Safe without the lock too: two assignments, the first reason wins.
        self._sendable = False
        if self._drop_reason is None:
            self._drop_reason = reason
        self._waker.wake()

    # -- output ---------------------------------------------------------------------------

    def _write_locked(self, data: Buffer) -> None:
        """Write ``data`` now if nothing is queued, queue what the socket does not take.

        Under the lock. A socket failure drops the connection and raises
        :class:`~lomond.errors.TransportFail`.
        """
        out = self._out
        if out:
            out.append(data)  # behind what is queued already
            self._out_size += len(data)
            return
        write = self._write
        if write is None:
            self._refuse()
        try:
            sent = write(data)
            if sent < len(data):
                self._queue_rest(data, sent)
        except (BlockingIOError, InterruptedError):
            self._queue_rest(data, 0)
        except OSError as error:
            raise TransportFail(self._write_failed(error)) from None
        except BaseException:  # a Ctrl-C between the write and its bookkeeping
            self._write_interrupted()
            raise
        if self._trace is not None:
            self._trace("socket_send", bytes=len(data))

    def _queue_rest(self, data: Buffer, sent: int) -> None:
        """The socket took ``sent`` bytes of ``data``: queue the rest (under the lock)."""
        self._out.append(memoryview(data)[sent:])
        self._out_size += len(data) - sent
        self._stalled_since = self._clock()
        self._waker.wake()  # the loop watches for writability now

    def flush(self) -> None:
        """Write queued output while the socket takes it (the socket is writable): any thread."""
        with self._lock:
            out = self._out
            write = self._write
            if not out or write is None:
                return
            try:
                while out:
                    if len(out) > 1 and len(out[0]) + len(out[1]) <= _COALESCE:
                        _join_front(out)
                    chunk = out[0]
                    try:
                        sent = write(chunk)
                    except (BlockingIOError, InterruptedError):
                        return
                    except OSError as error:
                        self._write_failed(error)
                        return
                    if not sent:
                        return
                    self._out_size -= sent
                    self._stalled_since = self._clock()
                    if sent < len(chunk):
                        out[0] = memoryview(chunk)[sent:]
                        return
                    del out[0]
            except BaseException:
                self._write_interrupted()
                raise

    def _write_interrupted(self) -> None:
        """An exception (a Ctrl-C's KeyboardInterrupt) cut a write or its bookkeeping short.

        How much of the frame reached the socket is unknown: the chunk the
        socket took may still be queued (a later flush would send it twice)
        or the rest of a frame may never have been queued (the next frame
        would follow half a frame). Either corrupts the stream, so nothing
        more is written: the connection is dropped, and waiting senders fail.
        Under the lock.
        """
        reason = "send failed: a write was interrupted (what reached the socket is unknown)"
        self._write = None
        if self._send_failure is None:
            self._send_failure = reason
        self._drop_locked(reason)

    def _write_failed(self, error: OSError) -> str:
        reason = f"send failed: {describe_os_error(error)}"
        if self._send_failure is None:
            self._send_failure = reason
        self._drop_locked(reason)
        return reason

    def _flush_replies(self, include_close: bool = True) -> None:
        """Write what the protocol owes the server (pongs, the Close echo, a failing Close)."""
        with self._lock:
            protocol = self.protocol
            if self._write is None or self._drop_reason is not None:
                return
            data = protocol.data_to_send(include_close)
            if not data:
                return
            if protocol.close_sent and self.close_sent_at is None:
                self.close_sent_at = self._clock()
            try:
                self._write_locked(data)
            except TransportFail:
                pass  # dropped: the loop ends the connection


def _join_front(out: List[Buffer]) -> None:
    """Join the small chunks at the front of ``out`` into one, up to about :data:`_COALESCE` bytes.

    One write then takes many small frames (a queue of them builds up
    behind a slow server) instead of one system call each.
    """
    size = count = 0
    for chunk in out:
        if count and size + len(chunk) > _COALESCE:
            break
        size += len(chunk)
        count += 1
    out[:count] = [b"".join(out[:count])]


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


__all__ = ["Buffer", "Lifecycle", "Write", "trace_event"]
