"""Helpers for the core client's integration tests (test_websocket.py, test_session.py).

* :func:`collect` runs a connection to the end with a watchdog, so a bug that
  hangs the loop fails one test with the events seen so far instead of
  stalling the whole run;
* :func:`check_order` asserts the event grammar documented in
  :mod:`lomond.events`;
* :func:`refused_port` gives a loopback port nothing listens on.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable, List, Optional

import pytest

from lomond import WebSocket, events

#: Test defaults for connect(): short timeouts, no automatic pings.
FAST = dict(ping_rate=0, close_timeout=3.0, connect_timeout=3.0, handshake_timeout=3.0)

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy variables in the environment must not reroute loopback test traffic."""
    for name in list(os.environ):
        if name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)


class Run:
    """The events of one connection and when each arrived (monotonic seconds)."""

    def __init__(self) -> None:
        self.events: List[events.Event] = []
        self.times: List[float] = []
        self.start = time.monotonic()

    @property
    def names(self) -> List[str]:
        return [e.name for e in self.events]

    def first(self, cls: type) -> Any:
        for event in self.events:
            if isinstance(event, cls):
                return event
        raise AssertionError(f"no {cls.__name__} in {self.names}")

    def time_of(self, cls: type) -> float:
        """Seconds from the start of the run to the first event of type ``cls``."""
        for event, at in zip(self.events, self.times):
            if isinstance(event, cls):
                return at - self.start
        raise AssertionError(f"no {cls.__name__} in {self.names}")

    def of(self, cls: type) -> List[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def collect(
    websocket: WebSocket,
    on_event: Optional[Callable[[events.Event], None]] = None,
    timeout: float = 15.0,
    **options: Any,
) -> Run:
    """Iterate ``websocket.connect(**options)`` to the end; return what happened.

    ``on_event`` is called for each event inside the loop (so it may send or
    close, like a real application). A watchdog force-disconnects after
    ``timeout`` seconds and the test fails: the loop must end by itself.
    """
    kwargs = dict(FAST)
    kwargs.update(options)
    run = Run()
    fired = threading.Event()

    def watchdog() -> None:
        fired.set()
        websocket.force_disconnect()

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    try:
        for event in websocket.connect(**kwargs):
            run.events.append(event)
            run.times.append(time.monotonic())
            if on_event is not None:
                on_event(event)
    finally:
        timer.cancel()
    assert not fired.is_set(), f"the event loop did not end within {timeout}s: {run.names}"
    check_order(run.events)
    return run


MESSAGE_EVENTS = {"text", "binary", "ping", "pong", "poll", "protocol_error", "unresponsive"}


def check_order(evs: List[events.Event]) -> None:
    """Assert the order documented in lomond.events::

        Connecting
        ConnectFail                                   (could not connect; the end)
        Connected -> Rejected -> Disconnected         (handshake refused)
        Connected -> ConnectFail -> Disconnected      (no usable answer to the upgrade)
        Connected -> Ready -> (Text | Binary | Ping | Pong | Poll | ProtocolError
                  | Unresponsive)* -> [Closing | Closed] -> Disconnected
    """
    names = [e.name for e in evs]
    assert names, "no events at all"
    assert names[0] == "connecting", names
    assert names.count("connecting") == 1, names
    if names[1:2] == ["connect_fail"]:
        assert len(names) == 2, f"events after ConnectFail without Connected: {names}"
        return
    assert names[1] == "connected", names
    assert names.count("connected") == 1, names
    assert names[-1] == "disconnected", f"the last event is not Disconnected: {names}"
    assert names.count("disconnected") == 1, f"not exactly one Disconnected: {names}"
    middle = names[2:-1]
    assert middle, f"nothing between Connected and Disconnected: {names}"
    if middle[0] in ("rejected", "connect_fail"):
        assert len(middle) == 1, names
        return
    assert middle[0] == "ready", names
    body = middle[1:]
    if body and body[-1] in ("closing", "closed"):
        body = body[:-1]
    unexpected = [n for n in body if n not in MESSAGE_EVENTS]
    assert not unexpected, f"{unexpected} out of place in {names}"
    # Unresponsive is followed by Disconnected; ProtocolError ends the connection too.
    for terminal in ("unresponsive", "protocol_error"):
        if terminal in body:
            assert body.index(terminal) == len(body) - 1 and body == middle[1:], names
    for event in evs:
        if isinstance(event, events.Disconnected):
            assert isinstance(event.graceful, bool)


def refused_port() -> int:
    """A loopback port that refuses connections (bound, never listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)
