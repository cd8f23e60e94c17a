"""Running a function once in a daemon thread, keeping its result or exception."""

from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class Runner(Generic[T]):
    """Runs ``target()`` in a named daemon thread.

    Whatever ``target`` returns is kept in :attr:`result`; whatever it raises
    (``BaseException`` included) in :attr:`exception`, so that nothing reaches
    :func:`threading.excepthook` and its printing.
    """

    def __init__(self, target: Callable[[], T], name: str) -> None:
        self._target = target
        self._done = threading.Event()
        self.result: Optional[T] = None
        self.exception: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._target()
        except BaseException as error:  # kept for join(); the target logs it
            self.exception = error
        finally:
            self._done.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: forever) for ``target`` to finish."""
        if not self._done.wait(timeout):
            return False
        if self.thread is not threading.current_thread():
            self.thread.join()  # only the thread's exit is left: immediate
        return True


__all__ = ["Runner"]
