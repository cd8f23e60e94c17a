"""WebSocketApp.run_async against real servers on loopback: handlers on asyncio.

The same handlers as run_forever (plain or ``async def``, awaited one event
at a time, in registration order), the same error policies and outcome;
stop() and sends from other threads; reconnects; several apps on one loop;
cancellation. Coroutines run with :func:`core_helpers.run_async`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, List, Optional

import pytest
from app_helpers import FAST, Recorder, close_handshake_script
from core_helpers import LoopFactory, check_order, later, refused_port, run_async
from peers.raw_server import RawConnection, ScriptedServer
from peers.ws_server import WSServer

from lomond import events
from lomond.asyncio.session import HIGH_WATER, AsyncioSession
from lomond.errors import TransportFail, WebSocketUnavailable
from lomond.events import Event, Text
from lomond.handlers import Outcome, WebSocketApp

#: How soon a stop must end a wait that would otherwise last 30 s.
PROMPT = 2.0
MiB = 1024 * 1024


class HandlerBug(Exception):
    """What the broken handlers in these tests raise."""


def run_app_async(
    app: WebSocketApp,
    timeout: float = 15.0,
    loop_factory: Optional[LoopFactory] = None,
    **options: Any,
) -> Outcome:
    """``await app.run_async(**FAST, **options)`` on a new loop, with a watchdog that
    stops the app (and fails the test) if the run has not ended after ``timeout`` s."""
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
        outcome = run_async(app.run_async(**kwargs), timeout=timeout + 10,
                            loop_factory=loop_factory)
    finally:
        timer.cancel()
    assert not fired.is_set(), f"run_async did not end within {timeout}s"
    return outcome


# -- handlers: order, async, subclass methods ------------------------------------------------


def test_sync_and_async_handlers_in_registration_order(
    ws_server: WSServer, loop_factory: LoopFactory
) -> None:
    calls: List[str] = []
    busy: List[str] = []
    overlaps: List[str] = []

    class App(WebSocketApp):
        def on_event(self, event: Event) -> None:
            if busy:
                overlaps.append(event.name)  # a handler of an earlier event still runs
            calls.append(f"method on_event {event.name}")

        async def on_text(self, event: Text) -> None:
            busy.append(event.text)
            await asyncio.sleep(0.01)  # the next event waits for this one
            calls.append(f"method on_text {event.text}")
            busy.pop()

    app = App(ws_server.url_for("/stream?count=3"))

    @app.on("text")
    def first(event: Text) -> None:
        calls.append(f"first {event.text}")

    @app.on("text")
    async def second(event: Text) -> None:
        await asyncio.sleep(0)
        calls.append(f"second {event.text}")
        if event.text == "2":
            app.close()

    @app.on("*")
    def third(event: Event) -> None:
        calls.append(f"third {event.name}")

    recorder = app.on("*", Recorder())
    outcome = run_app_async(app, loop_factory=loop_factory)
    assert overlaps == []
    # Per event: the class's on_event, then on_<name>, then the registered
    # handlers in registration order; each awaited before the next.
    per_text = [c for c in calls if c.endswith(("text", " 0", " 1", " 2"))]
    assert per_text == [
        call
        for n in range(3)
        for call in (
            "method on_event text", f"method on_text {n}", f"first {n}", f"second {n}",
            "third text",
        )
    ]
    assert calls[:2] == ["method on_event connecting", "third connecting"]
    check_order(recorder.events)
    assert outcome == Outcome(
        close_code=1000, close_reason="goodbye", graceful=True, connections=1, reason="closed"
    )


def test_an_async_handler_that_awaits_holds_the_next_event(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/stream?count=5"))
    timeline: List[str] = []

    @app.on("text")
    async def slow(event: Text) -> None:
        timeline.append(f"start {event.text}")
        await asyncio.sleep(0.02)
        timeline.append(f"end {event.text}")
        if event.text == "4":
            app.close()

    run_app_async(app)
    assert timeline == [f"{what} {n}" for n in range(5) for what in ("start", "end")]


def test_handlers_send_and_the_server_echoes(
    ws_server: WSServer, loop_factory: LoopFactory
) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    echoes: List[str] = []

    @app.on("ready")
    async def ready(event: events.Ready) -> None:
        app.send_text("one")
        await asyncio.sleep(0)
        app.send_json(number=2)
        app.send_binary(b"three")

    @app.on("text")
    def text(event: Text) -> None:
        echoes.append(event.text)

    @app.on("binary")
    def binary(event: events.Binary) -> None:
        app.close(4000, "done")

    outcome = run_app_async(app, loop_factory=loop_factory)
    assert echoes == ["one", '{"number": 2}']
    assert outcome.close_code == 4000 and outcome.close_reason == "done" and outcome.graceful
    ws_server.last.wait_closed()
    assert ws_server.last.received == ["one", '{"number": 2}', b"three"]
    assert ws_server.last.close_code == 4000


def test_sends_before_ready_say_to_wait_for_ready(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    raised: List[BaseException] = []

    @app.on("connecting")
    @app.on("connected")
    async def too_early(event: Event) -> None:
        try:
            app.send_text("too early")
        except WebSocketUnavailable as error:
            raised.append(error)

    app.on("ready", lambda event: app.close())
    run_app_async(app)
    assert len(raised) == 2
    assert all("send from a 'ready' handler" in str(error) for error in raised)


def test_outcome_of_a_failed_connection() -> None:
    app = WebSocketApp(f"ws://127.0.0.1:{refused_port()}/")
    recorder = app.on("*", Recorder())
    outcome = run_app_async(app)
    assert recorder.names == ["connecting", "connect_fail"]
    assert outcome == Outcome(reason=recorder.events[-1].reason)  # type: ignore[attr-defined]
    assert outcome.reason is not None and outcome.reason.startswith("could not connect to")
    assert not app.is_running


def test_server_close_is_reported(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/close?code=4321&reason=later"))
    recorder = app.on("*", Recorder())
    outcome = run_app_async(app)
    assert recorder.names[-2:] == ["closing", "disconnected"]
    assert outcome == Outcome(
        close_code=4321, close_reason="later", graceful=True, connections=1, reason="closed"
    )


def test_running_twice_at_once_is_refused(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    errors: List[BaseException] = []

    @app.on("ready")
    async def ready(event: events.Ready) -> None:
        try:
            await app.run_async()
        except RuntimeError as error:
            errors.append(error)
        app.close()

    run_app_async(app)
    assert len(errors) == 1 and "already running" in str(errors[0])
    assert run_app_async(app, poll=30).connections == 1  # and again, once it is over


def test_polls_only_for_an_app_that_handles_them(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    polls: List[Event] = []

    @app.on("poll")
    async def poll(event: events.Poll) -> None:
        polls.append(event)
        if len(polls) == 3:
            app.close()

    run_app_async(app, poll=0.05)
    assert len(polls) == 3


# -- error policies -----------------------------------------------------------------------


def broken_app(
    url: str, policy: Any = "close", fail_on: str = "boom", asynchronous: bool = False
) -> tuple[WebSocketApp, Recorder]:
    """An app whose text handler (plain or ``async def``) raises HandlerBug for ``fail_on``."""
    app = WebSocketApp(url, error_policy=policy)
    if asynchronous:

        @app.on("text")
        async def handler(event: Text) -> None:
            await asyncio.sleep(0)
            if event.text == fail_on:
                raise HandlerBug(event.text)

    else:

        @app.on("text")
        def plain(event: Text) -> None:
            if event.text == fail_on:
                raise HandlerBug(event.text)

    recorder = app.on("*", Recorder())
    return app, recorder


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
def test_close_policy_closes_with_1011(
    scripted_server: Any, caplog: pytest.LogCaptureFixture, asynchronous: bool
) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["boom", "after"]))
    app, recorder = broken_app(server.url, asynchronous=asynchronous)
    with caplog.at_level(logging.ERROR, logger="lomond.handlers"):
        outcome = run_app_async(app)
    assert server.result() == (1011, "handler error")
    check_order(recorder.events)
    assert [e.text for e in recorder.of(Text)] == ["boom", "after"]
    assert isinstance(outcome.error, HandlerBug)
    assert outcome.close_code == 1011 and outcome.graceful
    logged = [r for r in caplog.records if r.name == "lomond.handlers" and r.exc_info]
    assert len(logged) == 1 and logged[0].exc_info[1] is outcome.error  # type: ignore[index]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
def test_log_policy_keeps_going(scripted_server: Any, asynchronous: bool) -> None:
    def script(conn: RawConnection) -> Any:
        conn.handshake()
        for text in ["boom", "fine", "boom", "last"]:
            conn.send_text(text)
        received = conn.recv_close()
        conn.send_close(1000)
        return received

    server: ScriptedServer = scripted_server(script)
    app, recorder = broken_app(server.url, policy="log", asynchronous=asynchronous)
    app.on("text", lambda event: event.text == "last" and app.close())
    errors: List[Any] = []
    app.on_error_signal.connect(lambda sender, **kw: errors.append(kw["exc"]))
    outcome = run_app_async(app)
    assert server.result() == (1000, "goodbye")
    assert [e.text for e in recorder.of(Text)] == ["boom", "fine", "boom", "last"]
    assert len(errors) == 2 and all(isinstance(e, HandlerBug) for e in errors)
    assert outcome.error is None and outcome.graceful


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
def test_raise_policy_reraises_after_disconnected(scripted_server: Any, asynchronous: bool) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["boom"]))
    app, recorder = broken_app(server.url, policy="raise", asynchronous=asynchronous)
    with pytest.raises(HandlerBug, match="boom"):
        run_app_async(app)
    assert server.result() == (1011, "handler error")
    assert recorder.names[-2:] == ["closed", "disconnected"]
    check_order(recorder.events)
    assert isinstance(app.outcome.error, HandlerBug)
    assert not app.is_running


def test_on_error_method_and_a_callable_policy(scripted_server: Any) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["boom", "boom", "x"]))
    heard: List[Any] = []

    def policy(event: Event, exc: Exception) -> str:
        return "log"  # keep going

    class App(WebSocketApp):
        def on_error(self, event: Event, exc: Exception) -> None:
            heard.append((event.name, type(exc).__name__))

        async def on_text(self, event: Text) -> None:
            if event.text == "boom":
                raise HandlerBug(event.text)
            self.close()

    outcome = run_app_async(App(server.url, error_policy=policy))
    assert heard == [("text", "HandlerBug"), ("text", "HandlerBug")]
    assert outcome.error is None and outcome.graceful
    assert server.result() == (1000, "goodbye")


def test_close_policy_with_reconnect_stops_reconnecting(ws_server: WSServer) -> None:
    app, recorder = broken_app(ws_server.url_for("/stream?count=1"), fail_on="0",
                               asynchronous=True)
    outcome = run_app_async(app, reconnect=True, min_wait=0, max_wait=0)
    assert outcome.connections == 1
    assert "back_off" not in recorder.names
    assert len(ws_server.connections) == 1
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1011


# -- stop() and close() ---------------------------------------------------------------------


def test_stop_from_another_thread(ws_server: WSServer, loop_factory: LoopFactory) -> None:
    app = WebSocketApp(ws_server.url_for("/record"))
    stopped: List[Any] = []

    def stopper() -> None:
        assert app.wait_ready(5)
        started = time.monotonic()
        stopped.append(app.stop())
        stopped.append(time.monotonic() - started)

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    outcome = run_app_async(app, poll=30, loop_factory=loop_factory)
    thread.join(5)
    assert stopped and stopped[0] == outcome and stopped[1] < PROMPT
    assert outcome.graceful and outcome.close_code == 1000
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000


def test_stop_from_a_handler(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    results: List[Any] = []

    @app.on("ready")
    async def ready(event: events.Ready) -> None:
        results.append(app.stop())

    outcome = run_app_async(app, poll=30)
    assert results == [None]  # the loop cannot wait for itself
    assert outcome.graceful and outcome.close_code == 1000


def test_stop_from_another_task_on_the_loop(ws_server: WSServer) -> None:
    """stop() from a coroutine that is not a handler: it cannot wait either (it would
    block the loop), and the run ends gracefully."""
    app = WebSocketApp(ws_server.url_for("/record"))

    async def main() -> List[Any]:
        task = asyncio.ensure_future(app.run_async(poll=30, **FAST))
        while not app.is_active:
            await asyncio.sleep(0.01)
        returned = app.stop()
        outcome = await asyncio.wait_for(task, 10)
        return [returned, outcome]

    returned, outcome = run_async(main())
    assert returned is None
    assert outcome.graceful and outcome.close_code == 1000


def test_close_from_another_thread(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/record"))

    def closer() -> None:
        assert app.wait_ready(5)
        app.close(4001, "from a thread")

    threading.Thread(target=closer, daemon=True).start()
    outcome = run_app_async(app, poll=30)
    assert (outcome.close_code, outcome.close_reason) == (4001, "from a thread")
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 4001


def test_stop_during_back_off_is_prompt() -> None:
    app = WebSocketApp(f"ws://127.0.0.1:{refused_port()}/")
    stopped: List[List[float]] = []
    outcomes: List[Any] = []

    def stop() -> None:
        outcomes.append(app.stop())

    app.on("back_off", lambda event: stopped.append(later(0.1, stop)))
    outcome = run_app_async(app, reconnect=True, min_wait=30, max_wait=30, poll=30)
    ended = time.monotonic()
    assert stopped and stopped[0] and ended - stopped[0][0] < PROMPT
    assert outcome.connections == 0
    assert outcome.reason is not None and outcome.reason.startswith("could not connect to")


def test_stop_right_after_the_run_starts(ws_server: WSServer) -> None:
    """A stop() right after the run started (before it could connect) ends it at
    once, without a connection."""
    app = WebSocketApp(ws_server.url_for("/echo"))
    recorder = app.on("*", Recorder())

    async def main() -> Outcome:
        task = asyncio.ensure_future(app.run_async(**FAST))
        await asyncio.sleep(0)  # the run has begun (begin_run), not connected yet
        app.stop(timeout=0)
        return await asyncio.wait_for(task, 10)

    outcome = run_async(main())
    assert recorder.names in ([], ["connecting", "connect_fail"])
    assert outcome.connections == 0


# -- sends from other threads -------------------------------------------------------------


def test_sends_from_another_thread(ws_server: WSServer, loop_factory: LoopFactory) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    received: List[str] = []

    @app.on("text")
    def text(event: Text) -> None:
        received.append(event.text)
        if len(received) == 50:
            app.close()

    def sender() -> None:
        assert app.wait_ready(5)
        for n in range(50):
            app.send_text(str(n))

    threading.Thread(target=sender, daemon=True).start()
    outcome = run_app_async(app, poll=30, loop_factory=loop_factory)
    assert received == [str(n) for n in range(50)]
    assert outcome.graceful


def test_large_sends_from_a_handler_and_a_thread(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    payload = bytes(range(256)) * (8 * 4096)  # 8 MiB
    sizes: List[int] = []

    @app.on("ready")
    def ready(event: events.Ready) -> None:
        app.send_binary(payload)
        threading.Thread(target=app.send_binary, args=(payload[::-1],), daemon=True).start()

    @app.on("binary")
    def binary(event: events.Binary) -> None:
        assert event.data in (payload, payload[::-1])
        sizes.append(len(event.data))
        if len(sizes) == 2:
            app.close()

    outcome = run_app_async(app, timeout=60, poll=30)
    assert sizes == [len(payload)] * 2
    assert outcome.graceful


def test_a_send_from_another_thread_waits_for_room(scripted_server: Any) -> None:
    def never_read(conn: RawConnection) -> None:
        conn.handshake()
        conn.hold(30)

    server = scripted_server(never_read)
    app = WebSocketApp(server.url, send_timeout=1.0)
    peaks: List[int] = []
    raised: List[BaseException] = []

    def sender() -> None:
        assert app.wait_ready(5)
        session = app.websocket.session
        assert isinstance(session, AsyncioSession)
        try:
            for _ in range(16):
                app.send_binary(bytes(4 * MiB))
                peaks.append(session.lifecycle.pending_output)
        except Exception as error:
            raised.append(error)
        app.close()

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    run_app_async(app, poll=0, close_timeout=0.5)
    thread.join(10)
    # Each send returns once the queue is down to LOW_WATER; at most one
    # message over HIGH_WATER is ever queued, and the stalled send times out.
    assert max(peaks, default=0) <= HIGH_WATER + 4 * MiB + 1024, peaks
    assert raised and isinstance(raised[0], TransportFail)


# -- reconnects -----------------------------------------------------------------------------


def test_reconnect_after_the_server_restarts(ws_server: WSServer) -> None:
    restarts = 2
    app = WebSocketApp(ws_server.url_for("/echo"))
    recorder = app.on("*", Recorder())
    readies: List[int] = []
    restarters: List[threading.Thread] = []

    @app.on("ready")
    async def ready(event: events.Ready) -> None:
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

    outcome = run_app_async(app, timeout=30, reconnect=True, min_wait=0.01, max_wait=0.1)
    for thread in restarters:
        thread.join(10)
    names = recorder.names
    assert len(readies) == restarts + 1
    assert names.count("connected") == outcome.connections == restarts + 1
    assert names.count("back_off") >= restarts
    assert outcome.graceful and outcome.close_code == 1000
    assert [e.text for e in recorder.of(Text)] == [f"message {n}" for n in range(1, restarts + 2)]


def test_reconnect_options_only_with_reconnect(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))

    async def main() -> None:
        await app.run_async(min_wait=1)  # type: ignore[call-arg]

    with pytest.raises(TypeError):
        run_async(main())
    assert not app.is_running


# -- several apps on one loop ----------------------------------------------------------------


def test_several_apps_on_one_loop(ws_server: WSServer, loop_factory: LoopFactory) -> None:
    """Three apps with asyncio.gather; one app's awaiting handler does not hold the others:
    app 0's Ready handler waits for the last app's echo."""
    apps = [WebSocketApp(ws_server.url_for("/echo")) for _ in range(3)]
    threads: List[List[str]] = [[] for _ in apps]

    async def main() -> List[Outcome]:
        last_echo = asyncio.Event()
        for index, app in enumerate(apps):

            def make(index: int, app: WebSocketApp) -> None:
                @app.on("ready")
                async def ready(event: events.Ready) -> None:
                    threads[index].append(threading.current_thread().name)
                    if index == 0:
                        await asyncio.wait_for(last_echo.wait(), 10)
                    app.send_text(f"app {index}")

                @app.on("text")
                def text(event: Text) -> None:
                    assert event.text == f"app {index}"
                    if index == len(apps) - 1:
                        last_echo.set()
                    app.close()

            make(index, app)
        return list(await asyncio.gather(*(app.run_async(poll=30, **FAST) for app in apps)))

    outcomes = run_async(main(), loop_factory=loop_factory)
    assert all(o.graceful and o.close_code == 1000 and o.connections == 1 for o in outcomes)
    assert len({name for names in threads for name in names}) == 1  # all on the loop's thread
    received = sorted(rec.received[0] for rec in ws_server.connections)  # type: ignore[index]
    assert received == ["app 0", "app 1", "app 2"]


# -- cancellation and interrupts ----------------------------------------------------------------


def test_cancelling_the_task_closes_with_1001_then_raises(
    ws_server: WSServer, loop_factory: LoopFactory
) -> None:
    app = WebSocketApp(ws_server.url_for("/record"))
    recorder = app.on("*", Recorder())

    async def main() -> None:
        task = asyncio.ensure_future(app.run_async(poll=30, **FAST))
        while not app.is_active:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    run_async(main(), loop_factory=loop_factory)
    ws_server.last.wait_closed()
    assert (ws_server.last.close_code, ws_server.last.close_reason) == (1001, "going away")
    assert recorder.names[-2:] == ["closed", "disconnected"]  # the end reached the handlers
    assert not app.is_running
    assert app.outcome.close_code == 1001 and app.outcome.graceful


def test_cancelling_while_an_async_handler_awaits(scripted_server: Any) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["one", "two"]))
    app = WebSocketApp(server.url)
    recorder = app.on("*", Recorder())
    entered = asyncio.Event()

    @app.on("text")
    async def forever(event: Text) -> None:
        entered.set()
        await asyncio.sleep(60)

    async def main() -> None:
        task = asyncio.ensure_future(app.run_async(poll=30, **FAST))
        await asyncio.wait_for(entered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    run_async(main())
    assert server.result() == (1001, "interrupted")
    assert recorder.names.count("text") == 1  # nothing dispatched after the cancellation
    assert not app.is_running
    assert app.websocket.is_closed


def test_keyboard_interrupt_in_a_handler_closes_gracefully_and_propagates(
    scripted_server: Any,
) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["one", "two"]))
    app = WebSocketApp(server.url, error_policy="log")
    recorder = app.on("*", Recorder())

    @app.on("text")
    async def interrupt(event: Text) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_app_async(app)
    assert server.result() == (1001, "interrupted")
    assert recorder.names.count("text") == 1
    assert not app.is_running
    assert app.outcome.close_code == 1001 and app.outcome.graceful
