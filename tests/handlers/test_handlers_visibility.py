"""Nothing fails silently: default error reports, reasons in the Outcome, mistakes caught early.

The stderr tests run a subprocess with no logging configured (pytest's own
log capture would count as configured logging in this process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from app_helpers import Recorder, run_app
from core_helpers import refused_port
from peers.raw_server import ScriptedServer, build_frame
from peers.ws_server import WSServer

from lomond import events
from lomond.errors import WebSocketUnavailable
from lomond.handlers import WebSocketApp
from lomond.handlers.app import NOT_READY

ROOT = Path(__file__).resolve().parent.parent.parent
ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
ENV["PYTHONPATH"] = str(ROOT)

#: The start of every script: an app whose text handler divides by zero.
PROLOGUE = """
import sys
from lomond.handlers import WebSocketApp
url = sys.argv[1]
"""

BROKEN_TEXT_HANDLER = """
app = WebSocketApp(url, **OPTIONS)
@app.on("ready")
def ready(event):
    app.send_text("go")
@app.on("text")
def broken(event):
    1 / 0
"""


def run_script(body: str, url: str) -> subprocess.CompletedProcess[str]:
    code = PROLOGUE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=30, env=ENV
    )


def script(options: str = "", before: str = "", after: str = "") -> str:
    """The broken app with ``options``, code ``before`` and ``after`` it, then RUN."""
    return (
        textwrap.dedent(before)
        + f"OPTIONS = dict({options})\n"
        + BROKEN_TEXT_HANDLER
        + textwrap.dedent(after)
        + RUN
    )


RUN = """
# the run

outcome = app.run_forever(ping_rate=0, close_timeout=3)
print(outcome.close_code, outcome.handler, type(outcome.error).__name__)
print(outcome.reason)
"""


def test_handler_error_is_printed_to_stderr_once_by_default(ws_server: WSServer) -> None:
    result = run_script(script(), ws_server.url_for("/echo"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "1011 broken ZeroDivisionError",
        "handler broken raised ZeroDivisionError: division by zero",
    ]
    err = result.stderr
    assert err.startswith("Exception in lomond handler broken for Text event of <WebSocketApp ")
    assert "closing the connection (error policy 'close')" in err.splitlines()[0]
    assert err.count("Traceback (most recent call last):") == 1, err
    assert err.count("ZeroDivisionError: division by zero") == 1, err
    assert ", in broken\n" in err  # the handler's frame is in the traceback


def test_policy_log_prints_each_error_and_keeps_going(ws_server: WSServer) -> None:
    body = script(options="error_policy='log'", after="""
        @app.on("text")
        def then_close(event):
            app.close()
        """)
    result = run_script(body, ws_server.url_for("/echo"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "1000 None NoneType"
    assert result.stderr.count("Traceback (most recent call last):") == 1, result.stderr
    assert "continuing (error policy 'log')" in result.stderr


def test_policy_raise_is_reported_by_the_raise_only(ws_server: WSServer) -> None:
    result = run_script(script(options="error_policy='raise'"),
                        ws_server.url_for("/echo"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("Traceback (most recent call last):") == 1, result.stderr
    assert "Exception in lomond handler" not in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")


@pytest.mark.parametrize(
    "takeover",
    [
        # an on_error override
        dict(before="""
            class Quiet(WebSocketApp):
                def on_error(self, event, exc):
                    print("on_error", type(exc).__name__)
            WebSocketApp = Quiet
            """),
        # a policy callable
        dict(options="error_policy=lambda event, exc: 'close'"),
        # a receiver of the error signal
        dict(after="""
            app.on_error_signal.connect(lambda app, event, exc: print("signal", exc))
            """),
    ],
    ids=["on_error", "policy_callable", "signal"],
)
def test_an_app_hook_takes_the_report_over(ws_server: WSServer, takeover: Any) -> None:
    body = script(takeover.get("options", ""), takeover.get("before", ""),
                  takeover.get("after", ""))
    result = run_script(body, ws_server.url_for("/echo"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "1011 broken ZeroDivisionError" in result.stdout


def test_configured_logging_takes_the_report_over(ws_server: WSServer) -> None:
    body = script(before="""
        import logging
        logging.basicConfig(format="LOGGED %(name)s %(levelname)s %(message)s")
        """)
    result = run_script(body, ws_server.url_for("/echo"))
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert err.startswith(
        "LOGGED lomond.handlers ERROR text handler broken raised ZeroDivisionError "
        "(policy 'close')"
    ), err
    assert err.count("Traceback (most recent call last):") == 1, err
    assert "Exception in lomond handler" not in err


def test_a_normal_run_prints_nothing(ws_server: WSServer) -> None:
    # With logging unconfigured, Python's last resort shows WARNING+: a
    # normal run must log below that. A refused connection and a rejection
    # that no handler hears of are reported in one line each (issue 22).
    body = """
    from lomond.handlers import WebSocketApp
    app = WebSocketApp(url)
    app.on("ready", lambda event: app.send_text("hi"))
    app.on("text", lambda event: app.close())
    print(app.run_forever(ping_rate=0).close_code)
    for bad in (sys.argv[2], sys.argv[3]):
        print(WebSocketApp(bad).run_forever(connect_timeout=3).reason is not None)
    """
    code = PROLOGUE + textwrap.dedent(body)
    refused = f"ws://127.0.0.1:{refused_port()}/"
    rejecting = ws_server.url_for("/reject?status=403")
    result = subprocess.run(
        [sys.executable, "-c", code, ws_server.url_for("/echo"), refused, rejecting],
        capture_output=True, text=True, timeout=30, env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "True", "True"]
    assert result.stderr.splitlines() == [
        f"lomond: the run of WebSocketApp {refused!r} failed: could not connect to "
        f"{refused[5:-1]}: Connection refused (ECONNREFUSED) (unhandled 'connect_fail' event)",
        f"lomond: the run of WebSocketApp {rejecting!r} failed: server answered 403 Forbidden "
        "instead of 101 Switching Protocols (unhandled 'rejected' event)",
    ]


# -- a run that ends on a connection failure -------------------------------------------

#: The handlers example of docs/handlers.md, cut down: no handler for failures.
FAILING_APP = """
app = WebSocketApp(url)
@app.on("ready")
def subscribe(event):
    app.send_json(type="subscribe", channel="ticker")
