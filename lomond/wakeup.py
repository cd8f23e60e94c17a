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
import time
from typing import Optional, Tuple


class Wakeup:
    """A self-pipe: :meth:`wake` from any thread makes a pending ``select()`` return.

    Register :meth:`fileno` for reading in the selector; call :meth:`drain`
    after it fired.
    """

    __slots__ = ("_reader", "_writer")

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        """The descriptor to register for reading (``-1`` once closed)."""
        return self._reader.fileno()

    def wake(self) -> None:
        """Make a waiting (or the next) ``select()`` return; lock-free, signal-safe."""
        try:
            self._writer.send(b"\0")
        except OSError:
            # The buffer is full (a wake-up is pending already) or the pair
            # was closed (nobody waits any more): nothing to do either way.
            pass

    def drain(self) -> None:
        """Consume pending wake-ups."""
        try:
            while self._reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        """Release both descriptors; later :meth:`wake` calls do nothing."""
        self._reader.close()
        self._writer.close()


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

    __slots__ = ("_requested", "_wakeups")

    def __init__(self) -> None:
        self._requested = False
        # Replaced, never mutated in place: set() iterates a snapshot that
        # no other thread can change under it, without a lock.
        self._wakeups: Tuple[Wakeup, ...] = ()

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

    def attach(self, wakeup: Wakeup) -> None:
        """Wake ``wakeup`` when the signal is set (at once if it is set already)."""
        self._wakeups = (*self._wakeups, wakeup)
        if self._requested:
            wakeup.wake()

    def detach(self, wakeup: Wakeup) -> None:
        """Stop waking ``wakeup``."""
        self._wakeups = tuple(w for w in self._wakeups if w is not wakeup)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the signal is set or ``timeout`` seconds pass; whether it is set."""
        return wait_for_stop((self,), timeout)


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
        wakeup.close()


__all__ = ["StopSignal", "Wakeup", "wait_for_stop"]
