"""Drop-in compatibility with Lomond 0.3 (up to 0.3.4), page by page of its documentation.

The 0.3 documentation (Guide, then the API pages: websocket, events, errors,
persist, response, status, constants) is walked in order. For each documented
name the test checks that it exists, that its signature keeps 0.3's parameter
names, order and documented defaults (lomond may add parameters after them,
with defaults, or keyword-only), and that it behaves as documented, against
real servers on loopback: the ``websockets`` server (``ws_server``), a TLS one
with trustme certificates, and the scripted raw server when the bytes on the
wire matter.

Where lomond deliberately differs from 0.3, the test asserts lomond's
behaviour and ``docs/porting.md`` explains the difference.
"""

from __future__ import annotations

import importlib
import inspect
import json
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
from core_helpers import FAST, collect
from peers.raw_server import BINARY, TEXT, RawConnection, build_frame
from peers.tls import TLSBundle
from peers.ws_server import WSServer, deflate

import lomond
from lomond import constants, errors, events
from lomond.persist import persist
from lomond.response import Response
from lomond.session import WebsocketSession
from lomond.status import Status
from lomond.websocket import WebSocket

EMPTY = inspect.Parameter.empty

# -- helpers ---------------------------------------------------------------------------------


def documented(func: Any, params: Sequence[Tuple[str, Any]], skip_self: bool = False) -> None:
    """Assert that ``func`` starts with 0.3's parameters, in order, with 0.3's defaults.

    ``params`` is ``[(name, default)]`` with :data:`EMPTY` for "no default"
    and ``...`` for "a default exists, its value is not documented". Any
    parameter lomond adds must come after them and be optional, so 0.3 calls
    (positional or keyword) keep working.
    """
    signature = inspect.signature(func)
    actual = list(signature.parameters.values())
    if skip_self:
        actual = actual[1:]
    names = [p.name for p in actual[: len(params)]]
    assert names == [name for name, _ in params], f"{func.__qualname__}{signature}"
    for parameter, (name, default) in zip(actual, params):
        if default is ...:
            assert parameter.default is not EMPTY, f"{name} has no default"
        elif default is EMPTY:
            assert parameter.default is EMPTY, f"{name} should be required"
        else:
            assert parameter.default == default, f"{name}={parameter.default!r}, 0.3: {default!r}"
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD:
            assert parameter.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY,
            ) or name.startswith("_"), f"{name} must stay positional"
    for extra in actual[len(params):]:
        assert extra.default is not EMPTY or extra.kind in (
            inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL,
        ), f"{func.__qualname__}: added parameter {extra.name} must be optional"


def names_of(run_events: Sequence[events.Event]) -> List[str]:
    return [event.name for event in run_events]


# ============================================================================================
# Guide: Basic usage, events, compression, closing, pings, polling, persist
# ============================================================================================


def lomond_03_program(url: str, seen: List[Any]) -> WebSocket:
    """A Lomond 0.3 program, written as its Guide shows, unchanged."""
    websocket = WebSocket(url)
    for event in websocket.connect(ping_rate=0, poll=60, close_timeout=5):
        if event.name == "poll":
            continue  # periodic housekeeping: a 0.3 program ignores it
        seen.append(event.name)
        if event.name == "ready":
            websocket.send_json(type="subscribe", product_ids=["BTC-USD"], channels=["ticker"])
        elif event.name == "text":
            seen.append(event.json)
            websocket.close(1000, b"goodbye")
        elif isinstance(event, events.Disconnected):
            seen.append(event.graceful)
    return websocket


def test_a_03_program_runs_unchanged(ws_server: WSServer) -> None:
    seen: List[Any] = []
    websocket = lomond_03_program(ws_server.url_for("/echo"), seen)
    assert seen == [
        "connecting", "connected", "ready", "text",
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker"]},
        "closed", "disconnected", True,
    ]
    record = ws_server.last
    record.wait_closed()
    # The bytes reason went out as the UTF-8 text it is.
    assert (record.close_code, record.close_reason) == (1000, "goodbye")
    assert websocket.is_closed