"""


def run_failing(url: str, before: str = "", after: str = "", run: str = "") -> Any:
    body = (
        textwrap.dedent(before) + FAILING_APP + textwrap.dedent(after)
        + textwrap.dedent(run or """
            outcome = app.run_forever(ping_rate=0, connect_timeout=3)
            print(outcome.close_code, outcome.graceful)
            """)
    )
    return run_script(body, url)


def test_an_unreachable_url_is_reported_in_one_line() -> None:
    # The case: the handlers example printed "None False", exit 0, and
    # nothing on stderr.
    url = f"ws://127.0.0.1:{refused_port()}/"
    result = run_failing(url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None False"]
    assert result.stderr.splitlines() == [
        f"lomond: the run of WebSocketApp {url!r} failed: could not connect to "
        f"{url[5:-1]}: Connection refused (ECONNREFUSED) (unhandled 'connect_fail' event)"
    ]


@pytest.mark.parametrize(
    "run",
    [
        """
        import asyncio
        outcome = asyncio.run(app.run_async(ping_rate=0, connect_timeout=3))
        """,
        """
        from lomond.handlers import Hub
        hub = Hub()
        hub.start()
        hub.add(app, ping_rate=0, connect_timeout=3)
        outcome = app.join(10)
        hub.stop(10)
        """,
        """
        app.start(ping_rate=0, connect_timeout=3)
        outcome = app.join(10)
        """,
    ],
    ids=["run_async", "hub", "start"],
)
def test_every_runner_reports_an_unreachable_url(run: str) -> None:
    url = f"ws://127.0.0.1:{refused_port()}/"
    result = run_failing(url, run=run + "print(outcome.close_code, outcome.graceful)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None False"]
    assert result.stderr.splitlines() == [
        f"lomond: the run of WebSocketApp {url!r} failed: could not connect to "
        f"{url[5:-1]}: Connection refused (ECONNREFUSED) (unhandled 'connect_fail' event)"
    ]


@pytest.mark.parametrize(
    "route, unhandled",
    [("/drop", "disconnected"), ("/slow-handshake?delay=20", "connect_fail")],
)
def test_a_failure_after_connecting_names_its_event(
    ws_server: WSServer, route: str, unhandled: str
) -> None:
    result = run_failing(ws_server.url_for(route), run="""
        outcome = app.run_forever(ping_rate=0, handshake_timeout=0.5)
        print(outcome.reason)
        """)
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    reason = result.stdout.strip()
    assert line == (
        f"lomond: the run of WebSocketApp {ws_server.url_for(route)!r} failed: {reason} "
        f"(unhandled {unhandled!r} event)"
    )


def test_a_protocol_error_is_reported_as_such(scripted_server: Any) -> None:
    def bad_frame(conn: Any) -> None:
        conn.handshake()
        conn.send_raw(build_frame(0x3, b"reserved opcode"))
        conn.recv_close()

    server: ScriptedServer = scripted_server(bad_frame)
    result = run_failing(server.url)
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"lomond: the run of WebSocketApp {server.url!r} failed: ")
    assert line.endswith(" (unhandled 'protocol_error' event)")


@pytest.mark.parametrize(
    "handled",
    [
        'app.on("connect_fail", lambda event: print("failed"))',
        'app.on("*", lambda event: None)',
        "class Failing(WebSocketApp):\n    def on_connect_fail(self, event): print('failed')\n"
        "app = Failing(url)",
        "class Watching(WebSocketApp):\n    def on_event(self, event): pass\napp = Watching(url)",
    ],
    ids=["registered", "star", "method", "on_event"],
)
def test_a_handled_failure_is_not_reported(handled: str) -> None:
    result = run_failing(f"ws://127.0.0.1:{refused_port()}/", after=handled)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_handled_disconnect_covers_a_drop(ws_server: WSServer) -> None:
    result = run_failing(ws_server.url_for("/drop"),
                         after='app.on("disconnected", lambda event: None)')
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_configured_logging_takes_the_failure_report_over() -> None:
    url = f"ws://127.0.0.1:{refused_port()}/"
    result = run_failing(url, before="""
        import logging
        logging.basicConfig(format="LOGGED %(name)s %(levelname)s %(message)s")
        """)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"LOGGED lomond.handlers WARNING the run of WebSocketApp {url!r} failed: could not "
        f"connect to {url[5:-1]}: Connection refused (ECONNREFUSED) "
        "(unhandled 'connect_fail' event)"
    ]


def test_report_failure_can_be_overridden() -> None:
    url = f"ws://127.0.0.1:{refused_port()}/"
    result = run_failing(url, before="""
        class Mine(WebSocketApp):
            def report_failure(self, outcome, unhandled):
                print("REPORT", unhandled, outcome.connections)
        WebSocketApp = Mine
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["REPORT connect_fail 0", "None False"]
    assert result.stderr == ""


