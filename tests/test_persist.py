"""lomond.persist.persist(): reconnection, back-off with full jitter, Retry-After, stopping.

Lomond 0.3.4's observable behaviour (issue 20) is checked too: ``close()``
inside the loop reconnects, ``exit_event`` needs only ``wait(timeout)``,
``websocket`` only ``connect()``, and the last event is the ``BackOff`` the
loop waited on.

Against real servers on loopback that the tests stop and restart. The
back-off schedule is checked without sleeping: ``lomond.persist.random`` is
fixed and the wait itself (``lomond.persist.wait_for_stop``, tested in
test_wakeup.py) is replaced by a recorder, so the tests see exactly how long
each wait would be. Only the promise that a stop is prompt is measured, with
30 s waits and a generous bound.
"""

from __future__ import annotations

import email.utils
import importlib
import logging
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

import pytest
from core_helpers import later, names, refused_port
from pytest_mock import MockerFixture

from lomond import WebSocket, events
from lomond.persist import back_off_delay, persist, retry_after
from lomond.response import Response
from lomond.wakeup import StopSignal

# The module: the package exports the persist() function under the same name.
persist_module = importlib.import_module("lomond.persist")

#: How soon a stop must end a wait that would otherwise last 30 s: far below
#: that, and generous for a busy 2-core machine.
PROMPT = 2.0

#: Quick connections for the reconnect loop: frequent polls, no pings.
LOOP = {"poll": 0.05, "ping_rate": 0, "close_timeout": 2}


def attempts(seen: List[events.Event]) -> List[List[str]]:
    """The event names of each connection attempt (split at BackOff), checked for order."""
    result: List[List[str]] = [[]]
    for name in names(seen):
        if name == "back_off":
            result.append([])
        else:
            result[-1].append(name)
    if not result[-1]:
        result.pop()  # stopped during the last back-off
    for attempt in result:
        assert attempt[0] == "connecting", attempt
        if attempt[1] == "connect_fail":
            assert attempt == ["connecting", "connect_fail"]
            continue
        assert attempt[1] == "connected", attempt
        assert attempt[-1] == "disconnected", attempt
        assert attempt.count("connected") == attempt.count("disconnected") == 1, attempt
        assert attempt.count("ready") <= 1, attempt
    return result


