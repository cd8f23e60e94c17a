"""The asyncio driver: one connection on an asyncio event loop.

:class:`AsyncioSession` is the asyncio counterpart of the threaded
:class:`~lomond.sync.session.WebsocketSession` and the hub's
:class:`~lomond.hub.session.HubSession`, over the same
:class:`~lomond.lifecycle.Lifecycle`: the same events in the same order,
the same timers, the same Close frames. It is built on an
:class:`asyncio.Protocol` and its transport, not on streams:

* ``data_received`` only keeps the bytes and wakes the event iterator
  (:meth:`AsyncioSession.run`), which feeds them to the lifecycle and yields
  the events, so a handler's ``await`` is back-pressure: past about a
  megabyte of unread input, reading pauses.
* Writes go straight to the transport from the loop's thread. Once the
  transport asks to pause writing (its buffer is full), the lifecycle queues
  what follows and the send timeout runs; ``resume_writing`` flushes the
  queue. A send from another thread is queued and flushed by the loop.
* The connection's timers are one ``loop.call_at`` handle, moved to the
  lifecycle's next deadline.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, AsyncGenerator, Callable, Deque, List, Optional

from .. import events
from ..driver import DriverBase, SessionSettings
from ..errors import ConnectError, TransportFail, WebSocketClosed
from ..lifecycle import Buffer
from ..status import Status
from ..timers import INFINITY
from .connect import open_async

#: Unread input past this pauses reading (the event iterator is behind) ...
READ_HIGH_WATER = 1024 * 1024
#: ... until it is down to this.
READ_LOW_WATER = 256 * 1024
#: A send from a thread other than the loop's waits while more than this is
#: queued for the connection (the loop's own sends never wait) ...
HIGH_WATER = 4 * 1024 * 1024
#: ... until the queue is down to this.
LOW_WATER = 1024 * 1024

_EOF = b""


class _Stream(asyncio.Protocol):
    """The asyncio protocol under an :class:`AsyncioSession`: passes everything on."""

    __slots__ = ("_session",)

    def __init__(self, session: AsyncioSession) -> None:
        self._session = session

    def data_received(self, data: bytes) -> None:
        self._session.received(data)

    def eof_received(self) -> bool:
        self._session.received(_EOF)
        return False  # close our end: the client has nothing more to say either

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._session.lost(exc)

    def pause_writing(self) -> None:
        self._session.writing_paused(True)

    def resume_writing(self) -> None:
        self._session.writing_paused(False)


class AsyncioSession(DriverBase):
    """One connection on the running asyncio loop (see the module documentation).

    Create it inside a coroutine (it binds to the running loop); iterate
    :meth:`run` there. Sends and :meth:`close` may come from any thread.
    """

    __slots__ = (
        "_aio", "_chunks", "_drain", "_eof", "_loop", "_loop_thread", "_lost", "_paused",
        "_reading_paused", "_room", "_room_lock", "_timer", "_timer_when", "_unread",
        "_waiter", "_wakeable",
    )

    wait_above = HIGH_WATER
    wait_until = LOW_WATER

    def __init__(
        self, settings: SessionSettings, on_end: Optional[Callable[[Any], None]] = None
    ) -> None:
        super().__init__(settings, on_end)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._aio: Optional[asyncio.Transport] = None
        self._chunks: Deque[bytes] = deque()
        self._unread = 0
        self._eof = False
        self._lost: Optional[Exception] = None
        self._reading_paused = False
        self._paused = False
        self._waiter: Optional[asyncio.Future[None]] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_when = INFINITY
        self._drain: List[asyncio.Future[None]] = []
        # Sends from other threads: they wait for the loop to write the queue.
        self._room_lock = threading.Lock()
        self._room: Optional[threading.Event] = None
        self._wakeable = True  # False once the loop may be gone

    # -- what the driver base needs ------------------------------------------------

    def wake(self) -> None:
        """Make the event iterator look at the connection (any thread, lock-free)."""
        if threading.get_ident() == self._loop_thread:
            self._wake_up()
            return
        if self._wakeable:
            try:
                self._loop.call_soon_threadsafe(self._wake_up)
            except RuntimeError:
                self._wakeable = False  # the loop is closed: nobody to wake

    def _may_wait(self) -> bool:
        return threading.get_ident() != self._loop_thread

    def _write(self, data: Buffer) -> int:
        """The lifecycle's non-blocking write: the transport's, from the loop's thread only."""
        transport = self._aio
        if transport is None or transport.is_closing():
            raise BrokenPipeError(32, "the connection is closed")
        if self._paused or threading.get_ident() != self._loop_thread:
            return 0  # queued by the lifecycle; the loop writes it (resume_writing, wake)
        transport.write(data)
        return len(data)

    def wait_writable(self, timeout: float) -> None:
        """For a sender in another thread: wait until the loop wrote some of the queue."""
        with self._room_lock:
            if self.lifecycle.pending_output <= self.wait_until or self.finished:
                return
            room = self._room
            if room is None:
                room = self._room = threading.Event()
        room.wait(timeout)

    def _progress(self) -> None:
        """The queue shrank (or the connection ended): release the waiting senders."""
        with self._room_lock:
            room, self._room = self._room, None
        if room is not None:
            room.set()
        drain, self._drain = self._drain, []
        for future in drain:
            if not future.done():
                future.set_result(None)

    async def drained(self) -> None:
        """Wait until the socket took what was sent (an ``await send_*`` waits for this).

        Raises :class:`~lomond.errors.TransportFail` if writing failed or
        timed out, :class:`~lomond.errors.WebSocketClosed` if the connection
        ended with bytes unsent.
        """
        lifecycle = self.lifecycle
        send_timeout = self.settings.send_timeout
        while lifecycle.pending_output:
            failure = lifecycle.send_failure
            if failure is not None:
                raise TransportFail(failure)
            reason = lifecycle.end_reason
            if reason is not None:
                raise WebSocketClosed(f"the websocket is closed: {reason}")
            # Bounded here, not only by the event iterator's timer: the
            # iterator may be suspended in the very loop body that awaits us.
            remaining = lifecycle.stalled_since + send_timeout - self._loop.time()
            if remaining <= 0:
                raise TransportFail(lifecycle.send_timed_out())
            future: asyncio.Future[None] = self._loop.create_future()
            self._drain.append(future)
            await asyncio.wait((future,), timeout=remaining)

    # -- the protocol's calls -------------------------------------------------------

    def received(self, data: bytes) -> None:
        """Bytes from the transport (``b""``: end of stream); kept for the iterator."""
        if data:
            self._chunks.append(data)
            self._unread += len(data)
            transport = self._aio
            if self._unread > READ_HIGH_WATER and transport is not None:
                self._reading_paused = True
                transport.pause_reading()
        else:
            self._eof = True
        self._wake_up()

    def lost(self, error: Optional[Exception]) -> None:
        """The transport closed (``error``: why, if it failed)."""
        self._eof = True
        self._lost = error
        self._wake_up()

    def writing_paused(self, paused: bool) -> None:
        """The transport's flow control: its buffer is full, or has room again."""
        self._paused = paused
        if not paused:
            self.lifecycle.flush()
            self._progress()
            self._wake_up()

    def _timer_fired(self) -> None:
        # Forget the deadline it was armed for: a loop may fire a timer a
        # moment early (uvloop rounds to milliseconds), and the next wait
        # must arm it again even though the deadline has not changed.
        self._timer = None
        self._timer_when = INFINITY
        self._wake_up()

    def _wake_up(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the event iterator -----------------------------------------------------------

    async def run(self) -> AsyncGenerator[events.Event, None]:
        """Connect and yield the connection's events (see :mod:`lomond.events` for the order)."""
        lifecycle = self.lifecycle
        try:
            for event in lifecycle.begin():
                yield event
            try:
                proxy = await self._open()
            except ConnectError as error:
                self._close()
                for event in lifecycle.connect_failed(str(error)):
                    yield event
                return
            for event in lifecycle.connected(self._write, proxy):
                yield event
                for follow in lifecycle.delivered(event):
                    yield follow
            delivered = lifecycle.delivered
            receive_data = lifecycle.receive_data
            Text, Binary = events.Text, events.Binary
            cancelled = False
            while True:
                for event in lifecycle.service():
                    yield event
                if lifecycle.ending:
                    break
                if lifecycle.wants_write and not self._paused:
                    lifecycle.flush()
                    self._progress()
                chunk = self._take()
                if chunk is None:
                    try:
                        await self._wait()
                    except asyncio.CancelledError:
                        # The task iterating was cancelled while we waited:
                        # close gracefully (1001) and deliver the end, then
                        # re-raise. A second cancellation gives up at once.
                        if cancelled or not lifecycle.is_active:
                            raise
                        cancelled = True
                        lifecycle.close(Status.GOING_AWAY, "going away")
                    continue
                if chunk:
                    for event in receive_data(chunk):
                        yield event
                        kind = type(event)
                        if kind is not Text and kind is not Binary:
                            for follow in delivered(event):
                                yield follow
                    continue
                if self._lost is not None:
                    lifecycle.read_failed(self._lost)
                    continue
                for event in lifecycle.receive_eof():
                    yield event
                    for follow in delivered(event):
                        yield follow
            # Close the transport, then report the end: a Disconnected handler sees it gone.
            final = lifecycle.finish()
            self._close()
            for event in final:
                yield event
            if cancelled:
                raise asyncio.CancelledError
        except GeneratorExit:
            # The caller stopped iterating: a best-effort Close 1001, then the
            # transport is closed (as the threaded driver does).
            lifecycle.abandon()
            raise
        finally:
            self._close()
            if not lifecycle.over:
                lifecycle.finish()  # abandoned: nobody hears the last events

    async def _open(self) -> Optional[str]:
        """Open the transport; the proxy's URL. Raises ConnectError (an abort too)."""
        task = self._loop.create_task(open_async(self.settings, self.lifecycle, self._protocol))
        try:
            while not task.done():
                # A stop request or close() wakes us: give up the attempt.
                waiter = self._waiter = self._loop.create_future()
                await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
                self._waiter = None
                if not task.done() and self.lifecycle.aborted():
                    task.cancel()
                    raise ConnectError("connection aborted")
            transport, _, proxy = task.result()
        finally:
            if not task.done():
                task.cancel()  # we were cancelled ourselves
        self._aio = transport
        # For senders in other threads (DriverBase waits on transport.wait_writable).
        self.transport = self
        return proxy

    def _protocol(self) -> _Stream:
        return _Stream(self)

    def _take(self) -> Optional[bytes]:
        """The next chunk of input, ``b""`` at the end of the stream, ``None`` if none yet."""
        chunks = self._chunks
        if chunks:
            chunk = chunks.popleft()
            self._unread -= len(chunk)
            if self._reading_paused and self._unread <= READ_LOW_WATER:
                self._reading_paused = False
                transport = self._aio
                if transport is not None:
                    transport.resume_reading()
            return chunk
        if self._eof:
            self._eof = False  # reported once
            return _EOF
        return None

    async def _wait(self) -> None:
        """Until input arrives, something wakes us, or the lifecycle's deadline passes."""
        deadline = self.lifecycle.deadline()
        if deadline != self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_when = deadline
            self._timer = (
                None if deadline == INFINITY else self._loop.call_at(deadline, self._timer_fired)
            )
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _close(self) -> None:
        """Close the transport (at once if output is stuck); the connection is over."""
        if self.finished:
            return
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        transport = self._aio
        if transport is not None:
            if self._paused or self.lifecycle.pending_output:
                transport.abort()  # a server that reads nothing: do not wait for it
            else:
                transport.close()
        self._shutdown()
        self._progress()


__all__ = ["HIGH_WATER", "LOW_WATER", "AsyncioSession"]