def test_a_reconnecting_run_closed_during_its_back_off_reports_nothing() -> None:
    # close() ends a reconnect=True run on purpose, even after a failed attempt.
    result = run_failing(f"ws://127.0.0.1:{refused_port()}/",
                         after='app.on("back_off", lambda event: app.close())', run="""
        outcome = app.run_forever(reconnect=True, min_wait=0.01, max_wait=0.05, ping_rate=0)
        print(outcome.connections, outcome.reason is not None)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["0 True"]
    assert result.stderr == ""


def test_a_close_before_the_run_does_not_hide_its_failure() -> None:
    url = f"ws://127.0.0.1:{refused_port()}/"
    result = run_failing(url, run="""
        app.close()                       # nothing to close yet
        outcome = app.run_forever(ping_rate=0, connect_timeout=3)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith("(unhandled 'connect_fail' event)\n"), result.stderr


def test_a_stopped_run_reports_nothing(ws_server: WSServer) -> None:
    # stop() while the handshake waits, a hub stopped while its app connects,
    # and a thread-run app whose connection is refused (reported, as it ends).
    body = """
    import time
    from lomond.handlers import Hub
    app = WebSocketApp(url)
    app.start(ping_rate=0)
    time.sleep(0.2)
    print(app.stop().reason)
    hub = Hub()
    hub.add(WebSocketApp(url), ping_rate=0)
    hub.start()
    time.sleep(0.2)
    print(hub.stop())
    refused = WebSocketApp(sys.argv[2])
    hub = Hub()
    hub.add(refused)
    hub.start()
    print(refused.join(10).connections)
    hub.stop()
    """
    refused = f"ws://127.0.0.1:{refused_port()}/"
    code = PROLOGUE + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code, ws_server.url_for("/slow-handshake?delay=20"), refused],
        capture_output=True, text=True, timeout=30, env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["True", "0"]
    assert result.stderr.splitlines() == [
        f"lomond: the run of WebSocketApp {refused!r} failed: could not connect to "
        f"{refused[5:-1]}: Connection refused (ECONNREFUSED) (unhandled 'connect_fail' event)"
    ]


