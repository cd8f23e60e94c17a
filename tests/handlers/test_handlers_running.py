"""WebSocketApp against real servers on loopback: the loop, the thread runner, reconnects."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, List

import pytest
from app_helpers import FAST, Recorder, close_handshake_script, run_app
from core_helpers import check_order, refused_port
from peers.raw_server import ScriptedServer
from peers.ws_server import WSServer

from lomond import events
from lomond.events import Event, Text
from lomond.handlers import Outcome, WebSocketApp
from lomond.handlers import app as app_module

# -- the loop -----------------------------------------------------------------------------


def test_ten_thousand_messages_in_order_and_serially(ws_server: WSServer) -> None:
    count = 10_000
    app = WebSocketApp(ws_server.url_for(f"/stream?count={count}"))
    calls: List[str] = []
    texts: List[str] = []
    busy = threading.Lock()
    overlaps: List[str] = []

    @app.on("*")
    def first(event: Event) -> None:
        if not busy.acquire(blocking=False):
            overlaps.append(event.name)  # a handler of another event is still running
            return
        calls.append("first")

    @app.on("text")
    def second(event: Text) -> None:
        texts.append(event.text)
        calls.append("second")
        if event.text == str(count - 1):
            app.close()

    @app.on("*")
    def third(event: Event) -> None:
        calls.append("third")
        busy.release()

    recorder = app.on("*", Recorder())
    outcome = run_app(app, timeout=60)
    assert texts == [str(n) for n in range(count)]
    assert overlaps == []
    text_calls = [c for c in calls if c != "first" and c != "third"]
    assert len(text_calls) == count
    # first, [second,] third for every event, never interleaved with the next one
    assert "".join(c[0] for c in calls).replace("fst", "").replace("ft", "") == ""
    check_order(recorder.events)
    assert outcome == Outcome(
        close_code=1000, close_reason="goodbye", graceful=True, connections=1, reason="closed"
    )


def test_handlers_send_and_the_server_echoes(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    echoes: List[str] = []

    @app.on("ready")
    def ready(event: events.Ready) -> None:
        app.send_text("one")
        app.send_json(number=2)

    @app.on("text")
    def text(event: Text) -> None:
        echoes.append(event.text)
        if len(echoes) == 2:
            app.close(4000, "done")

    outcome = run_app(app)
    assert echoes == ["one", '{"number": 2}']
    assert outcome.close_code == 4000 and outcome.close_reason == "done"
    assert outcome.graceful
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 4000


def test_outcome_of_a_failed_connection() -> None:
    app = WebSocketApp(f"ws://127.0.0.1:{refused_port()}/")
    recorder = app.on("*", Recorder())
    outcome = run_app(app)
    assert recorder.names == ["connecting", "connect_fail"]
    # the outcome says why: the ConnectFail's reason
    assert outcome == Outcome(reason=recorder.events[-1].reason)  # type: ignore[attr-defined]
    assert outcome.reason is not None and outcome.reason.startswith("could not connect to")
    assert app.wait_ready(0) is False


def test_server_close_is_reported(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/close?code=4321&reason=later"))
    recorder = app.on("*", Recorder())
    outcome = run_app(app)
    assert recorder.names[-2:] == ["closing", "disconnected"]
    assert outcome == Outcome(
        close_code=4321, close_reason="later", graceful=True, connections=1, reason="closed"
    )


def test_running_twice_at_once_is_refused(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    errors: List[BaseException] = []

    @app.on("ready")
    def ready(event: events.Ready) -> None:
        try:
            app.run_forever()
        except RuntimeError as error:
            errors.append(error)
        app.close()

    run_app(app)
    assert len(errors) == 1 and "already running" in str(errors[0])
    # and once the run is over, it may run again
    assert run_app(app).connections == 1


# -- the thread runner -------------------------------------------------------------------


def test_start_wait_ready_stop_within_one_second(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    threads: List[str] = []
    app.on("ready", lambda event: threads.append(threading.current_thread().name))
    app.start(poll=30, **FAST)
    assert app.is_running
    assert app.wait_ready(5)
    assert app.is_active
    started = time.monotonic()
    outcome = app.stop()
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"stop() took {elapsed:.2f}s"
    assert outcome == Outcome(
        close_code=1000, close_reason="goodbye", graceful=True, connections=1, reason="closed"
    )
    assert threads == ["lomond-app-127.0.0.1"]
    assert not app.is_running
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000
    assert app.join(0) == outcome


def test_stop_from_another_thread_ends_run_forever(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/record"))
    stopped: List[Any] = []

    def stopper() -> None:
        assert app.wait_ready(5)
        started = time.monotonic()
        stopped.append(app.stop())
        stopped.append(time.monotonic() - started)

    thread = threading.Thread(target=stopper)
    thread.start()
    outcome = run_app(app, poll=30)
    thread.join(5)
    assert stopped and stopped[0] == outcome and stopped[1] < 1.0
    assert outcome.graceful and outcome.close_code == 1000


def test_stop_during_back_off_within_one_second() -> None:
    app = WebSocketApp(f"ws://127.0.0.1:{refused_port()}/")
    backing_off = threading.Event()
    app.on("back_off", lambda event: backing_off.set())
    app.start(reconnect=True, min_wait=30, max_wait=30, poll=30, **FAST)
    assert backing_off.wait(5)
    started = time.monotonic()
    outcome = app.stop()
    assert time.monotonic() - started < 1.0
    assert outcome is not None and outcome.connections == 0
    assert outcome.reason is not None and outcome.reason.startswith("could not connect to")


def test_stop_requested_before_the_loop_starts_is_not_lost(
    ws_server: WSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    class HeldRunner(app_module.Runner):  # type: ignore[type-arg]
        """Starts its thread only once the test says so."""

        def start(self) -> None:
            def later() -> None:
                release.wait(5)
                self.thread.start()

            threading.Thread(target=later, daemon=True).start()

    monkeypatch.setattr(app_module, "Runner", HeldRunner)
    app = WebSocketApp(ws_server.url_for("/echo"))
    recorder = app.on("*", Recorder())
    app.start(poll=30, **FAST)
    assert app.stop(timeout=0) is None  # not finished: the thread has not even started
    release.set()
    outcome = app.join(5)
    assert outcome == Outcome()
    assert recorder.events == []  # ended without connecting
    assert ws_server.connections == []


def test_stop_right_after_start(ws_server: WSServer) -> None:
    # The thread may or may not have connected by the time stop() runs: the
    # run must end promptly either way, closing gracefully if it got ready.
    for _ in range(5):
        app = WebSocketApp(ws_server.url_for("/echo"))
        recorder = app.on("*", Recorder())
        app.start(poll=30, **FAST)
        started = time.monotonic()
        outcome = app.stop()
        assert time.monotonic() - started < 1.0
        assert outcome is not None
        if recorder.events:
            check_order(recorder.events)
        if "ready" in recorder.names:
            assert outcome.close_code == 1000 and outcome.graceful


def test_stop_on_an_idle_app_does_nothing(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/close"))
    assert app.stop() is None
    assert app.join() is None
    outcome = run_app(app)
    assert outcome.connections == 1 and outcome.close_code == 1000
    assert app.stop() == outcome  # the last outcome; still does not arm the next run
    assert run_app(app).connections == 1


def test_stop_from_a_handler(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    results: List[Any] = []
    app.on("ready", lambda event: results.append(app.stop()))
    outcome = run_app(app, poll=30)
    assert results == [None]  # the loop cannot wait for itself
    assert outcome.graceful and outcome.close_code == 1000


def test_running_context_manager(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    echoed = threading.Event()
    app.on("text", lambda event: echoed.set())
    with app.running(poll=30, **FAST) as running:
        assert running is app
        assert app.wait_ready(5)
        app.send_text("hello")
        assert echoed.wait(5)
    assert not app.is_running
    assert app.outcome.graceful and app.outcome.close_code == 1000
    ws_server.last.wait_closed()
    assert ws_server.last.received == ["hello"]
    assert ws_server.last.close_code == 1000


def test_start_twice_is_refused(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    app.run_in_thread(**FAST)
    try:
        with pytest.raises(RuntimeError):
            app.start()
    finally:
        assert app.stop() is not None


def test_wait_ready_returns_false_when_the_run_ends() -> None:
    app = WebSocketApp(f"ws://127.0.0.1:{refused_port()}/")
    app.start(**FAST)
    started = time.monotonic()
    assert app.wait_ready(10) is False
    assert time.monotonic() - started < 5
    outcome = app.join(5)
    assert outcome is not None and outcome.connections == 0 and outcome.error is None
    assert outcome.reason is not None and outcome.reason.startswith("could not connect to")


# -- reconnects ----------------------------------------------------------------------------


def test_reconnect_after_server_restarts(ws_server: WSServer) -> None:
    restarts = 3
    app = WebSocketApp(ws_server.url_for("/echo"))
    recorder = app.on("*", Recorder())
    readies: List[int] = []
    restarters: List[threading.Thread] = []

    @app.on("ready")
    def ready(event: events.Ready) -> None:
        readies.append(len(readies) + 1)
        app.send_text(f"message {len(readies)}")

    @app.on("text")
    def text(event: Text) -> None:
        if len(readies) <= restarts:
            thread = threading.Thread(target=ws_server.restart, daemon=True)
            restarters.append(thread)
            thread.start()
        else:
            app.stop()

    outcome = run_app(app, timeout=30, reconnect=True, min_wait=0.01, max_wait=0.1)
    for thread in restarters:
        thread.join(10)
    names = recorder.names
    assert len(readies) == restarts + 1
    assert names.count("connected") == outcome.connections == restarts + 1
    assert names.count("disconnected") == restarts + 1
    assert names.count("ready") == restarts + 1
    # each connection's events are in the documented order
    start = 0
    for index, name in enumerate(names):
        if name == "disconnected":
            check_order(recorder.events[start : index + 1])
            start = index + 1
            while start < len(names) and names[start] == "back_off":
                start += 1
        elif name == "back_off":
            start = index + 1
    assert outcome.graceful and outcome.close_code == 1000
    texts = [event.text for event in recorder.of(Text)]
    assert texts == [f"message {n}" for n in range(1, restarts + 2)]


# -- KeyboardInterrupt ------------------------------------------------------------------------


def test_keyboard_interrupt_in_a_handler_closes_gracefully_and_propagates(
    scripted_server: Any,
) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["one", "two"]))
    app = WebSocketApp(server.url, error_policy="log")
    recorder = app.on("*", Recorder())

    @app.on("text")
    def interrupt(event: Text) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_app(app)
    assert server.result() == (1001, "interrupted")
    assert recorder.names.count("text") == 1  # nothing dispatched after the interrupt
    assert not app.is_running
    assert app.websocket.is_closed
    assert app.outcome.close_code == 1001  # the server's echo, recorded while draining
    assert app.outcome.graceful


def test_keyboard_interrupt_with_reconnect_stops_reconnecting(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))

    @app.on("ready")
    def interrupt(event: events.Ready) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_app(app, reconnect=True, min_wait=0, max_wait=0)
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1001
    assert len(ws_server.connections) == 1


def test_ctrl_c_in_the_main_thread_closes_gracefully(
    ws_server: WSServer, request: pytest.FixtureRequest
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A run started in the background inherits SIG_IGN: use Python's
        # default Ctrl-C handling for this test, as in a terminal.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has a custom handler in this test run")
    app = WebSocketApp(ws_server.url_for("/record"))
    recorder = app.on("*", Recorder())
    interrupted_at: List[float] = []

    def press_ctrl_c() -> None:
        assert app.wait_ready(5)
        interrupted_at.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    thread = threading.Thread(target=press_ctrl_c, daemon=True)
    thread.start()
    with pytest.raises(KeyboardInterrupt):
        run_app(app, poll=30)
    ended = time.monotonic()
    thread.join(5)
    assert interrupted_at and ended - interrupted_at[0] < 1.0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert recorder.names[-2:] == ["closed", "disconnected"]
    assert app.outcome.graceful and app.outcome.close_code == 1000
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000


def test_join_from_a_handler_is_refused(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"), error_policy="log")
    errors: List[BaseException] = []

    @app.on("ready")
    def ready(event: events.Ready) -> None:
        try:
            app.join()
        except RuntimeError as error:
            errors.append(error)
        app.close()

    app.start(**FAST)
    outcome = app.join(10)
    assert outcome is not None and outcome.graceful
    assert len(errors) == 1
