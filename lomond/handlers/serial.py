"""Slow work off the hub's thread, one task at a time per key, in order.

A :class:`~lomond.handlers.hub.Hub` runs every app's handlers on one
thread, so a handler that blocks delays every other app. Hand the slow part
to a :class:`SerialExecutor`: tasks submitted with the same key (the app)
run one after another in submission order, on a shared pool of threads,
while tasks of different keys run in parallel. So each app still sees its
messages processed in the order they arrived.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Executor, Future
from typing import Any, Callable, Deque, Dict, Hashable, Tuple, TypeVar

T = TypeVar("T")

_Task = Tuple["Future[Any]", Callable[..., Any], Tuple[Any, ...], Dict[str, Any]]


class SerialExecutor:
    """Runs tasks on ``executor``: serially per key, concurrently across keys."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        # A key is present while it has a task queued or running.
        self._queues: Dict[Hashable, Deque[_Task]] = {}

    def submit(
        self, key: Hashable, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` after every task submitted before it for ``key``.

        Returns a :class:`concurrent.futures.Future` with its result or exception.
        """
        if not callable(fn):
            raise TypeError(f"offload() takes a callable, not {fn!r}")
        future: Future[T] = Future()
        with self._lock:
            queue = self._queues.get(key)
            idle = queue is None
            if queue is None:
                queue = self._queues[key] = deque()
            queue.append((future, fn, args, kwargs))
        if idle:
            self._executor.submit(self._run_next, key)
        return future

    def pending(self, key: Hashable) -> int:
        """Tasks queued or running for ``key``."""
        with self._lock:
            queue = self._queues.get(key)
            return len(queue) if queue is not None else 0

    def _run_next(self, key: Hashable) -> None:
        with self._lock:
            future, fn, args, kwargs = self._queues[key][0]
        if future.set_running_or_notify_cancel():
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)
        with self._lock:
            queue = self._queues[key]
            queue.popleft()
            more = bool(queue)
            if not more:
                del self._queues[key]
        if more:
            self._executor.submit(self._run_next, key)


__all__ = ["SerialExecutor"]