# -- the Outcome says why --------------------------------------------------------------


def test_outcome_names_a_subclass_handler(ws_server: WSServer) -> None:
    class Feed(WebSocketApp):
        def on_ready(self, event: events.Ready) -> None:
            self.send_text("x")

        def on_text(self, event: events.Text) -> None:
            raise KeyError(event.text)

    outcome = run_app(Feed(ws_server.url_for("/echo")))
    assert isinstance(outcome.error, KeyError)
    assert outcome.handler == (
        "test_outcome_names_a_subclass_handler.<locals>.Feed.on_text"
    )
    assert outcome.reason == f"handler {outcome.handler} raised KeyError: 'x'"


def test_outcome_of_a_rejection_has_the_status(ws_server: WSServer) -> None:
    outcome = run_app(WebSocketApp(ws_server.url_for("/reject?status=403")))
    assert outcome.error is None and outcome.connections == 1
    assert outcome.reason == "server answered 403 Forbidden instead of 101 Switching Protocols"


def test_outcome_of_a_drop(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/drop"))
    recorder = app.on("disconnected", Recorder())
    outcome = run_app(app)
    assert not outcome.graceful
    assert outcome.reason == recorder.events[-1].reason != "closed"


def test_outcome_of_a_protocol_error_keeps_its_error(scripted_server: Any) -> None:
    def bad_frame(conn: Any) -> None:
        conn.handshake()
        conn.send_raw(build_frame(0x3, b"reserved opcode"))  # opcode 3 is reserved
        conn.recv_close()

    server: ScriptedServer = scripted_server(bad_frame)
    app = WebSocketApp(server.url)
    recorder = app.on("*", Recorder())
    outcome = run_app(app)
    [error] = recorder.of(events.ProtocolError)
    assert outcome.reason == error.error
    assert recorder.of(events.Disconnected)[-1].reason != error.error


# -- sending too early ---------------------------------------------------------------


def test_send_in_connected_says_not_ready_and_stays_the_reason(ws_server: WSServer) -> None:
    app = WebSocketApp(ws_server.url_for("/echo"))

    @app.on("connected")
    def too_early(event: events.Connected) -> None:
        app.send_text("hello")

    outcome = run_app(app)
    assert isinstance(outcome.error, WebSocketUnavailable)
    assert str(outcome.error) == NOT_READY
    assert "send from a 'ready' handler" in NOT_READY
    assert outcome.handler is not None and outcome.handler.endswith("too_early")
    assert outcome.reason == f"handler {outcome.handler} raised WebSocketUnavailable: {NOT_READY}"


def test_send_outside_a_run_keeps_the_websockets_message() -> None:
    app = WebSocketApp("ws://127.0.0.1:9/")
    with pytest.raises(WebSocketUnavailable) as caught:
        app.send_text("x")
    assert str(caught.value) != NOT_READY


# -- mistakes caught -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, hint",
    [
        ("on_txt", "did you mean on_text?"),
        ("on_message", "use on_text (text messages) or on_binary"),
        ("on_open", "use on_ready"),
        ("on_close", "use on_closed"),
        ("on_data", "on_text"),
        ("on_cont_message", "on_text"),
    ],
)
def test_a_misnamed_handler_method_is_refused(name: str, hint: str) -> None:
    with pytest.raises(ValueError) as caught:
        type("Feed", (WebSocketApp,), {name: lambda self, event: None})
    message = str(caught.value)
    assert message.startswith(f"Feed.{name} would never be called")
    assert hint in message
    assert "on_binary, on_closed" in message  # the valid names are listed


def test_hooks_and_handlers_are_allowed() -> None:
    class Fine(WebSocketApp):
        def on_event(self, event: events.Event) -> None: ...
        def on_error(self, event: events.Event, exc: Exception) -> None: ...
        def on_text(self, event: events.Text) -> None: ...
        def on_back_off(self, event: events.BackOff) -> None: ...
        def helper(self) -> None: ...

    class Subclassed(Fine):
        def on_unknown(self, event: events.UnknownMessage) -> None: ...

    class Unchecked(WebSocketApp, check_handlers=False):
        def on_whatever(self) -> None: ...

    assert Subclassed("ws://127.0.0.1:9/")._methods.keys() >= {"text", "unknown"}
    assert Unchecked("ws://127.0.0.1:9/").is_closed