def drain(
    iterator: Any,
    on_event: Callable[[events.Event], None],
    timeout: float = 15.0,
) -> List[events.Event]:
    """Run a persist loop to its end, calling ``on_event``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    seen: List[events.Event] = []
    for event in iterator:
        seen.append(event)
        on_event(event)
        assert time.monotonic() < deadline, f"persist still running: {names(seen)}"
    return seen


# -- the back-off schedule -------------------------------------------------------------


def test_back_off_delay_full_jitter_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(persist_module, "random", lambda: 0.0)
    assert [back_off_delay(n, 1, 10) for n in range(6)] == [1, 1, 1, 1, 1, 1]
    monkeypatch.setattr(persist_module, "random", lambda: 1.0)
    assert [back_off_delay(n, 1, 10) for n in range(6)] == [2, 2, 4, 8, 10, 10]
    monkeypatch.setattr(persist_module, "random", lambda: 0.5)
    assert [back_off_delay(n, 1, 10) for n in range(1, 6)] == [1.5, 2.5, 4.5, 5.5, 5.5]


def test_back_off_delay_after_very_many_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    # Days of a dead server: 2 ** failures must not overflow a float.
    monkeypatch.setattr(persist_module, "random", lambda: 1.0)
    assert back_off_delay(5000, 0.05, 30) == 30


def test_back_off_delay_zero_min_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cap cannot double from zero; it is max_wait at once (no busy loop).
    monkeypatch.setattr(persist_module, "random", lambda: 0.5)
    assert back_off_delay(1, 0, 8) == 4


def test_bad_waits_rejected() -> None:
    with pytest.raises(ValueError):
        next(persist(WebSocket("ws://127.0.0.1:1/"), min_wait=-1))


def record_waits(mocker: MockerFixture) -> List[float]:
    """Replace the back-off wait by a recorder that returns at once; the list of waits.

    A loop whose exit_event is not a StopSignal waits with ``exit_event.wait()``:
    give it a :class:`RecordingEvent` on this list.
    """
    waits: List[float] = []

    def wait_for_stop(signals: Any, timeout: float) -> bool:
        waits.append(timeout)
        return any(signal.is_set() for signal in signals)

    mocker.patch.object(persist_module, "wait_for_stop", side_effect=wait_for_stop)
    return waits


class RecordingEvent(threading.Event):
    """A ``threading.Event`` whose ``wait()`` records the timeout and returns at once."""

    def __init__(self, waits: List[float]) -> None:
        super().__init__()
        self.waits = waits

    def wait(self, timeout: Optional[float] = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return self.is_set()


@pytest.mark.parametrize(
    "fixed, expected",
    [(0.0, [1.0] * 6), (1.0, [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]), (0.5, [1.5, 2.5, 4.5, 5.5])],
)
@pytest.mark.parametrize("stop_with", ["none", "event", "signal"])
def test_back_off_events_and_waits(
    mocker: MockerFixture, fixed: float, expected: List[float], stop_with: str
) -> None:
    mocker.patch.object(persist_module, "random", return_value=fixed)
    waits = record_waits(mocker)
    exit_event: Any = {
        "none": None, "event": RecordingEvent(waits), "signal": StopSignal()
    }[stop_with]
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")
    backoffs: List[events.BackOff] = []
    seen: List[events.Event] = []
    for event in persist(websocket, min_wait=1, max_wait=10, exit_event=exit_event, **LOOP):
        seen.append(event)
        if isinstance(event, events.BackOff):
            backoffs.append(event)
            if len(backoffs) == len(expected):
                break
    assert [b.delay for b in backoffs] == pytest.approx(expected)
    # Each wait was exactly what its BackOff announced.
    assert waits == [b.delay for b in backoffs[:-1]]
    assert all(a == ["connecting", "connect_fail"] for a in attempts(seen))


def test_cap_resets_after_ready(mocker: MockerFixture, ws_server_factory: Any) -> None:
    mocker.patch.object(persist_module, "random", return_value=1.0)
    waits = record_waits(mocker)
    server = ws_server_factory()
    server.stop()  # down at first; the same port comes back later
    exit_event = RecordingEvent(waits)
    delays: List[float] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.BackOff):
            delays.append(event.delay)
            if len(delays) == 3:
                server.start()
            elif len(delays) == 5:
                exit_event.set()

    websocket = WebSocket(server.url_for("/close"))  # closes right after the handshake
    seen = drain(
        persist(websocket, min_wait=0.02, max_wait=10, exit_event=exit_event, **LOOP), on_event
    )
    # 3 refused attempts double the cap; each Ready resets it to 2 * min_wait.
    assert delays == pytest.approx([0.04, 0.08, 0.16, 0.04, 0.04])
    assert waits == delays
    ends = [attempt[-1] for attempt in attempts(seen)]
    assert ends == ["connect_fail"] * 3 + ["disconnected"] * 2
    assert names(seen).count("ready") == 2


# -- Retry-After -----------------------------------------------------------------------


def response(*headers: str) -> Response:
    return Response(
        (
            "HTTP/1.1 503 Service Unavailable\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
        ).encode()
    )


def test_retry_after_parsing() -> None:
    assert retry_after(response("Retry-After: 120")) == 120
    assert retry_after(response("Retry-After:  7 ")) == 7
    assert retry_after(response()) is None
    assert retry_after(response("Retry-After: soon")) is None
    assert retry_after(response("Retry-After: -5")) is None
    assert retry_after(None) is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert retry_after(response(f"Retry-After: {future}")) == pytest.approx(30, abs=2)
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after(response(f"Retry-After: {past}")) == 0


def test_retry_after_respected(ws_server: Any, mocker: MockerFixture) -> None:
    waits = record_waits(mocker)
    exit_event = RecordingEvent(waits)
    seen_rejections: List[events.Rejected] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Rejected):
            seen_rejections.append(event)
            if len(seen_rejections) == 2:
                exit_event.set()

    websocket = WebSocket(ws_server.url_for("/reject?status=503&retry_after=1"))
    seen = drain(
        persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event, **LOOP), on_event
    )
    assert attempts(seen)[0] == ["connecting", "connected", "rejected", "disconnected"]
    backoff = next(e for e in seen if isinstance(e, events.BackOff))
    assert backoff.delay == 1.0  # beyond max_wait: the server asked for it
    assert seen_rejections[0].response.status_code == 503
    assert waits[0] == 1.0  # and the loop really waited that long


def test_rejection_without_retry_after_uses_back_off(ws_server: Any) -> None:
    exit_event = threading.Event()

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.BackOff):
            exit_event.set()

    websocket = WebSocket(ws_server.url_for("/reject?status=429"))
    seen = drain(
        persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event, **LOOP), on_event
    )
    backoff = next(e for e in seen if isinstance(e, events.BackOff))
    assert 0.01 <= backoff.delay <= 0.02


# -- stopping --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["event", "signal"])
def test_stop_during_back_off(kind: str) -> None:
    # A threading.Event ends the wait, which is exit_event.wait().
    exit_event: Any = threading.Event() if kind == "event" else StopSignal()
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")
    stopped: List[float] = []
    seen: List[events.Event] = []
    for event in persist(websocket, min_wait=30, max_wait=30, exit_event=exit_event, **LOOP):
        seen.append(event)
        if isinstance(event, events.BackOff):
            assert event.delay == 30
            stopped = later(0.1, exit_event.set)
    ended = time.monotonic()
    assert names(seen) == ["connecting", "connect_fail", "back_off"]
    # A stop ends a 30 s back-off at once.
    assert stopped and ended - stopped[0] < PROMPT


def test_stop_while_connected(ws_server: Any) -> None:
    # A StopSignal wakes the connection; a threading.Event is seen at the next
    # event (test_threading_event_is_seen_at_the_next_poll_while_connected).
    exit_event = StopSignal()
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[events.Event] = []
    stopped: List[float] = []
    for event in persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event,
                         poll=30, ping_rate=0, close_timeout=2):
        seen.append(event)
        if isinstance(event, events.Ready):
            stopped = later(0.1, exit_event.set)
    ended = time.monotonic()
    assert names(seen) == [
        "connecting", "connected", "ready", "closed", "disconnected", "back_off"
    ]
    assert seen[-2].graceful  # type: ignore[attr-defined]
    # Woken at once, not at the next Poll 30 s later.
    assert stopped and ended - stopped[0] < PROMPT
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000
    assert len(ws_server.connections) == 1


@pytest.mark.parametrize("stage", ["tcp", "proxy", "tls", "upgrade"])
def test_stop_while_connecting(stage: str, scripted_server: Any, ws_server: Any) -> None:
    """A stop is prompt at every step of a connect that hangs, with long timeouts."""
    proxies: Optional[dict] = {}
    if stage == "tcp":
        url = scripted_server(mode="no-accept").url
    elif stage == "proxy":
        url = "ws://target.example/"
        proxies = {"http": f"http://127.0.0.1:{scripted_server(mode='stall').port}"}
    elif stage == "tls":
        url = f"wss://localhost:{scripted_server(mode='stall').port}/"
    else:
        url = ws_server.url_for("/slow-handshake?delay=20")
    exit_event = StopSignal()  # a threading.Event is seen when the attempt ends
    websocket = WebSocket(url, proxies=proxies)
    stopped = later(0.3, exit_event.set)
    seen = drain(
        persist(websocket, exit_event=exit_event, connect_timeout=30, handshake_timeout=30, **LOOP),
        lambda event: None,
    )
    ended = time.monotonic()
    assert stopped and ended - stopped[0] < PROMPT
    assert names(seen).count("back_off") == 1 and names(seen)[-1] == "back_off"
    assert names(seen)[0] == "connecting"
    assert "connect_fail" in names(seen)
    assert "ready" not in names(seen)


def test_closing_the_generator_closes_the_connection(ws_server: Any) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    loop = persist(websocket, **LOOP)
    for event in loop:
        if isinstance(event, events.Ready):
            break
    loop.close()
    ws_server.last.wait_closed(timeout=2)
    assert websocket.is_closed


def test_connect_options_are_passed_on(ws_server: Any) -> None:
    exit_event = threading.Event()
    fails: List[str] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.ConnectFail):
            fails.append(event.reason)
            exit_event.set()

    websocket = WebSocket(ws_server.url_for("/slow-handshake?delay=5"))
    drain(persist(websocket, exit_event=exit_event, handshake_timeout=0.2, **LOOP), on_event)
    # The message names the timeout that fired: the one given to persist().
    assert fails == ["no response to the upgrade request within 0.2 s"]


# -- a server that goes away and comes back --------------------------------------------


@pytest.mark.hang_timeout(60)
def test_server_restarts(ws_server: Any) -> None:
    restarts = 4
    exit_event = threading.Event()
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[events.Event] = []
    readies = 0
    threads: List[threading.Thread] = []
    deadline = time.monotonic() + 30
    for event in persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event, **LOOP):
        seen.append(event)
        assert time.monotonic() < deadline, names(seen)
        if isinstance(event, events.Ready):
            readies += 1
            websocket.send_text(f"message {readies}")
        elif isinstance(event, events.Text):
            assert event.text == f"message {readies}"
            if readies <= restarts:
                # Alternate a clean shutdown (close frame 1001) and an abort.
                thread = threading.Thread(
                    target=ws_server.restart, kwargs={"abort": readies % 2 == 0}, daemon=True
                )
                threads.append(thread)
                thread.start()
            else:
                exit_event.set()
    for thread in threads:
        thread.join(5)

    assert names(seen)[-2:] == ["disconnected", "back_off"]
    assert len({id(event) for event in seen}) == len(seen)  # nothing delivered twice
    times = [event.received_time for event in seen]
    assert times == sorted(times)
    per_attempt = attempts(seen)
    connected = [a for a in per_attempt if "connected" in a]
    assert len(connected) == restarts + 1
    assert all(a.count("ready") == 1 and a.count("text") == 1 for a in connected)
    assert names(seen).count("disconnected") == restarts + 1
    assert names(seen).count("back_off") == len(per_attempt)  # the last one too
    texts = [e.text for e in seen if isinstance(e, events.Text)]
    assert texts == [f"message {n}" for n in range(1, restarts + 2)]
    # Drops: a clean shutdown is Closing then a graceful Disconnected; an
    # abort is an ungraceful Disconnected with no close frame.
    disconnects = [e for e in seen if isinstance(e, events.Disconnected)]
    for number, attempt in enumerate(connected[:restarts], start=1):
        if number % 2:
            assert attempt[-2:] == ["closing", "disconnected"], attempt
        else:
            assert "closing" not in attempt, attempt
    graceful = [d.graceful for d in disconnects]
    assert graceful == [n % 2 == 1 for n in range(1, restarts + 1)] + [True]
    # The server saw exactly one accepted connection per Ready, one message each.
    accepted = [rec for rec in ws_server.connections if rec.accepted]
    assert len(accepted) == restarts + 1
    assert [rec.received for rec in accepted] == [[t] for t in texts]


def test_prebound_set_ends_a_back_off_at_once() -> None:
    # threading.Timer(..., event.set): the back-off wait is exit_event.wait().
    exit_event = threading.Event()
    stop = exit_event.set
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")
    stopped: List[float] = []
    seen: List[events.Event] = []
    for event in persist(websocket, min_wait=30, max_wait=30, exit_event=exit_event, **LOOP):
        seen.append(event)
        if isinstance(event, events.BackOff):
            stopped = later(0.1, stop)
    assert names(seen) == ["connecting", "connect_fail", "back_off"]
    assert stopped and time.monotonic() - stopped[0] < PROMPT


@pytest.mark.parametrize("kind", ["none", "event", "signal"])
def test_close_during_a_back_off_does_not_end_the_loop(kind: str, mocker: MockerFixture) -> None:
    # Lomond 0.3.4: close() without a connection does nothing; the loop goes on.
    waits = record_waits(mocker)
    exit_event: Any = {"none": None, "event": RecordingEvent(waits), "signal": StopSignal()}[kind]
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")
    seen: List[events.Event] = []
    for event in persist(websocket, min_wait=0.01, max_wait=0.02, exit_event=exit_event, **LOOP):
        seen.append(event)
        if isinstance(event, events.BackOff):
            websocket.close()
            if names(seen).count("back_off") == 3:
                break
    assert names(seen) == ["connecting", "connect_fail", "back_off"] * 3
    assert len(waits) == 2


def test_threading_event_is_seen_at_the_next_poll_while_connected(ws_server: Any) -> None:
    exit_event = threading.Event()
    stop = exit_event.set
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[events.Event] = []
    for event in persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event,
                         poll=0.2, ping_rate=0, close_timeout=2):
        seen.append(event)
        if isinstance(event, events.Ready):
            later(0.05, stop)
    kinds = [event.name for event in seen]
    assert kinds[-3:] == ["closed", "disconnected", "back_off"]
    # Seen at the poll after the first one (the one right after Ready).
    assert kinds[kinds.index("ready"):].count("poll") == 2
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000


def test_stop_signal_as_exit_event_wakes_a_connected_loop(ws_server: Any) -> None:
    stop = StopSignal()
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[events.Event] = []
    for event in persist(websocket, exit_event=stop, poll=30, ping_rate=0, close_timeout=2):
        seen.append(event)
        if isinstance(event, events.Ready):
            later(0.1, stop.set)
    assert names(seen) == [
        "connecting", "connected", "ready", "closed", "disconnected", "back_off"
    ]


# -- issue 18 regressions --------------------------------------------------------------


def test_a_threading_event_is_left_alone_and_no_thread_is_started() -> None:
    exit_event = threading.Event()
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")
    backing_off = threading.Event()
    patched: List[bool] = []
    seen: List[events.Event] = []

    def loop() -> None:
        for event in persist(websocket, exit_event=exit_event, min_wait=30, max_wait=30, **LOOP):
            seen.append(event)
            if isinstance(event, events.BackOff):
                patched.append("set" in vars(exit_event))
                backing_off.set()

    before = set(threading.enumerate())
    runner = threading.Thread(target=loop, name="test-persist-loop", daemon=True)
    runner.start()
    try:
        assert backing_off.wait(10), f"no BackOff: {names(seen)}"
        # The 30 s wait begins once the loop asks for the next event; give
        # lomond a moment to start anything it starts for it.
        deadline = time.monotonic() + 1.0
        started: List[threading.Thread] = []
        while not started and time.monotonic() < deadline:
            started = [t for t in threading.enumerate() if t not in before and t is not runner]
            time.sleep(0.01)
        replaced = "set" in vars(exit_event)
    finally:
        exit_event.set()
        runner.join(10)
    assert not runner.is_alive(), "exit_event.set() did not end the 30 s back-off wait"
    assert names(seen) == ["connecting", "connect_fail", "back_off"]
    problems = []
    if patched != [False] or replaced:
        problems.append("persist() replaced the set method of the caller's exit_event")
    if started:
        problems.append(f"persist() started threads: {[t.name for t in started]}")
    assert not problems, problems


# -- Lomond 0.3.4's persist (issue 20) ----------------------------------------------------
# Observed by running the same programs against lomond 0.3.4 (a scratch venv,
# never its code): close() in the loop reconnects; exit_event is only ever
# wait()ed on; any object with connect() works; the last event is a BackOff.


def without_polls(seen: List[events.Event]) -> List[List[str]]:
    return [[name for name in attempt if name != "poll"] for attempt in attempts(seen)]


@pytest.mark.parametrize("kind", ["none", "event", "signal"])
def test_close_inside_persist_reconnects(kind: str, ws_server: Any, mocker: MockerFixture) -> None:
    """Closing a stale feed forces a fresh connection: only exit_event ends the loop."""
    waits = record_waits(mocker)
    exit_event: Any = {"none": None, "event": RecordingEvent(waits), "signal": StopSignal()}[kind]
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[events.Event] = []
    for event in persist(websocket, min_wait=0.01, max_wait=0.02, exit_event=exit_event, **LOOP):
        seen.append(event)
        if isinstance(event, events.Ready):
            websocket.close()
        elif isinstance(event, events.BackOff) and names(seen).count("back_off") == 3:
            break
    assert without_polls(seen) == [
        ["connecting", "connected", "ready", "closed", "disconnected"]
    ] * 3
    assert len(waits) == 2  # the loop waited its back-off before each reconnect
    for record in ws_server.connections:
        record.wait_closed()
    assert [record.close_code for record in ws_server.connections] == [1000] * 3


def test_close_from_another_thread_reconnects_and_exit_event_ends_the_loop(
    ws_server: Any,
) -> None:
    exit_event = threading.Event()
    websocket = WebSocket(ws_server.url_for("/echo"))
    readies = 0

    def on_event(event: events.Event) -> None:
        nonlocal readies
        if isinstance(event, events.Ready):
            readies += 1
            later(0.05, websocket.close if readies == 1 else exit_event.set)

    seen = drain(
        persist(websocket, min_wait=0.01, max_wait=0.02, exit_event=exit_event, **LOOP), on_event
    )
    assert readies == 2
    assert [a[-1] for a in without_polls(seen)] == ["disconnected", "disconnected"]
    assert names(seen)[-1] == "back_off"  # the last event, as in 0.3.4


class WaitOnly:
    """An exit_event with nothing but ``wait(timeout)`` (Lomond 0.3.4 needs no more).

    Its slots make any attempt to patch it (``exit_event.set = ...``) fail,
    and it records every wait.
    """

    __slots__ = ("flag", "waits")

    def __init__(self) -> None:
        self.flag = False
        self.waits: List[float] = []

    def wait(self, timeout: Optional[float] = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return self.flag


def test_an_exit_event_with_only_wait(ws_server: Any) -> None:
    exit_event = WaitOnly()
    websocket = WebSocket(ws_server.url_for("/close?code=1000"))  # ends each connection
    backoffs: List[float] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.BackOff):
            backoffs.append(event.delay)
            exit_event.flag = len(backoffs) == 2

    seen = drain(
        persist(websocket, min_wait=0.01, max_wait=0.02, exit_event=exit_event, **LOOP), on_event
    )
    assert [a[-1] for a in attempts(seen)] == ["disconnected", "disconnected"]
    assert names(seen)[-1] == "back_off"
    # Each back-off is exit_event.wait(delay); besides, only non-blocking looks.
    assert [w for w in exit_event.waits if w] == backoffs
    assert set(w for w in exit_event.waits if not w) <= {0}


def test_a_wait_only_exit_event_set_while_connected_closes_gracefully(ws_server: Any) -> None:
    exit_event = WaitOnly()
    websocket = WebSocket(ws_server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            exit_event.flag = True

    seen = drain(persist(websocket, exit_event=exit_event, **LOOP), on_event)
    assert without_polls(seen) == [["connecting", "connected", "ready", "closed", "disconnected"]]
    assert names(seen)[-1] == "back_off"
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000


class ConnectOnly:
    """A ``websocket`` with nothing but Lomond 0.3's ``connect()`` (no ``url``, no ``close``)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def connect(
        self, poll: float = 5.0, ping_rate: float = 30.0, ping_timeout: Optional[float] = None
    ) -> Iterator[events.Event]:
        self.calls.append((poll, ping_rate, ping_timeout))
        yield events.Connecting("ws://fake.example/")
        yield events.ConnectFail("no network")

    def __repr__(self) -> str:
        return "<ConnectOnly>"


