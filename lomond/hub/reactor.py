"""One thread, one selector, one timer heap: the loop under a :class:`~lomond.handlers.hub.Hub`.

A :class:`Reactor` waits in a single ``select()`` for every registered
socket, with a timeout that is the earliest timer of all connections, and a
:class:`~lomond.wakeup.Wakeup` for calls from other threads
(:meth:`Reactor.call_soon_threadsafe`). An idle reactor sleeps until one of
its connections' own timers or bytes is due: nothing polls.

Timers are kept in one heap; cancelling marks a timer and the heap drops it
when it comes to the top (and compacts itself when most entries are dead),
so rescheduling a connection's next deadline is O(log n).

Every callback is timed (two clock reads per callback, not per message):
one that holds the thread longer than ``slow_callback`` seconds is reported
to ``on_slow``, as asyncio's debug mode reports slow callbacks, and
:attr:`Reactor.busy` tells another thread what the loop is running now.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

from ..wakeup import Wakeup

log = logging.getLogger("lomond.reactor")

#: What a registered file object calls when it is ready: ``callback(mask)``.
IOCallback = Callable[[int], None]


class Timer:
    """A callback due at a ``time.monotonic()`` time; :meth:`cancel` it to forget it."""

    __slots__ = ("_reactor", "callback", "cancelled", "when")

    def __init__(self, reactor: Reactor, when: float, callback: Callable[[], None]) -> None:
        self._reactor = reactor
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not call the callback (idempotent; on the reactor's thread)."""
        if not self.cancelled:
            self.cancelled = True
            self._reactor._cancelled += 1