@pytest.mark.parametrize(
    "keyword, hint",
    [
        ("on_message", '@app.on("text") or @app.on("binary"), or a subclass method on_text'),
        ("on_open", '@app.on("ready"), or a subclass method on_ready'),
        ("on_text", '@app.on("text"), or a subclass method on_text'),
        ("on_error", "error_policy=..., a subclass method on_error"),
        ("on_txt", "(did you mean on_text?)"),
    ],
)
def test_a_callback_keyword_gets_a_hint(keyword: str, hint: str) -> None:
    with pytest.raises(TypeError) as caught:
        WebSocketApp("ws://127.0.0.1:9/", **{keyword: print})
    message = str(caught.value)
    assert message.startswith(
        f"WebSocketApp() got an unexpected keyword argument {keyword!r}: "
        "lomond takes no callback arguments"
    )
    assert hint in message


def test_other_unknown_keywords_are_still_a_type_error() -> None:
    with pytest.raises(TypeError, match="bogus"):
        WebSocketApp("ws://127.0.0.1:9/", bogus=1)


def test_start_names_itself_in_option_errors() -> None:
    app = WebSocketApp("ws://127.0.0.1:9/")
    with pytest.raises(TypeError, match=r"^start\(\) got an unexpected keyword argument 'bogus'"):
        app.start(bogus=1)
    with pytest.raises(TypeError, match=r"^run_forever\(\) got an unexpected keyword"):
        app.run_forever(bogus=1)
    assert not app.is_running


@pytest.mark.parametrize(
    "name, hint",
    [
        ("txt", "(did you mean 'text'?)"),
        ("ready ", "(did you mean 'ready'?)"),
        ("message", "(use 'text' (text messages) or 'binary' (binary messages))"),
        ("open", "(use 'ready'"),
        ("close", "(use 'closed'"),
        ("error", "(use error_policy=..."),
    ],
)
def test_an_unknown_event_name_gets_the_same_hints(name: str, hint: str) -> None:
    # Issue 22: @app.on("txt") says what the subclass check says of on_txt.
    app = WebSocketApp("ws://127.0.0.1:9/")
    with pytest.raises(ValueError) as caught:
        app.on(name)
    message = str(caught.value)
    assert message.startswith(f"unknown event name {name!r} {hint}")
    assert "expected '*' or one of: back_off, binary," in message  # still listed
    with pytest.raises(ValueError, match="did you mean 'text'"):
        app.off(print, "txt")


def test_an_unknown_event_name_far_from_any_is_listed_only() -> None:
    with pytest.raises(ValueError) as caught:
        WebSocketApp("ws://127.0.0.1:9/").on("zzzz")
    assert str(caught.value).startswith("unknown event name 'zzzz'; expected '*' or one of: ")


@pytest.mark.parametrize(
    "name, hint",
    [
        ("send", "use send_text(text) or send_binary(data)"),
        ("send_bytes", "use send_binary(data)"),
        ("recv", 'messages go to your handlers (@app.on("text")'),
        ("sock", "app.websocket"),
    ],
)
def test_websocket_client_attributes_say_what_to_use(name: str, hint: str) -> None:
    app = WebSocketApp("ws://127.0.0.1:9/")
    with pytest.raises(AttributeError) as caught:
        getattr(app, name)
    assert str(caught.value).startswith(f"'WebSocketApp' object has no attribute {name!r}: ")
    assert hint in str(caught.value)
    assert not hasattr(app, name)


def test_websocket_send_and_recv_say_what_to_use() -> None:
    from lomond import WebSocket

    websocket = WebSocket("ws://127.0.0.1:9/")
    with pytest.raises(AttributeError, match=r"'send': use send_text\(text\) or send_binary"):
        websocket.send("hello")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match=r"iterate over websocket.connect\(\)"):
        websocket.recv()  # type: ignore[attr-defined]


def test_other_missing_attributes_are_plain_attribute_errors() -> None:
    app = WebSocketApp("ws://127.0.0.1:9/")
    with pytest.raises(AttributeError) as caught:
        app.send_txt  # type: ignore[attr-defined]  # noqa: B018
    assert str(caught.value) == "'WebSocketApp' object has no attribute 'send_txt'"
    assert caught.value.name == "send_txt"  # Python's "Did you mean" still works
