"""Ctrl-C during ``run_forever()``: a graceful close instead of a dropped connection.

A ``KeyboardInterrupt`` raised while lomond waits for the socket would end the
event generator at once, dropping the connection without a Close frame. So,
while an app runs in the main thread and SIGINT has Python's default handler,
:func:`graceful_sigint` replaces that handler: the first Ctrl-C only sets the
app's stop signal (the session wakes at once and closes gracefully, code
1000, and the run ends within ``close_timeout``), and ``run_forever`` raises
``KeyboardInterrupt`` afterwards. A second Ctrl-C raises ``KeyboardInterrupt``
at once, as usual. Later ones, while the block still runs, are only noted:
the block is then closing its sockets on the way out, and an exception in
the middle of that would leave some open. The previous handler is restored
when the run ends.

The replacement handler takes no lock, since it may interrupt the main
thread while that thread holds one (the :mod:`signal` documentation warns
that a handler must not): it appends to a list and calls
:meth:`StopSignal.set() <lomond.wakeup.StopSignal.set>`, which assigns a flag
and writes a byte to the session's wake-up socket. A ``threading.Event``
would not do: its ``set()`` takes the event's condition lock.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator, List, Optional

from ..wakeup import StopSignal


@contextlib.contextmanager
def graceful_sigint(stop: StopSignal) -> Iterator[List[int]]:
    """Turn the first SIGINT into ``stop.set()`` while the block runs.

    Yields a list that gets an item when that happened. Does nothing outside
    the main thread, or when SIGINT has a handler other than Python's default.
    """
    interrupted: List[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield interrupted
        return

    def on_sigint(signum: int, frame: Optional[FrameType]) -> None:
        interrupted.append(signum)
        if len(interrupted) == 1:
            stop.set()
        elif len(interrupted) == 2:
            signal.default_int_handler(signum, frame)  # the second one: raise now
        # A third one and more: the second's KeyboardInterrupt is on its way out.

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


__all__ = ["graceful_sigint"]