class Reactor:
    """An event loop for non-blocking sockets and timers, run by one thread.

    Everything but :meth:`call_soon_threadsafe` and :meth:`stop` must be
    called from the loop's thread (or before it runs).
    """

    def __init__(
        self,
        slow_callback: Optional[float] = None,
        on_slow: Optional[Callable[[Callable[..., None], float], None]] = None,
    ) -> None:
        #: Seconds a callback may run before ``on_slow(callback, seconds)`` hears of it.
        self.slow_callback = slow_callback
        self._on_slow = on_slow
        # What runs now, and since when (monotonic): read by other threads.
        self._busy: Optional[Tuple[Callable[..., None], float]] = None
        self._selector = selectors.DefaultSelector()
        self._wakeup = Wakeup()
        self._selector.register(self._wakeup.fileno(), selectors.EVENT_READ, None)
        self._heap: List[Tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._cancelled = 0
        self._ready: Deque[Callable[[], None]] = deque()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    # -- threads ----------------------------------------------------------------------

    @property
    def thread(self) -> Optional[threading.Thread]:
        """The thread running :meth:`run`, or ``None``."""
        return self._thread

    def in_loop(self) -> bool:
        """Whether the caller is the loop's thread."""
        return self._thread is threading.current_thread()

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the loop's thread after the current step (loop thread only)."""
        self._ready.append(callback)

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the loop's thread soon; from any thread, lock-free.

        ``deque.append`` is atomic, and the wake-up is one byte on a socket
        pair, so this is safe from a signal handler too. The byte is written
        from the loop's own thread as well: a signal handler runs there, and
        the ``select()`` it interrupted resumes with the time it had left.
        """
        self._ready.append(callback)
        self._wakeup.wake()

    @property
    def busy(self) -> Optional[Tuple[Callable[..., None], float]]:
        """The callback running now and since when (``time.monotonic()``), or ``None``.

        Read from other threads to explain a delay (a handler that blocks).
        """
        return self._busy

    # -- I/O ---------------------------------------------------------------------------

    def register(self, fileobj: Any, events: int, callback: IOCallback) -> None:
        """Watch ``fileobj`` for ``events``; ``callback(mask)`` runs when it is ready."""
        self._selector.register(fileobj, events, callback)

    def modify(self, fileobj: Any, events: int, callback: IOCallback) -> None:
        """Change what ``fileobj`` is watched for."""
        self._selector.modify(fileobj, events, callback)

    def unregister(self, fileobj: Any) -> None:
        """Stop watching ``fileobj`` (before closing it); nothing if it is not watched."""
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError, OSError):
            pass

    # -- timers ------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback()`` at ``time.monotonic()`` time ``when`` (loop thread only)."""
        timer = Timer(self, when, callback)
        heapq.heappush(self._heap, (when, next(self._sequence), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback()`` in ``delay`` seconds (loop thread only)."""
        return self.call_at(time.monotonic() + delay, callback)

    @property
    def timer_count(self) -> int:
        """Live timers in the heap (for tests and statistics)."""
        return len(self._heap) - self._cancelled

    def _compact(self) -> None:
        # Rescheduling leaves cancelled entries behind; rebuild the heap once
        # they are the majority, so it stays O(live timers) in size.
        self._heap = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        self._cancelled = 0

    # -- running -----------------------------------------------------------------------

    def stop(self) -> None:
        """End :meth:`run` after the current step; from any thread."""
        self._stopping = True
        self._wakeup.wake()

    def run(self) -> None:
        """Run until :meth:`stop`, in the calling thread."""
        if self._thread is not None:
            raise RuntimeError("the reactor is running already")
        self._thread = threading.current_thread()
        self._stopping = False
        heap = self._heap
        ready = self._ready
        select = self._selector.select
        wakeup = self._wakeup
        monotonic = time.monotonic
        heappop = heapq.heappop
        try:
            while not self._stopping:
                heap = self._heap
                # Cancelled timers (a connection's earlier deadline, say its
                # handshake timeout once Ready) must not wake the loop.
                while heap and heap[0][2].cancelled:
                    heappop(heap)
                    self._cancelled -= 1
                if self._cancelled > 64 and self._cancelled * 2 > len(heap):
                    self._compact()
                    heap = self._heap
                if ready:
                    timeout: Optional[float] = 0.0
                elif heap:
                    timeout = max(0.0, heap[0][0] - monotonic())
                else:
                    timeout = None
                events = select(timeout)
                for key, mask in events:
                    callback = key.data
                    if callback is None:
                        wakeup.drain()
                    else:
                        self._call(callback, mask)
                if heap:
                    now = monotonic()
                    while heap and heap[0][0] <= now:
                        timer = heappop(heap)[2]
                        if timer.cancelled:
                            self._cancelled -= 1
                        else:
                            timer.cancelled = True  # fired: a late cancel() is a no-op
                            self._call(timer.callback)
                        heap = self._heap  # a callback may have compacted it
                # Calls queued by callbacks and by other threads, including
                # those queued while these run (a bounded number per step
                # keeps timers and I/O from starving).
                for _ in range(len(ready)):
                    self._call(ready.popleft())
        finally:
            self._thread = None

    def _call(self, callback: Callable[..., None], *args: int) -> None:
        # A bug in one connection's callback must not end every connection:
        # logged and the loop goes on. KeyboardInterrupt and SystemExit do end it.
        started = time.monotonic()
        self._busy = (callback, started)
        try:
            callback(*args)
        except Exception:
            log.exception("reactor: callback %r raised; ignored", callback)
        finally:
            self._busy = None
        slow = self.slow_callback
        if slow is not None:
            elapsed = time.monotonic() - started
            if elapsed > slow and self._on_slow is not None:
                try:
                    self._on_slow(callback, elapsed)
                except Exception:
                    log.exception("reactor: the slow-callback report raised; ignored")

    def close(self) -> None:
        """Release the selector (after :meth:`run` returned)."""
        self._selector.close()
        # The wake-up pair closes when the reactor is gone (see Wakeup):
        # another thread may still be about to call_soon_threadsafe().


__all__ = ["IOCallback", "Reactor", "Timer"]
