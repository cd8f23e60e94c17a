"""Waking a waiting selector from another thread, or from a signal handler.

A connection waits in ``select()`` for its own bytes and its own timers and
nothing else, so a request to stop has to reach it through a file
descriptor: :class:`Wakeup` is a self-pipe (a socket pair) whose reading end
sits in the selector. :class:`StopSignal` is a one-way flag that writes to
every :class:`Wakeup` attached to it when set.

Both ``Wakeup.wake()`` and ``StopSignal.set()`` take no lock: they only
assign a flag and write one byte. That makes them safe to call from a
signal handler, which may run while the interrupted thread holds any lock
(the :mod:`signal` documentation warns that a handler taking a lock can
deadlock). A ``threading.Event`` cannot offer this: its ``set()`` takes the
event's condition lock.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
import weakref
from typing import Optional, Protocol, Tuple

from .shield import ctrl_c_deferred


class Wakeable(Protocol):
    """Anything a :class:`StopSignal` can wake: a :class:`Wakeup`, or a loop's own waker.

    ``wake()`` must be lock-free and signal-safe, as :meth:`Wakeup.wake` is
    (the hub's waker appends to a deque and writes one byte).
    """

    def wake(self) -> None:
        """Make the loop look again; lock-free, signal-safe."""


class Wakeup:
    """A self-pipe: :meth:`wake` from any thread makes a pending ``select()`` return.

    Register :meth:`fileno` for reading in the selector; call :meth:`drain`
    after it fired.

    Its two sockets are closed when the last reference to it goes (or at
    exit), not by whoever used it last: another thread may be about to
    :meth:`wake` it (a stop request iterates a snapshot of the loops to
    wake), and closing under that thread could hand its descriptor number
    to a new file while it writes. A holder that is done with it drops its
    reference; as long as a thread is inside :meth:`wake`, it holds one.
    """

    __slots__ = ("__weakref__", "_closer", "_pending", "_reader", "_writer")

    def __init__(self) -> None:
        self._pending = False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._closer = weakref.finalize(self, _close_pair, self._reader, self._writer)

    def fileno(self) -> int:
        """The descriptor to register for reading (``-1`` once closed)."""
        return self._reader.fileno()

    def wake(self) -> None:
        """Make a waiting (or the next) ``select()`` return; lock-free, signal-safe.

        One byte per wait at most: while a byte is pending (not drained
        yet), a further wake-up has nothing to add, since the waiter looks
        at everything after it drained.
        """
        if self._pending:
            return
        self._pending = True
        try:
            self._writer.send(b"\0")
        except OSError:
            # The buffer is full (a wake-up is pending already) or the pair
            # was closed (nobody waits any more): nothing to do either way.
            pass

    def drain(self) -> None:
        """Consume pending wake-ups; the waiter then looks at what it was woken for."""
        try:
            while self._reader.recv(4096):
                pass
        except OSError:
            pass
        # Cleared after reading, never before: a wake() between the two saw
        # the flag set and wrote nothing, which is right, since the waiter
        # looks at what changed after this call; cleared first, its byte could
        # be read here while the flag stayed set, and every later wake() would
        # then be skipped.
        self._pending = False

    def close(self) -> None:
        """Release both descriptors now; later :meth:`wake` calls do nothing.

        Only for a sole owner that knows no other thread can wake it.
        """
        self._closer()


def _close_pair(reader: socket.socket, writer: socket.socket) -> None:
    # It runs wherever the last reference goes, so a Ctrl-C's
    # KeyboardInterrupt can land in it: held back until both are closed.
    try:
        with ctrl_c_deferred():
            reader.close()
            writer.close()
    finally:
        # Closed already, unless the Ctrl-C landed before the shield was up.
        reader.close()
        writer.close()


class StopSignal:
    """A flag that wakes the loops waiting on it: a stop request.

    :meth:`set` may be called from any thread and from a signal handler (it
    takes no lock). A loop that must notice the request promptly attaches
    its :class:`Wakeup` with :meth:`attach` for as long as it waits, and
    looks at :meth:`is_set` when woken. It offers the part of
    ``threading.Event``'s interface that a stop request needs (``set``,
    ``is_set``, ``clear``, ``wait``), so it can be passed as
    :func:`~lomond.persist.persist`'s ``exit_event``.
    """

    __slots__ = ("_lock", "_requested", "_wakeups")

    def __init__(self) -> None:
        self._requested = False
        # Replaced, never mutated in place: set() iterates a snapshot that
        # no other thread can change under it, without a lock. attach() and
        # detach() replace it under _lock, so that no registration is lost
        # when threads attach at once (they never run in a signal handler).
        self._wakeups: Tuple[Wakeable, ...] = ()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<StopSignal {'set' if self._requested else 'clear'}>"

    def set(self) -> None:
        """Request the stop and wake every attached loop (lock-free, signal-safe)."""
        self._requested = True
        for wakeup in self._wakeups:
            wakeup.wake()

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self._requested

    def clear(self) -> None:
        """Withdraw the request (before a new run)."""
        self._requested = False

    def attach(self, wakeup: Wakeable) -> None:
        """Wake ``wakeup`` when the signal is set (at once if it is set already)."""
        with self._lock:
            self._wakeups = (*self._wakeups, wakeup)
        if self._requested:
            wakeup.wake()

    def detach(self, wakeup: Wakeable) -> None:
        """Stop waking ``wakeup``."""
        with self._lock:
            self._wakeups = tuple(w for w in self._wakeups if w is not wakeup)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the signal is set or ``timeout`` seconds pass; whether it is set."""
        return wait_for_stop((self,), timeout)


#: Guards every Latch's lazily created event against its set(): one lock for
#: all, taken once per set() and per wait(), never on a hot path.
_LATCH_LOCK = threading.Lock()


class Latch:
    """A one-way flag that threads can wait on, whose ``threading.Event`` exists only for a waiter.

    An Event costs about a kilobyte (a condition and its deque of waiters);
    a hub keeps a flag like this for each of its thousands of connections
    and apps, and almost none is ever waited on. Not for signal handlers
    (:meth:`set` takes a lock): use a :class:`StopSignal` there.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: Optional[threading.Event] = None

    def set(self) -> bool:
        """Set the flag and release the waiters; whether this call set it (False if set already)."""
        with _LATCH_LOCK:
            if self._set:
                return False
            self._set = True
            event = self._event
        if event is not None:
            event.set()
        return True

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._set

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: forever) for the flag; whether it is set."""
        with _LATCH_LOCK:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


def wait_for_stop(signals: Tuple[StopSignal, ...], timeout: Optional[float]) -> bool:
    """Sleep until one of ``signals`` is set or ``timeout`` passes; whether one is set.

    One ``select()`` on a private :class:`Wakeup`: no polling, however long the wait.
    """
    if any(signal.is_set() for signal in signals):
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    wakeup = Wakeup()
    for signal in signals:
        signal.attach(wakeup)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(wakeup.fileno(), selectors.EVENT_READ)
            while not any(signal.is_set() for signal in signals):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                selector.select(remaining)
                wakeup.drain()
            return True
    finally:
        for signal in signals:
            signal.detach(wakeup)
        # Not closed here: a set() in another thread may still hold it (see Wakeup).


__all__ = ["Latch", "StopSignal", "Wakeable", "Wakeup", "wait_for_stop"]
