"""Opening a hub's connections on a small bounded pool of threads.

Name resolution blocks anyway, and :func:`~lomond.sync.connect.open_connection`
already bounds every step and can be aborted, so a hub opens each socket on
a worker (:class:`Connector`) and hands the connected socket to its loop.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from ..wakeup import Wakeup


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


__all__ = ["Connector", "check_workers"]
