"""Helpers for the lomond.handlers tests (real servers on loopback, from tests/conftest.py)."""

from __future__ import annotations

import threading
from typing import Any, List

from core_helpers import FAST  # the test defaults: short timeouts, no automatic pings

from lomond import events
from lomond.handlers import Outcome, WebSocketApp


class Recorder:
    """A handler that keeps every event it is given."""

    def __init__(self) -> None:
        self.events: List[events.Event] = []

    def __call__(self, event: events.Event) -> None:
        self.events.append(event)

    @property
    def names(self) -> List[str]:
        return [event.name for event in self.events]

    def of(self, cls: type) -> List[Any]:
        return [event for event in self.events if isinstance(event, cls)]


def run_app(app: WebSocketApp, timeout: float = 15.0, **options: Any) -> Outcome:
    """``app.run_forever(**FAST, **options)`` in this thread, with a watchdog.

    If the run has not ended after ``timeout`` seconds the connection is
    dropped and the test fails: the loop must end by itself.
    """
    kwargs: dict[str, Any] = dict(FAST)
    kwargs.update(options)
    fired = threading.Event()

    def watchdog() -> None:
        fired.set()
        app.stop(timeout=0)
        app.websocket.force_disconnect()

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    try:
        outcome = app.run_forever(**kwargs)
    finally:
        timer.cancel()
    assert not fired.is_set(), f"run_forever did not end within {timeout}s"
    return outcome


def close_handshake_script(messages: List[str]) -> Any:
    """A scripted-server script: handshake, send ``messages``, then answer the client's close.

    The script returns the ``(code, reason)`` of the client's Close frame
    (``None`` if the client dropped TCP without one).
    """

    def script(conn: Any) -> Any:
        conn.handshake()
        for message in messages:
            conn.send_text(message)
        received = conn.recv_close()
        if received is not None:
            conn.send_close(received[0])
        return received

    return script
