"""Handler errors and error policies against real servers on loopback."""

from __future__ import annotations

import logging
from typing import Any, List, Tuple

import pytest
from app_helpers import FAST, Recorder, close_handshake_script, run_app
from core_helpers import check_order
from peers.raw_server import ScriptedServer
from peers.ws_server import WSServer

from lomond.events import Event, Text
from lomond.handlers import Outcome, WebSocketApp


class HandlerBug(Exception):
    """What the broken handlers in these tests raise."""


def broken_app(
    url: str, policy: Any = "close", fail_on: str = "boom"
) -> Tuple[WebSocketApp, Recorder]:
    """An app whose text handler raises HandlerBug for ``fail_on``; a Recorder after it."""
    app = WebSocketApp(url, error_policy=policy)

    @app.on("text")
    def handler(event: Text) -> None:
        if event.text == fail_on:
            raise HandlerBug(event.text)

    recorder = app.on("*", Recorder())
    return app, recorder


def test_close_policy_closes_with_1011(
    scripted_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["boom", "after"]))
    app, recorder = broken_app(server.url)
    with caplog.at_level(logging.ERROR, logger="lomond.handlers"):
        outcome = run_app(app)
    assert server.result() == (1011, "handler error")
    check_order(recorder.events)
    # the other handlers still ran for the failing event; the message sent
    # before the server saw our close is still delivered
    assert [e.text for e in recorder.of(Text)] == ["boom", "after"]
    assert recorder.names.count("closed") == 1
    assert recorder.names.count("disconnected") == 1
    assert isinstance(outcome.error, HandlerBug)
    assert outcome.close_code == 1011 and outcome.graceful
    logged = [r for r in caplog.records if r.name == "lomond.handlers" and r.exc_info]
    assert len(logged) == 1 and logged[0].exc_info[1] is outcome.error  # type: ignore[index]
    assert logged[0].exc_text and "HandlerBug" in logged[0].exc_text


def test_close_policy_with_a_websockets_server(ws_server: WSServer) -> None:
    app, recorder = broken_app(ws_server.url_for("/stream?count=3"), fail_on="1")
    outcome = run_app(app)
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1011
    assert ws_server.last.close_reason == "handler error"
    assert outcome.close_code == 1011 and isinstance(outcome.error, HandlerBug)
    check_order(recorder.events)


def test_close_policy_with_reconnect_stops_reconnecting(ws_server: WSServer) -> None:
    app, recorder = broken_app(ws_server.url_for("/stream?count=1"), fail_on="0")
    outcome = run_app(app, reconnect=True, min_wait=0, max_wait=0)
    assert outcome.connections == 1
    assert "back_off" not in recorder.names
    assert len(ws_server.connections) == 1
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1011


def test_log_policy_keeps_going(scripted_server: Any) -> None:
    def script(conn: Any) -> Any:
        conn.handshake()
        for text in ["boom", "fine", "boom", "last"]:
            conn.send_text(text)
        received = conn.recv_close()
        conn.send_close(1000)
        return received

    server: ScriptedServer = scripted_server(script)
    app, recorder = broken_app(server.url, policy="log")
    app.on("text", lambda event: event.text == "last" and app.close())
    errors: List[Any] = []
    app.on_error_signal.connect(lambda sender, **kw: errors.append(kw["exc"]))
    outcome = run_app(app)
    assert server.result() == (1000, "goodbye")
    assert [e.text for e in recorder.of(Text)] == ["boom", "fine", "boom", "last"]
    assert len(errors) == 2 and all(isinstance(e, HandlerBug) for e in errors)
    assert outcome.error is None and outcome.graceful


def test_raise_policy_reraises_after_disconnected(scripted_server: Any) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["boom"]))
    app, recorder = broken_app(server.url, policy="raise")
    with pytest.raises(HandlerBug, match="boom"):
        run_app(app)
    assert server.result() == (1011, "handler error")
    assert recorder.names[-2:] == ["closed", "disconnected"]
    check_order(recorder.events)
    assert isinstance(app.outcome.error, HandlerBug)
    assert not app.is_running


def test_raise_policy_in_a_thread(scripted_server: Any) -> None:
    server: ScriptedServer = scripted_server(close_handshake_script(["boom"]))
    app, _ = broken_app(server.url, policy="raise")
    app.start(**FAST)
    with pytest.raises(HandlerBug):
        app.join(10)
    assert server.result() == (1011, "handler error")
    # stop() reports the outcome without raising
    outcome = app.stop()
    assert outcome is not None and isinstance(outcome.error, HandlerBug)
    with pytest.raises(HandlerBug):
        app.join(0)


def test_raise_policy_with_running_context_manager(ws_server: WSServer) -> None:
    app, _ = broken_app(ws_server.url_for("/echo"), policy="raise")
    with pytest.raises(HandlerBug):
        with app.running(**FAST):
            assert app.wait_ready(5)
            app.send_text("boom")
            app.join(5)
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1011


def test_close_policy_in_a_thread_does_not_raise(ws_server: WSServer) -> None:
    app, _ = broken_app(ws_server.url_for("/stream?count=1"), fail_on="0")
    app.start(**FAST)
    outcome = app.join(10)
    assert outcome is not None and isinstance(outcome.error, HandlerBug)
    assert outcome.close_code == 1011


def test_callable_policy_decides_per_error(scripted_server: Any) -> None:
    server: ScriptedServer = scripted_server(
        close_handshake_script(["value", "fine", "lookup", "after"])
    )
    app = WebSocketApp(server.url, error_policy=lambda event, exc: policy(event, exc))
    decisions: List[Tuple[str, str]] = []

    def policy(event: Event, exc: Exception) -> str:
        action = "log" if isinstance(exc, ValueError) else "close"
        decisions.append((event.text, action))  # type: ignore[attr-defined]
        return action

    @app.on("text")
    def handler(event: Text) -> None:
        if event.text == "value":
            raise ValueError(event.text)
        if event.text == "lookup":
            raise LookupError(event.text)

    outcome = run_app(app)
    assert decisions == [("value", "log"), ("lookup", "close")]
    assert server.result() == (1011, "handler error")
    assert isinstance(outcome.error, LookupError)


def test_error_before_ready_abandons_the_attempt(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))
    recorder = app.on("*", Recorder())

    @app.on("connected")
    def connected(event: Event) -> None:
        raise HandlerBug("connected")

    outcome = run_app(app)
    check_order(recorder.events)
    assert "ready" not in recorder.names
    assert isinstance(outcome.error, HandlerBug)
    name = "test_error_before_ready_abandons_the_attempt.<locals>.connected"
    # the handler error stays the reason: the aborted handshake does not hide it
    assert outcome == Outcome(
        connections=1,
        error=outcome.error,
        reason=f"handler {name} raised HandlerBug: connected",
        handler=name,
    )


def test_error_in_on_error_during_a_run(scripted_server: Any) -> None:
    class App(WebSocketApp):
        calls = 0

        def on_text(self, event: Text) -> None:
            raise HandlerBug(event.text)

        def on_error(self, event: Event, exc: Exception) -> None:
            type(self).calls += 1
            raise RuntimeError("on_error is broken too")

    server: ScriptedServer = scripted_server(close_handshake_script(["boom"]))
    app = App(server.url)
    outcome = run_app(app)
    assert App.calls == 1
    assert isinstance(outcome.error, HandlerBug)
    assert server.result() == (1011, "handler error")
