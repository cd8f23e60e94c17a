"""Ctrl-C held back while a connection's resources are released.

A Ctrl-C raises ``KeyboardInterrupt`` in the main thread between any two
bytecodes. Landing inside the few lines that close a connection's sockets or
record a run's end, it leaves a descriptor open or an app that says it is
still running, and nothing runs those lines again. The torture tests press
Ctrl-C twice within a millisecond and saw both.

:func:`ctrl_c_deferred` makes such a block whole: a SIGINT that arrives
inside it is handed to the handler in place before it (which raises
``KeyboardInterrupt``, or sets a stop request) right after the block ends.
Only for short blocks that run no user code: a handler that blocks inside
one would hold Ctrl-C back for as long.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator, List, Optional, Tuple


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Run the block whole: a SIGINT during it is handled right after it.

    A no-op outside the main thread (Python runs signal handlers there
    only) and when SIGINT is ignored or has no Python handler. Costs two
    ``sigaction`` calls: meant for once per connection, not per message.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: List[Tuple[int, Optional[FrameType]]] = []

    def hold(signum: int, frame: Optional[FrameType]) -> None:
        held.append((signum, frame))

    try:
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):
            previous = None  # SIG_IGN, SIG_DFL or set outside Python: nothing to hold
        else:
            signal.signal(signal.SIGINT, hold)
    except (ValueError, OSError):  # a subinterpreter, or the interpreter shutting down
        previous = None
    if previous is None:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for signum, frame in held:
            previous(signum, frame)  # may raise KeyboardInterrupt: the block is done


__all__ = ["ctrl_c_deferred"]