def test_iterating_is_connect_with_defaults(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[str] = []
    for event in websocket:
        seen.append(event.name)
        if isinstance(event, events.Ready):
            assert repr(event).startswith("Ready(")
            websocket.close()
    assert seen[:3] == ["connecting", "connected", "ready"]
    assert seen[-2:] == ["closed", "disconnected"]


def test_event_name_and_isinstance_agree(ws_server: WSServer) -> None:
    run = collect(WebSocket(ws_server.url_for("/close?code=1000")))
    for event in run.events:
        assert isinstance(event, events.Event)
        assert events.EVENT_TYPES[event.name] is type(event)
        assert abs(event.received_time - time.time()) < 60


def test_compression_negotiated(ws_server_factory: Any) -> None:
    server = ws_server_factory(extensions=[deflate()])
    websocket = WebSocket(server.url_for("/echo"), compress=True)
    seen: List[Any] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            seen.append(websocket.supports_compression)
            seen.append("permessage-deflate" in event.extensions)
            websocket.send_text("squeeze " * 20, compress=True)
            websocket.send_binary(b"raw", compress=False)
        elif isinstance(event, (events.Text, events.Binary)):
            seen.append(event.name)
            if len(seen) == 4:
                websocket.close()

    collect(websocket, on_event)
    assert seen == [True, True, "text", "binary"]
    plain = WebSocket(server.url_for("/echo"))
    run = collect(plain, lambda e: plain.close() if isinstance(e, events.Ready) else None)
    assert not plain.supports_compression
    assert run.first(events.Ready).extensions == frozenset()


def test_server_initiated_close(ws_server: WSServer) -> None:
    run = collect(WebSocket(ws_server.url_for("/close?code=1001&reason=bye")))
    assert [name for name in run.names if name != "poll"] == [
        "connecting", "connected", "ready", "closing", "disconnected"]
    closing = run.first(events.Closing)
    assert (closing.code, closing.reason) == (1001, "bye")
    assert run.first(events.Disconnected).graceful is True


def test_sends_allowed_while_handling_closing(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> List[str]:
        conn.handshake()
        conn.send_close(1000, "done")
        texts: List[str] = []
        while True:
            frame = conn.recv_frame()
            if frame.opcode != TEXT:
                return texts  # the client's Close echo comes after its message
            texts.append(frame.text)

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Closing):
            websocket.send_text("while closing")

    run = collect(websocket, on_event)
    assert run.names[-2:] == ["closing", "disconnected"]
    assert server.result() == ["while closing"]
    with pytest.raises(errors.WebSocketClosed):
        websocket.send_text("after the end")


def test_no_sends_after_close(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    caught: List[type] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.close()
            assert websocket.is_closing and not websocket.is_active
            with pytest.raises(errors.WebSocketUnavailable) as info:
                websocket.send_text("too late")
            caught.append(type(info.value))

    collect(websocket, on_event)
    assert caught == [errors.WebSocketClosing]
    with pytest.raises(errors.WebSocketClosed):
        websocket.send_text("after the end")


def test_non_graceful_disconnect(ws_server: WSServer) -> None:
    run = collect(WebSocket(ws_server.url_for("/drop")))
    assert run.first(events.Disconnected).graceful is False


def test_pings_disabled_and_auto_pong(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/ping?data=hello"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ping):
            assert event.data == b"hello"
            websocket.send_ping(b"mine")
        elif isinstance(event, events.Pong):
            assert event.data == b"mine"
            websocket.close()

    run = collect(websocket, on_event, ping_rate=0)
    assert "ping" in run.names and "pong" in run.names
    record = ws_server.last
    record.wait_closed()
    assert record.pongs[:1] == [b"hello"]  # answered automatically
    assert record.pings == [b"mine"]  # ping_rate=0: only the one sent by hand


def test_auto_pong_can_be_disabled(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/ping?data=x"))
    collect(websocket, lambda e: websocket.close() if isinstance(e, events.Ping) else None,
            auto_pong=False)
    record = ws_server.last
    record.wait_closed()
    assert record.pongs == []
    assert record.close_code == 1000  # the connection did run to a clean close


def test_poll_right_after_ready_then_every_poll_seconds(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    polls: List[float] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Poll):
            polls.append(time.monotonic())
            if len(polls) == 2:
                websocket.close()

    run = collect(websocket, on_event, poll=0.2)
    assert run.names[:4] == ["connecting", "connected", "ready", "poll"]
    assert run.names.count("poll") == 2


def test_persist_loop_and_back_off(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/close?code=1000"))
    exit_event = threading.Event()
    seen: List[str] = []
    for event in persist(websocket, min_wait=0.01, max_wait=0.02, ping_rate=0,
                         exit_event=exit_event):
        seen.append(event.name)
        if seen.count("ready") == 2:
            exit_event.set()
        assert len(seen) < 40, seen
    first = seen.index("disconnected")
    assert seen[:3] == ["connecting", "connected", "ready"]
    assert seen[first + 1: first + 3] == ["back_off", "connecting"]
    assert seen.count("ready") == 2
    assert seen[-2:] == ["disconnected", "back_off"]  # 0.3.4 ends on the BackOff it waited on


def test_close_inside_persist_reconnects(ws_server: WSServer) -> None:
    """Issue 20, item 1: 0.3.4 reconnects after a close(); a stale feed is closed to refresh it."""
    websocket = WebSocket(ws_server.url_for("/echo"))
    exit_event = threading.Event()
    seen: List[str] = []
    for event in persist(websocket, min_wait=0.01, max_wait=0.02, ping_rate=0,
                         exit_event=exit_event):
        if event.name == "poll":
            continue
        seen.append(event.name)
        if event.name == "ready":
            if seen.count("ready") < 3:
                websocket.close()
            else:
                exit_event.set()
        assert len(seen) < 40, seen
    connection = ["connecting", "connected", "ready", "closed", "disconnected", "back_off"]
    assert seen == connection * 3
    for record in ws_server.connections:
        record.wait_closed()
    assert [record.close_code for record in ws_server.connections] == [1000] * 3


def test_first_ping_right_after_ready(ws_server: WSServer) -> None:
    """Issue 20, item 5: 0.3.4 pings right after Ready, then every ping_rate seconds."""
    websocket = WebSocket(ws_server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Pong):
            websocket.close()  # the answer to the first ping, long before ping_rate

    run = collect(websocket, on_event, ping_rate=30, poll=30)
    assert run.names[:3] == ["connecting", "connected", "ready"]
    assert "pong" in run.names
    record = ws_server.last
    record.wait_closed()
    assert record.pings == [b""]


# ============================================================================================
# API: lomond.websocket
# ============================================================================================


def test_websocket_signature() -> None:
    documented(WebSocket.__init__, [
        ("url", EMPTY), ("proxies", None), ("protocols", None), ("agent", None),
        ("compress", False),
    ], skip_self=True)


def test_websocket_0_3_4_options() -> None:
    parameters = inspect.signature(WebSocket.__init__).parameters
    assert parameters["ssl_verify"].default is True
    assert parameters["ssl_cafile"].default is None
    assert parameters["trace"].default is None
    for name in ("ssl_verify", "ssl_cafile", "trace"):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY


METHODS: Dict[str, List[Tuple[str, Any]]] = {
    "add_header": [("header", EMPTY), ("value", EMPTY)],
    "build_request": [],
    "close": [("code", 1000), ("reason", ...)],
    "connect": [
        ("session_class", WebsocketSession), ("poll", 5.0), ("ping_rate", 30.0),
        ("ping_timeout", None), ("auto_pong", True), ("close_timeout", 30.0),
    ],
    "feed": [("data", EMPTY)],
    "force_disconnect": [],
    "on_disconnect": [],
    "on_response": [("response", EMPTY)],
    "process_extensions": [("extensions", EMPTY)],
    "reset": [],
    "send_binary": [("data", EMPTY), ("compress", True)],
    "send_json": [("_obj", ...), ("kwargs", EMPTY)],
    "send_ping": [("data", b"")],
    "send_pong": [("data", ...)],  # 0.3 required it; lomond defaults to b""
    "send_text": [("text", EMPTY), ("compress", True)],
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_websocket_method_signatures(name: str) -> None:
    method = getattr(WebSocket, name)
    assert callable(method)
    documented(method, METHODS[name], skip_self=True)
    assert method.__doc__, f"{name} has no docstring"


def test_close_reason_default_is_goodbye() -> None:
    default = inspect.signature(WebSocket.close).parameters["reason"].default
    assert default in ("goodbye", b"goodbye")


PROPERTIES = ("is_active", "is_closed", "is_closing", "is_secure", "sent_close_time",
              "supports_compression")


def test_state_attributes_before_connecting() -> None:
    websocket = WebSocket("wss://example.org/feed", proxies={})
    for name in PROPERTIES:
        assert isinstance(getattr(WebSocket, name), property), name
    # Issue 20, item 6: 0.3.4 says active and not closed here (True, False,
    # False), though a send fails; lomond's is_active means a send would be
    # accepted (docs/porting.md).
    assert (websocket.is_active, websocket.is_closed, websocket.is_closing) == (False, True, False)
    assert websocket.is_secure is True
    assert WebSocket("ws://example.org/", proxies={}).is_secure is False
    assert websocket.sent_close_time is None
    assert websocket.supports_compression is False


def test_state_attributes_after_a_failed_connect() -> None:
    # Issue 20, item 6: 0.3.4 gives True/False; lomond False/True (docs/porting.md).
    websocket = WebSocket("ws://127.0.0.1:1/", proxies={})
    assert collect(websocket).names == ["connecting", "connect_fail"]
    assert (websocket.is_active, websocket.is_closed, websocket.is_closing) == (False, True, False)


def test_http_urls_are_taken_as_websocket_urls(ws_server: WSServer) -> None:
    """Issue 20, item 9: 0.3.4 accepted ``WebSocket('http://...')``; lomond reads it as ws://."""
    url = ws_server.url_for("/echo")
    assert url.startswith("ws://")
    websocket = WebSocket("http://" + url[len("ws://"):])
    assert websocket.url == url and not websocket.is_secure
    assert WebSocket("https://example.org/", proxies={}).is_secure  # TLS, as wss://
    run = collect(websocket, lambda e: websocket.close() if isinstance(e, events.Ready) else None)
    assert run.names[:3] == ["connecting", "connected", "ready"]


def test_url_is_a_string_as_in_03() -> None:
    websocket = WebSocket("wss://user:secret@example.org/feed", proxies={})
    assert websocket.url == "wss://example.org/feed"
    assert websocket.url.startswith("wss")
    assert "secret" not in f"{websocket.url} {websocket.url!r}"


def test_state_during_a_connection(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    states: List[Tuple[bool, bool, bool]] = []
    close_times: List[Optional[float]] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            states.append((websocket.is_active, websocket.is_closing, websocket.is_closed))
            close_times.append(websocket.sent_close_time)
            before = time.time()
            websocket.close()
            states.append((websocket.is_active, websocket.is_closing, websocket.is_closed))
            sent = websocket.sent_close_time
            assert sent is not None and before - 1 <= sent <= time.time() + 1  # epoch seconds
            close_times.append(sent)

    collect(websocket, on_event)
    assert states == [(True, False, False), (False, True, False)]
    assert close_times[0] is None
    assert websocket.is_closed and not websocket.is_active and not websocket.is_closing


def test_add_header_bytes_and_default_agent(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/headers"))
    websocket.add_header(b"X-Lomond-Test", b"zero-three")
    run = collect(websocket, lambda e: websocket.close() if isinstance(e, events.Text) else None)
    headers = run.first(events.Text).json
    assert headers["X-Lomond-Test"] == "zero-three"
    assert headers["User-Agent"] == constants.USER_AGENT


def test_agent_and_protocols(ws_server_factory: Any) -> None:
    server = ws_server_factory(subprotocols=["chat"])
    websocket = WebSocket(server.url_for("/echo"), protocols=["chat"], agent="legacy/0.3")
    run = collect(websocket, lambda e: websocket.close() if isinstance(e, events.Ready) else None)
    assert run.first(events.Ready).protocol == "chat"
    assert server.last.request_headers["User-Agent"] == "legacy/0.3"


def test_build_request_and_feed(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[Any] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            request = websocket.build_request()
            seen.append(request.split(b"\r\n", 1)[0])
            fed = list(websocket.feed(build_frame(TEXT, b"fed")))
            seen.append([(e.name, getattr(e, "text", None)) for e in fed])
            websocket.close()

    collect(websocket, on_event)
    assert seen == [b"GET /echo HTTP/1.1", [("text", "fed")]]


def test_feed_rejects_text() -> None:
    websocket = WebSocket("ws://example.org/", proxies={})
    with pytest.raises(TypeError):
        list(websocket.feed("not bytes"))  # type: ignore[arg-type]


class Hooked(WebSocket):
    """A 0.3-style subclass overriding the documented hooks."""

    def __init__(self, url: str, compress: bool = False) -> None:
        super().__init__(url, compress=compress)
        self.calls: List[Any] = []

    def on_response(self, response: Response) -> None:
        self.calls.append(("on_response", response.status_code))

    def process_extensions(self, extensions: Any) -> None:
        self.calls.append(("process_extensions", set(extensions)))

    def on_disconnect(self) -> None:
        self.calls.append("on_disconnect")


def test_hooks_are_called(ws_server_factory: Any) -> None:
    server = ws_server_factory(extensions=[deflate()])
    websocket = Hooked(server.url_for("/close"))
    collect(websocket)
    assert websocket.calls == [
        ("on_response", 101), ("process_extensions", set()), "on_disconnect",
    ]
    compressed = Hooked(server.url_for("/close"), compress=True)
    collect(compressed)
    assert compressed.calls == [
        ("on_response", 101), ("process_extensions", {"permessage-deflate"}), "on_disconnect",
    ]


def test_on_response_sees_a_rejection(ws_server: WSServer) -> None:
    websocket = Hooked(ws_server.url_for("/reject?status=403"))
    run = collect(websocket)
    assert run.names == ["connecting", "connected", "rejected", "disconnected"]
    assert websocket.calls[0] == ("on_response", 403)
    assert websocket.calls[-1] == "on_disconnect"


def test_force_disconnect_and_reset(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    run = collect(
        websocket, lambda e: websocket.force_disconnect() if isinstance(e, events.Ready) else None
    )
    assert run.first(events.Disconnected).graceful is False
    websocket.reset()
    assert websocket.is_closed
    again = collect(websocket, lambda e: websocket.close() if isinstance(e, events.Ready) else None)
    assert again.names[-2:] == ["closed", "disconnected"]


def test_send_type_and_size_errors(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    problems: List[type] = []

    def expect(exc: type, call: Any) -> None:
        with pytest.raises(exc):
            call()
        problems.append(exc)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            expect(TypeError, lambda: websocket.send_text(b"bytes"))
            expect(TypeError, lambda: websocket.send_binary("text"))
            expect(TypeError, lambda: websocket.send_ping("text"))
            expect(TypeError, lambda: websocket.send_pong("text"))
            expect(ValueError, lambda: websocket.send_ping(b"p" * 126))
            expect(ValueError, lambda: websocket.send_pong(b"p" * 126))
            expect(TypeError, lambda: websocket.send_json(object()))
            websocket.send_pong(b"unsolicited")
            websocket.close()

    collect(websocket, on_event)
    assert len(problems) == 7
    record = ws_server.last
    record.wait_closed()  # every frame the client sent has been recorded
    assert record.pongs == [b"unsolicited"]


def test_send_json_forms(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_json({"foo": "bar"})
            websocket.send_json(foo="bar")
            websocket.send_json([1, 2])
        elif isinstance(event, events.Text) and event.json == [1, 2]:
            websocket.close()

    collect(websocket, on_event)
    received = ws_server.last.wait_received(3)
    assert [json.loads(text) for text in received] == [{"foo": "bar"}, {"foo": "bar"}, [1, 2]]


def test_send_json_with_both_forms_is_a_value_error() -> None:
    websocket = WebSocket("ws://example.org/", proxies={})
    with pytest.raises(ValueError):
        websocket.send_json({"a": 1}, b=2)


# -- close(): code and reason --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("1000",), {}), ((1000.0,), {}), ((1000, 5), {}), ((), {"reason": ["x"]})],
    ids=["str code", "float code", "int reason", "list reason"],
)
def test_close_argument_types(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    websocket = WebSocket("ws://example.org/", proxies={})
    with pytest.raises(TypeError):
        websocket.close(*args, **kwargs)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda ws: ws.close(1000, b"goodbye"), (1000, "goodbye")),
        (lambda ws: ws.close(1001, "caf\u00e9"), (1001, "caf\u00e9")),
        (lambda ws: ws.close(code=Status.GOING_AWAY, reason="caf\u00e9".encode()),
         (1001, "caf\u00e9")),
        (lambda ws: ws.close(None), (1005, "")),
        (lambda ws: ws.close(code=None), (1005, "")),
        (lambda ws: ws.close(), (1000, "goodbye")),
    ],
    ids=["bytes reason", "str reason", "keywords", "None", "code=None", "defaults"],
)
def test_close_on_the_wire(scripted_server: Any, call: Any, expected: Tuple[int, str]) -> None:
    def script(conn: RawConnection) -> Optional[Tuple[int, str]]:
        conn.handshake()
        close = conn.recv_close()  # (1005, "") when the payload is empty
        conn.send_close(None)
        conn.close()
        return close

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))
    run = collect(websocket, lambda e: call(websocket) if isinstance(e, events.Ready) else None)
    assert server.result() == expected
    assert run.names[-2:] == ["closed", "disconnected"]


# -- stricter than 0.3.4, kept (issue 20, item 9; docs/porting.md) ---------------------------


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000, 65535])
def test_close_codes_that_may_not_be_sent_raise(code: int, ws_server: WSServer) -> None:
    # 0.3.4 sends them (and a server fails the connection); RFC 6455 section 7.4.
    websocket = WebSocket(ws_server.url_for("/echo"))
    raised: List[BaseException] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            with pytest.raises(ValueError) as info:
                websocket.close(code)
            raised.append(info.value)
            websocket.close()

    collect(websocket, on_event)
    assert isinstance(raised[0], errors.FrameBuildError)
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000  # the refused code never left


def test_a_long_close_reason_is_cut_to_fit_a_control_frame(ws_server: WSServer) -> None:
    # 0.3.4 sends all 200 bytes in a Close frame (RFC 6455 section 5.5: at most 125).
    websocket = WebSocket(ws_server.url_for("/echo"))
    collect(websocket, lambda e: websocket.close(1000, "\u00e9" * 100)
            if isinstance(e, events.Ready) else None)
    ws_server.last.wait_closed()
    assert ws_server.last.close_reason == "\u00e9" * 61  # 122 bytes: whole characters


def test_a_server_close_without_a_code(scripted_server: Any) -> None:
    # 0.3.4: Closing, Closed (both code=None), Disconnected; lomond: no Closed,
    # as for every close the server starts (docs/porting.md).
    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_close(None)
        return conn.recv_close()

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    names = [name for name in run.names if name != "poll"]
    assert names == ["connecting", "connected", "ready", "closing", "disconnected"]
    closing = run.first(events.Closing)
    assert (closing.code, closing.reason) == (None, "")
    assert server.result() == (1005, "")  # the echo: no code either


def test_a_server_close_with_1014_is_accepted(ws_server: WSServer) -> None:
    # 0.3.4 fails the connection ('reserved close code'); IANA registered 1014.
    run = collect(WebSocket(ws_server.url_for("/close?code=1014&reason=upstream")))
    closing = run.first(events.Closing)
    assert (closing.code, closing.reason) == (1014, "upstream")
    assert run.first(events.Disconnected).graceful is True


def test_add_header_takes_str_and_bytes(ws_server: WSServer) -> None:
    # 0.3.4 takes bytes only (TypeError for str); every 0.3.4 call still works.
    websocket = WebSocket(ws_server.url_for("/headers"))
    websocket.add_header(b"X-Bytes", b"1")
    websocket.add_header("X-Str", "2")
    websocket.add_header("X-Rep", "a")
    websocket.add_header(b"X-Rep", "b")
    run = collect(websocket, lambda e: websocket.close() if isinstance(e, events.Text) else None)
    headers = {name.lower(): value for name, value in run.first(events.Text).json.items()}
    assert (headers["x-bytes"], headers["x-str"], headers["x-rep"]) == ("1", "2", "a, b")


def test_repeated_response_headers_are_joined_with_a_comma() -> None:
    # As 0.3.4, but each value is stripped first (0.3.4: 'a, b,  c').
    response = Response(b"HTTP/1.1 101 Switching Protocols\r\nX-Rep: a\r\nx-rep: b\r\n"
                        b"X-Rep:  c \r\n\r\n")
    assert response.get("x-rep") == "a, b, c"
    assert response.get_list("x-rep") == ["a", "b", "c"]


# -- the context manager ---------------------------------------------------------------------


def test_with_statement_closes_a_live_connection(ws_server: WSServer) -> None:
    with WebSocket(ws_server.url_for("/echo")) as websocket:
        loop = websocket.connect(ping_rate=0)
        for event in loop:
            if event.name == "ready":
                break  # the loop is suspended, still referenced: the connection is live
        assert websocket.is_active
    # Leaving the block closed it gracefully and released the socket.
    record = ws_server.last
    record.wait_closed()
    assert record.close_code == 1000
    assert websocket.is_closed
    rest = [event.name for event in loop]
    assert rest[-1:] == ["disconnected"] or rest == []


def test_with_statement_around_the_03_loop(ws_server: WSServer) -> None:
    with WebSocket(ws_server.url_for("/echo")) as websocket:
        for event in websocket:
            if event.name == "ready":
                websocket.send_text("hello")
            elif event.name == "text":
                break  # inside ``with``, abandoning the loop still closes gracefully
    record = ws_server.last
    record.wait_closed()  # the socket is released
    assert record.close_code == 1000
    assert websocket.is_closed


def test_abandoned_loop_outside_with_says_going_away(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    for event in websocket:
        if event.name == "ready":
            break  # no with block: a best-effort 1001 and the socket dropped at once
    record = ws_server.last
    record.wait_closed()
    assert record.close_code == 1001
    assert websocket.is_closed


def test_with_statement_without_a_connection() -> None:
    with WebSocket("ws://example.org/", proxies={}) as websocket:
        assert isinstance(websocket, WebSocket)
    assert websocket.is_closed


def test_with_statement_when_the_body_raises(ws_server: WSServer) -> None:
    with pytest.raises(RuntimeError, match="application bug"):
        with WebSocket(ws_server.url_for("/echo")) as websocket:
            for event in websocket:
                if event.name == "ready":
                    raise RuntimeError("application bug")
    ws_server.last.wait_closed()
    assert websocket.is_closed


# -- trace= (0.3.4) ---------------------------------------------------------------------------


def traced_run(url: str, **options: Any) -> Tuple[List[Dict[str, Any]], Any]:
    records: List[Dict[str, Any]] = []
    websocket = WebSocket(url, trace=records.append, **options)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_text("payload-marker-7")
        elif isinstance(event, events.Text):
            websocket.close(1000, "bye")

    run = collect(websocket, on_event)
    return records, run


def check_records(records: List[Dict[str, Any]], url: str, secret: str) -> None:
    for record in records:
        assert isinstance(record, dict)
        assert isinstance(record["stage"], str)
        assert record["url"] == url
        assert secret not in repr(record), record
        assert "payload-marker" not in repr(record), record
        for value in record.values():
            assert not isinstance(value, (bytes, bytearray, memoryview)), record


def test_trace_records_each_step(ws_server: WSServer) -> None:
    clean = ws_server.url_for("/echo")
    url = clean.replace("ws://", "ws://tracer:s3cret-pw@")
    records, _ = traced_run(url)
    stages = [record["stage"] for record in records]
    for stage in ("connect_start", "handshake_ready", "socket_send", "socket_recv",
                  "send_text", "message_text", "close_requested", "disconnected"):
        assert stage in stages, (stage, stages)
    assert stages[0] == "connect_start" and stages[-1] == "disconnected"
    # Records follow cause and effect: the step that produced an event is
    # recorded before what the application did in response to it.
    assert stages.index("handshake_ready") < stages.index("send_text")
    assert stages.index("message_text") < stages.index("close_requested")
    check_records(records, clean, "s3cret-pw")


def test_trace_tls_and_rejection(wss_server: WSServer, ws_server: WSServer, tls: TLSBundle) -> None:
    records, _ = traced_run(wss_server.url_for("/echo"), ssl_cafile=tls.ca_file)
    assert "tls_wrapped" in [record["stage"] for record in records]
    check_records(records, wss_server.url_for("/echo"), "\0")
    records, run = traced_run(ws_server.url_for("/reject?status=403"))
    assert run.names == ["connecting", "connected", "rejected", "disconnected"]
    stages = [record["stage"] for record in records]
    assert "handshake_rejected" in stages and "handshake_ready" not in stages


def test_trace_must_be_callable() -> None:
    with pytest.raises(TypeError):
        WebSocket("ws://example.org/", trace="print")  # type: ignore[arg-type]


# -- ssl_verify= / ssl_cafile= (0.3.4) -----------------------------------------------------------


def _tls_echo(url: str, **options: Any) -> List[str]:
    websocket = WebSocket(url, **options)
    run = collect(websocket, lambda e: websocket.close() if isinstance(e, events.Ready) else None)
    return run.names


def test_ssl_cafile_trusts_the_test_ca(wss_server: WSServer, tls: TLSBundle) -> None:
    url = wss_server.url_for("/echo")
    assert _tls_echo(url, ssl_cafile=tls.ca_file)[-2:] == ["closed", "disconnected"]
    assert _tls_echo(url) == ["connecting", "connect_fail"]  # the default still verifies


def test_ssl_verify_false_accepts_an_untrusted_cert(ws_server_factory: Any, tls: TLSBundle) -> None:
    server = ws_server_factory(ssl_context=tls.server_context("untrusted"))
    url = server.url_for("/echo")
    assert _tls_echo(url, ssl_verify=False)[-2:] == ["closed", "disconnected"]
    assert _tls_echo(url, ssl_cafile=tls.ca_file) == ["connecting", "connect_fail"]


def test_tls_option_errors_at_construction(tls: TLSBundle, tmp_path: Any) -> None:
    with pytest.raises(ValueError):
        WebSocket("wss://localhost/", ssl_cafile=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError):
        WebSocket("wss://localhost/", ssl_context=tls.client_context(), ssl_verify=False)
    with pytest.raises(TypeError):
        WebSocket("wss://localhost/", ssl_verify="no")  # type: ignore[arg-type]


# ============================================================================================
# API: lomond.events
# ============================================================================================

EVENT_SIGNATURES: Dict[str, List[Tuple[str, Any]]] = {
    "BackOff": [("delay", EMPTY)],
    "Binary": [("data", EMPTY)],
    "Closed": [("code", EMPTY), ("reason", EMPTY)],
    "Closing": [("code", EMPTY), ("reason", EMPTY)],
    "ConnectFail": [("reason", EMPTY)],
    "Connected": [("url", EMPTY), ("proxy", None)],
    "Connecting": [("url", EMPTY)],
    "Disconnected": [("reason", "closed"), ("graceful", False)],
    "Event": [],
    "Ping": [("data", EMPTY)],
    "Poll": [],
    "Pong": [("data", EMPTY)],
    "ProtocolError": [("error", EMPTY), ("critical", EMPTY)],
    "Ready": [("response", EMPTY), ("protocol", EMPTY), ("extensions", EMPTY)],
    "Rejected": [("response", EMPTY), ("reason", EMPTY)],
    "Text": [("text", EMPTY)],
    "UnknownMessage": [("message", EMPTY)],
    "Unresponsive": [],
}


@pytest.mark.parametrize("name", sorted(EVENT_SIGNATURES))
def test_event_classes(name: str) -> None:
    cls = getattr(events, name)
    assert issubclass(cls, events.Event)
    assert cls.__doc__
    documented(cls.__init__, EVENT_SIGNATURES[name], skip_self=True)


def test_events_construct_positionally_as_in_03() -> None:
    assert events.Closing(1000, "bye").code == 1000
    assert events.Disconnected().reason == "closed"
    assert events.Disconnected().graceful is False
    assert events.Connected("ws://h/").proxy is None
    assert events.Text('{"a": [1]}').json == {"a": [1]}
    with pytest.raises(ValueError):
        events.Text("not json").json  # noqa: B018
    assert events.ProtocolError("bad", True).critical is True
    assert events.BackOff(1.5).delay == 1.5
    assert events.Poll().name == "poll"


def test_rejected_and_connect_fail(ws_server: WSServer) -> None:
    run = collect(WebSocket(ws_server.url_for("/reject?status=404")))
    rejected = run.first(events.Rejected)
    assert isinstance(rejected.response, Response) and rejected.response.status_code == 404
    assert isinstance(rejected.reason, str)
    # Issue 20, item 8: as in 0.3.4 a Disconnected follows; lomond's is not
    # graceful (0.3.4: True, 'closed'): no close handshake took place.
    assert run.names == ["connecting", "connected", "rejected", "disconnected"]
    assert run.first(events.Disconnected).graceful is False
    refused = collect(WebSocket("ws://127.0.0.1:1/"))
    assert refused.names == ["connecting", "connect_fail"]
    assert isinstance(refused.first(events.ConnectFail).reason, str)


def test_connected_reports_url_and_proxy(ws_server: WSServer) -> None:
    run = collect(WebSocket(ws_server.url_for("/close"), proxies={}))
    connected = run.first(events.Connected)
    assert connected.url == ws_server.url_for("/close")
    assert connected.proxy is None
    assert run.first(events.Connecting).url == ws_server.url_for("/close")


def test_unresponsive(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.hold(5.0)  # read and ignore everything, never answer a ping

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")), ping_rate=0.2, ping_timeout=0.5, poll=0.1)
    assert "unresponsive" in run.names
    assert run.names[-1] == "disconnected"


# -- ProtocolError.critical, checked on the wire ------------------------------------------------


def test_critical_protocol_error_drops_without_close(scripted_server: Any) -> None:
    # critical=True: lomond drops the connection without (another) Close
    # frame. A violation after our own Close was sent is one such case.
    def script(conn: RawConnection) -> Tuple[Optional[Tuple[int, str]], bytes]:
        conn.handshake()
        close = conn.recv_close()
        conn.send_raw(build_frame(BINARY, b"x", rsv2=True))  # instead of the Close answer
        return close, conn.expect_eof()

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))
    run = collect(websocket, lambda e: websocket.close() if isinstance(e, events.Ready) else None)
    error = run.first(events.ProtocolError)
    assert error.critical is True
    close, tail = server.result()
    assert close == (1000, "goodbye")
    assert tail == b"", "no Close frame may follow a critical protocol error"
    assert run.first(events.Disconnected).graceful is False


@pytest.mark.parametrize(
    ("frame", "code"),
    [(build_frame(TEXT, b"bad \xff"), Status.BAD_DATA),
     (build_frame(BINARY, b"x", rsv2=True), Status.PROTOCOL_ERROR)],
    ids=["invalid UTF-8", "reserved bit"],
)
def test_non_critical_protocol_error_sends_close(
    scripted_server: Any, frame: bytes, code: int
) -> None:
    # critical=False: lomond sent a Close frame with the violation's code.
    def script(conn: RawConnection) -> Optional[Tuple[int, str]]:
        conn.handshake()
        conn.send_raw(frame)
        return conn.recv_close()

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    error = run.first(events.ProtocolError)
    assert error.critical is False
    result = server.result()
    assert result is not None and result[0] == code == error.code


# ============================================================================================
# API: lomond.errors
# ============================================================================================

ERRORS = [
    "CompressionParameterError", "ConnectFail", "CriticalProtocolError", "FrameBuildError",
    "HandshakeError", "PayloadTooLarge", "ProtocolError", "TransportFail", "WebSocketClosed",
    "WebSocketClosing", "WebSocketError", "WebSocketUnavailable",
]


@pytest.mark.parametrize("name", ERRORS)
def test_documented_exceptions(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.WebSocketError)
    assert issubclass(cls, Exception)
    error = cls("message")
    assert str(error) == "message"


def test_exception_aliases_catch_the_new_names() -> None:
    assert errors.ConnectFail is errors.ConnectError
    assert errors.ProtocolError is errors.ProtocolViolation
    with pytest.raises(errors.ConnectFail):
        raise errors.ConnectError("x")
    with pytest.raises(errors.ProtocolError):
        raise errors.PayloadTooLarge("x")
    assert issubclass(errors.CriticalProtocolError, errors.ProtocolError)
    assert issubclass(errors.WebSocketClosed, errors.WebSocketUnavailable)
    assert issubclass(errors.WebSocketClosing, errors.WebSocketUnavailable)


def test_the_exception_and_the_event_stay_distinct() -> None:
    assert errors.ProtocolError is not events.ProtocolError
    assert errors.ConnectFail is not events.ConnectFail


def test_sending_before_connecting_is_unavailable() -> None:
    websocket = WebSocket("ws://example.org/", proxies={})
    for send in (lambda: websocket.send_text("x"), lambda: websocket.send_binary(b"x"),
                 lambda: websocket.send_ping(), lambda: websocket.send_pong(b"")):
        with pytest.raises(errors.WebSocketUnavailable):
            send()


# ============================================================================================
# API: lomond.persist
# ============================================================================================


def test_persist_signature() -> None:
    documented(persist, [
        ("websocket", EMPTY), ("poll", 5), ("min_wait", 5), ("max_wait", 30),
        ("ping_rate", 30), ("ping_timeout", None), ("exit_event", None),
    ])
    parameter = inspect.signature(persist).parameters["respect_retry_after"]
    assert parameter.default is True


def test_lomond_dot_persist_is_the_module_as_in_03() -> None:
    # 0.3 documents lomond.persist.persist() and lomond.persist.random(): the
    # package attribute must be the module, not the function of the same name.
    import lomond.persist

    assert lomond.persist.persist is persist
    assert callable(lomond.persist.random)


def test_persist_random_is_in_the_unit_interval() -> None:
    persist_module = importlib.import_module("lomond.persist")
    values = [persist_module.random() for _ in range(1000)]
    assert all(0.0 <= value < 1.0 for value in values)
    assert len(set(values)) > 900


def test_persist_exit_event(ws_server: WSServer) -> None:
    exit_event = threading.Event()
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: List[str] = []
    for event in persist(websocket, ping_rate=0, exit_event=exit_event):
        seen.append(event.name)
        if event.name == "ready":
            exit_event.set()
    assert seen[:3] == ["connecting", "connected", "ready"]
    assert seen[-2:] == ["disconnected", "back_off"]  # as 0.3.4: the BackOff it waited on
    record = ws_server.last
    record.wait_closed()
    assert record.close_code in (1000, 1001)  # closed gracefully, not dropped


def _first_back_off(url: str, **options: Any) -> float:
    websocket = WebSocket(url)
    for event in persist(websocket, min_wait=0, max_wait=0.05, ping_rate=0, **options):
        if isinstance(event, events.BackOff):
            return float(event.delay)
    raise AssertionError("no BackOff")


def test_persist_respect_retry_after(ws_server: WSServer) -> None:
    url = ws_server.url_for("/reject?status=503&retry_after=120")
    assert _first_back_off(url) >= 120  # the default honours Retry-After
    assert _first_back_off(url, respect_retry_after=True) >= 120
    assert _first_back_off(url, respect_retry_after=False) <= 0.05


class LegacyConnect(WebSocket):
    """A 0.3 subclass that overrides ``connect()`` with 0.3's exact signature."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.connects: List[float] = []

    def connect(  # type: ignore[override]
        self,
        session_class: Any = WebsocketSession,
        poll: float = 5.0,
        ping_rate: float = 30.0,
        ping_timeout: Optional[float] = None,
        auto_pong: bool = True,
        close_timeout: Optional[float] = 30.0,
    ) -> Any:
        self.connects.append(poll)
        for event in super().connect(  # noqa: UP028 - written as 0.3 code (Python 2) was
            session_class=session_class, poll=poll, ping_rate=ping_rate,
            ping_timeout=ping_timeout, auto_pong=auto_pong, close_timeout=close_timeout,
        ):
            yield event


def test_persist_with_a_03_connect_override(ws_server: WSServer) -> None:
    websocket = LegacyConnect(ws_server.url_for("/close?code=1000"))
    exit_event = threading.Event()
    readies = 0
    for event in persist(websocket, poll=7, min_wait=0.01, max_wait=0.02, ping_rate=0,
                         exit_event=exit_event):
        if event.name == "ready":
            readies += 1
            if readies == 2:
                exit_event.set()
    assert readies == 2
    assert websocket.connects == [7, 7]


# ============================================================================================
# API: lomond.response
# ============================================================================================


def test_response_api() -> None:
    documented(Response.__init__, [("header_data", EMPTY)], skip_self=True)
    documented(Response.get, [("name", EMPTY), ("default", None)], skip_self=True)
    documented(Response.get_list, [("name", EMPTY)], skip_self=True)
    response = Response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate, x-other\r\n\r\n"
    )
    assert response.get("upgrade") == "websocket"
    assert response.get("Upgrade") == "websocket"
    assert response.get("missing") is None
    assert response.get("missing", "fallback") == "fallback"
    assert response.get_list("sec-websocket-extensions") == ["permessage-deflate", "x-other"]
    assert response.get_list("missing") == []
    assert repr(response) == "<response HTTP/1.1 101 Switching Protocols>"


def test_ready_carries_the_response(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    run = collect(websocket, lambda e: websocket.close() if isinstance(e, events.Ready) else None)
    response = run.first(events.Ready).response
    assert isinstance(response, Response)
    assert response.status_code == 101
    assert response.get("upgrade", "").lower() == "websocket"


# ============================================================================================
# API: lomond.status and lomond.constants
# ============================================================================================


def test_status() -> None:
    assert lomond.Status is Status
    assert Status.NORMAL == 1000 and Status.GOING_AWAY == 1001
    assert Status.BAD_DATA == 1007 and Status.DATA_NOT_UNDERSTOOD == 1003
    # Issue 20, item 7: as 0.3.4's set (0-999, 1004-1006, 1014-2999) but for
    # 1014, registered with IANA (docs/porting.md).
    assert set(Status.invalid_codes) == (
        set(range(1000)) | {1004, 1005, 1006} | set(range(1015, 3000))
    )
    assert 1000 not in Status.invalid_codes and 1014 not in Status.invalid_codes


def test_close_with_a_status_member(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    collect(websocket, lambda e: websocket.close(Status.GOING_AWAY)
            if isinstance(e, events.Ready) else None)
    record = ws_server.last
    record.wait_closed()
    assert record.close_code == 1001


def test_constants() -> None:
    assert isinstance(constants.WS_KEY, bytes)
    assert constants.WS_KEY == b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert isinstance(constants.USER_AGENT, str) and constants.USER_AGENT


def test_fast_options_are_still_valid_connect_arguments() -> None:
    # The helpers above rely on these; a renamed option would fail every test.
    parameters = inspect.signature(WebSocket.connect).parameters
    assert set(FAST) <= set(parameters)


# ============================================================================================
# docs/porting.md: one table of every remaining difference (issue 20, item 10)
# ============================================================================================


def test_porting_guide_has_one_table_of_the_differences() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "porting.md").read_text("utf-8")
    section = text.split("## Every remaining difference", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header, rule, body = rows[0], rows[1], rows[2:]
    assert header.startswith("| What | Lomond 0.3.4 | lomond | Why | To port |")
    assert rule.count("|") == 6
    # Every row: what 0.3.4 does, what lomond does, why (and the change).
    for row in body:
        cells = [cell.strip() for cell in row.strip().strip("|").split(" | ")]
        assert len(cells) == 5 and all(cells), row
    topics = " ".join(row.split(" | ")[0] for row in body)
    for topic in ("exit_event", "back-off", "Retry-After", "is_active", "Rejected",
                  "Close codes", "invalid_codes", "reason", "add_header", "headers",
                  "schemes", "Events", "Response", "sent_close_time", "critical",
                  "Status", "ssl_verify"):
        assert topic in topics, topic
    assert text.count("\n| What |") == 1  # one table, not one per topic
