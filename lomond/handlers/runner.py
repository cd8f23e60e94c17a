"""Running a function once in a daemon thread, keeping its result or exception.

:class:`Completion` is the part a runner that is not a thread (the hub) shares.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Optional, TypeVar

T = TypeVar("T")


#: Guards a completion's lazily created event against its end (one lock for all).
_EVENT_LOCK = threading.Lock()


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
        self._finished = False
        # Created by the first waiter only: an Event costs about 1 KB, and a
        # hub has a completion for each of its thousands of apps.
        self._event: Optional[threading.Event] = None
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
        self._finish()

    def set_exception(self, exception: BaseException) -> None:
        """The run raised ``exception``."""
        self.exception = exception
        self._finish()

    def _finish(self) -> None:
        with _EVENT_LOCK:
            self._finished = True
            event = self._event
        if event is not None:
            event.set()

    @property
    def done(self) -> bool:
        """Whether the run returned or raised."""
        return self._finished

    def _wait_done(self, timeout: Optional[float]) -> bool:
        with _EVENT_LOCK:
            if self._finished:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: forever) for the run to finish."""
        return self._wait_done(timeout)


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
        if not self._wait_done(timeout):
            return False
        if self._thread is not threading.current_thread():
            self._thread.join()  # only the thread's exit is left: immediate
        return True


__all__ = ["Completion", "Runner"]