def test_any_websocket_with_connect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lomond.persist")  # the line that read .url
    exit_event = threading.Event()
    fake = ConnectOnly()
    seen: List[events.Event] = []
    for event in persist(fake, poll=1, ping_rate=2, min_wait=0.01, max_wait=0.02,  # type: ignore[arg-type]
                         exit_event=exit_event):
        seen.append(event)
        if isinstance(event, events.Connecting) and len(fake.calls) == 2:
            exit_event.set()  # seen between events: nothing to close() on this object
    assert names(seen) == ["connecting", "connect_fail", "back_off"] * 2
    assert fake.calls == [(1, 2, None)] * 2
    assert "reconnecting to <ConnectOnly>" in caplog.text


@pytest.mark.parametrize("kind", ["event", "signal", "wait-only"])
def test_the_last_event_is_the_back_off_waited_on(
    kind: str, ws_server: Any, mocker: MockerFixture
) -> None:
    """0.3.4: once stopped, the loop still announces (and 'waits' on) its BackOff."""
    waits = record_waits(mocker)
    exit_event: Any = {
        "event": RecordingEvent(waits), "signal": StopSignal(), "wait-only": WaitOnly()
    }[kind]
    stop = (lambda: setattr(exit_event, "flag", True)) if kind == "wait-only" else exit_event.set
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[events.Event] = []
    for event in persist(websocket, exit_event=exit_event, **LOOP):
        seen.append(event)
        if isinstance(event, events.Ready):
            stop()
    assert without_polls(seen) == [["connecting", "connected", "ready", "closed", "disconnected"]]
    last = seen[-1]
    assert isinstance(last, events.BackOff)
    recorded = exit_event.waits if kind == "wait-only" else waits
    assert [w for w in recorded if w] == [last.delay]  # returned at once: it was set


def test_a_set_exit_event_before_the_first_attempt_yields_nothing() -> None:
    # lomond's choice (0.3.4 connects anyway and notices only after that
    # connection ended): a stop requested before the start is honoured.
    exit_event = threading.Event()
    exit_event.set()
    assert list(persist(WebSocket("ws://127.0.0.1:1/"), exit_event=exit_event)) == []
