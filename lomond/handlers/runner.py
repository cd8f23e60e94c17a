"""Running a function once in a daemon thread, keeping its result or exception.

:class:`Completion` is the part a runner that is not a thread (the hub) shares.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Optional, TypeVar

from ..wakeup import Latch

T = TypeVar("T")


class Completion(Generic[T]):
    """The end of a run that happens elsewhere: its result or exception, and a way to wait.

    The thread runner (:class:`Runner`) and :class:`~lomond.handlers.hub.Hub`
    both hand one to :meth:`WebSocketApp.begin_run
    <lomond.handlers.app.WebSocketApp.begin_run>`, so that ``stop()`` and
    ``join()`` work the same whichever runs the app.
    """

    def __init__(
        self,
        thread: Optional[threading.Thread] = None,
        explain: Optional[Callable[[Any], Optional[str]]] = None,
        cancel: Optional[Callable[[Any], None]] = None,
    ) -> None:
        self._cancel = cancel
        # A Latch, not an Event: a hub has a completion for each of its
        # thousands of apps, and an Event costs about 1 KB.
        self._done = Latch()
        self._explain = explain
        self.result: Optional[T] = None
        self.exception: Optional[BaseException] = None
        #: The thread that runs the app (``None`` until it is known).
        self.thread = thread

    def explain(self, app: Any) -> Optional[str]:
        """Why the run's thread cannot handle ``app``'s events now, if it is held.

        ``None`` unless the runner said how to tell (``explain=``, called
        with the app): a :class:`~lomond.handlers.hub.Hub` names the handler
        that holds its thread.
        """
        return None if self._explain is None else self._explain(app)

    def cancel(self, app: Any) -> None:
        """``app.stop()`` was called: end a run that has not started, if the runner can.

        Nothing by default (a thread's run sees the stop itself); a
        :class:`~lomond.handlers.hub.Hub` that is not running ends the run at once.
        """
        if self._cancel is not None:
            self._cancel(app)

    def set_result(self, result: Optional[T]) -> None:
        """The run returned ``result``."""
        self.result = result
        self._done.set()

    def set_exception(self, exception: BaseException) -> None:
        """The run raised ``exception``."""
        self.exception = exception
        self._done.set()

    @property
    def done(self) -> bool:
        """Whether the run returned or raised."""
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: forever) for the run to finish."""
        return self._done.wait(timeout)


class Runner(Completion[T]):
    """Runs ``target()`` in a named daemon thread.

    Whatever ``target`` returns is kept in :attr:`result`; whatever it raises
    (``BaseException`` included) in :attr:`exception`, so that nothing reaches
    :func:`threading.excepthook` and its printing.
    """

    def __init__(self, target: Callable[[], T], name: str) -> None:
        self._target = target
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        super().__init__(self._thread)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def _run(self) -> None:
        try:
            result = self._target()
        except BaseException as error:  # kept for join(); the target logs it
            self.set_exception(error)
        else:
            self.set_result(result)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: forever) for ``target`` to finish."""
        if not self._done.wait(timeout):
            return False
        if self._thread is not threading.current_thread():
            self._thread.join()  # only the thread's exit is left: immediate
        return True


__all__ = ["Completion", "Runner"]
