"""The WebSocket API against real servers on loopback (ws:// and wss://).

The peer is the ``websockets`` server from ``tests/peers`` (it records what
it receives), or the scripted raw server for faults no correct server makes.
Every run goes through :func:`core_helpers.collect`, which also checks the
documented event order and that every Connected has exactly one Disconnected.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import pytest
from core_helpers import FAST, collect, refused_port
from peers.raw_server import BINARY, CLOSE, PONG, TEXT, RawConnection
from peers.tls import TLSBundle
from peers.ws_server import WSServer

from lomond import WebSocket, events
from lomond.errors import (
    FrameBuildError,
    WebSocketClosed,
    WebSocketClosing,
    WebSocketUnavailable,
)

MiB = 1024 * 1024


@dataclass
class Peer:
    server: WSServer
    make: Callable[..., WebSocket]
    scheme: str


@pytest.fixture(params=["ws", "wss"])
def peer(request: pytest.FixtureRequest, tls: TLSBundle) -> Peer:
    """The real server over plain TCP and over TLS (trusting the test CA)."""
    if request.param == "ws":
        server = request.getfixturevalue("ws_server")
        context = None
    else:
        server = request.getfixturevalue("wss_server")
        context = tls.client_context()

    def make(path: str = "/echo", **kwargs: Any) -> WebSocket:
        if context is not None:
            kwargs.setdefault("ssl_context", context)
        return WebSocket(server.url_for(path), **kwargs)

    return Peer(server, make, request.param)


def close_after(
    websocket: WebSocket, n: int, kinds: tuple = (events.Text, events.Binary)
) -> Callable[[events.Event], None]:
    """An on_event that closes once ``n`` messages arrived."""
    count = [0]

    def on_event(event: events.Event) -> None:
        if isinstance(event, kinds):
            count[0] += 1
            if count[0] == n:
                websocket.close()

    return on_event


# -- echo -----------------------------------------------------------------------


def test_echo_text_binary_json(peer: Peer) -> None:
    websocket = peer.make("/echo")
    data = os.urandom(1000)
    close = close_after(websocket, 4)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_text("hello ☃")
            websocket.send_binary(data)
            websocket.send_json({"a": [1, 2]})
            websocket.send_json(b=None)
        close(event)

    run = collect(websocket, on_event)
    assert run.names == [
        "connecting", "connected", "ready", "poll", "text", "binary", "text", "text", "closed",
        "disconnected",
    ]
    texts = run.of(events.Text)
    assert texts[0].text == "hello ☃"
    assert texts[1].json == {"a": [1, 2]}
    assert texts[2].json == {"b": None}
    assert run.first(events.Binary).data == data
    record = peer.server.last
    assert record.received == ["hello ☃", data, '{"a": [1, 2]}', '{"b": null}']
    disconnected = run.first(events.Disconnected)
    assert disconnected.graceful is True
    assert run.first(events.Connecting).url == peer.server.url_for("/echo")
    assert run.first(events.Connected).proxy is None


def test_ready_carries_the_response(peer: Peer) -> None:
    websocket = peer.make("/echo")
    run = collect(websocket, lambda e: websocket.close() if e.name == "ready" else None)
    ready = run.first(events.Ready)
    assert ready.response.status_code == 101
    assert ready.protocol is None
    assert ready.extensions == frozenset()
    assert run.names[-2:] == ["closed", "disconnected"]


def test_sixteen_mib_both_ways(peer: Peer) -> None:
    """A 16 MiB message (exactly the default max_size) is sent and received whole."""
    websocket = peer.make("/echo")
    payload = os.urandom(16 * MiB)
    text = "é" * (8 * MiB)  # 16 MiB of UTF-8
    close = close_after(websocket, 2)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_binary(payload)
            websocket.send_text(text)
        close(event)

    run = collect(websocket, on_event, timeout=60)
    assert run.first(events.Binary).data == payload
    assert run.first(events.Text).text == text
    received = peer.server.last.received
    assert len(received) == 2
    assert received[0] == payload
    assert received[1] == text
    assert run.first(events.Disconnected).graceful


def test_message_over_max_size_fails_with_1009(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"), max_size=1000)
    sent = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_binary(b"x" * 1001)  # echoed back: too large for us
            sent.append(True)

    run = collect(websocket, on_event)
    assert run.names[-2:] == ["protocol_error", "disconnected"]
    error = run.first(events.ProtocolError)
    assert error.code == 1009
    assert run.first(events.Disconnected).graceful is False
    record = ws_server.last
    record.wait_closed()
    assert record.close_code == 1009


def test_stream_of_messages_in_order(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/stream?count=2000"))
    run = collect(websocket, close_after(websocket, 2000))
    assert [e.text for e in run.of(events.Text)] == [str(n) for n in range(2000)]


def test_fragmented_messages_from_the_server(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/fragmented?parts=ab,c€,,d"))
    run = collect(websocket, close_after(websocket, 1))
    assert run.first(events.Text).text == "abc€d"
    websocket = WebSocket(ws_server.url_for("/fragmented?parts=x,y&binary=1"))
    run = collect(websocket, close_after(websocket, 1))
    assert run.first(events.Binary).data == b"xy"


# -- closing ----------------------------------------------------------------------


def test_server_close(peer: Peer) -> None:
    websocket = peer.make("/close?code=4001&reason=see+you")
    run = collect(websocket)
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
    closing = run.first(events.Closing)
    assert (closing.code, closing.reason) == (4001, "see you")
    assert run.first(events.Disconnected).graceful is True
    record = peer.server.last
    record.wait_closed()
    # lomond echoed the server's code (RFC 6455 section 5.5.1).
    assert record.close_code == 4001


def test_server_close_without_status_code(scripted_server: Any) -> None:
    """An empty Close payload: Closing(code=None), and the echo is empty too."""

    def script(conn: RawConnection) -> bytes:
        conn.handshake()
        conn.send_frame(CLOSE, b"")
        frame = conn.recv_frame()
        assert frame.opcode == CLOSE
        return frame.payload

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
    closing = run.first(events.Closing)
    assert (closing.code, closing.reason) == (None, "")
    assert run.first(events.Disconnected).graceful is True
    assert server.result() == b""


def test_client_close(peer: Peer) -> None:
    websocket = peer.make("/echo")

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.close(4002, "done here")

    run = collect(websocket, on_event)
    assert run.names == ["connecting", "connected", "ready", "poll", "closed", "disconnected"]
    closed = run.first(events.Closed)
    assert closed.code == 4002  # websockets echoes the code
    assert run.first(events.Disconnected).graceful is True
    record = peer.server.last
    record.wait_closed()
    assert (record.close_code, record.close_reason) == (4002, "done here")
    assert websocket.sent_close_time is None  # no session any more
    assert websocket.is_closed


def test_close_is_idempotent(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.close(4003, "first")
            websocket.close(4004, "second")

    run = collect(websocket, on_event)
    assert run.first(events.Closed).code == 4003
    record = ws_server.last
    record.wait_closed()
    assert record.close_code == 4003
    assert sum(1 for f in record.frames if f.opcode == CLOSE) == 1


def test_messages_still_arrive_after_close(ws_server: WSServer) -> None:
    """close() stops sending, not receiving: what the server sent first is delivered."""
    websocket = WebSocket(ws_server.url_for("/stream?count=300"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.close()

    run = collect(websocket, on_event)
    # websockets sends all 300 before reading our close frame.
    assert len(run.of(events.Text)) == 300
    assert run.names[-2:] == ["closed", "disconnected"]


def test_server_drops_the_connection(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/drop"))
    run = collect(websocket)
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    assert run.first(events.Disconnected).graceful is False


def test_sending_while_handling_closing(ws_server: WSServer) -> None:
    """The docs: 'You may send text or binary messages in response to the Closing event'."""
    websocket = WebSocket(ws_server.url_for("/close"))
    raised: List[BaseException] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Closing):
            try:
                websocket.send_text("last words")
            except Exception as error:
                raised.append(error)

    run = collect(websocket, on_event)
    assert raised == []
    assert run.names[-2:] == ["closing", "disconnected"]


# -- pings -------------------------------------------------------------------------


def test_server_ping_is_answered(peer: Peer) -> None:
    websocket = peer.make("/ping?data=marco")

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ping):
            websocket.send_text("pinged")  # the pong goes out after this handler
        elif isinstance(event, events.Text):
            websocket.close()

    run = collect(websocket, on_event)
    assert run.first(events.Ping).data == b"marco"
    record = peer.server.last
    pong = record.wait_frame(PONG)
    assert pong.data == b"marco"


def test_server_ping_not_answered_without_auto_pong(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/ping?data=x"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ping):
            websocket.send_text("pinged")
        elif isinstance(event, events.Text):
            websocket.close()

    run = collect(websocket, on_event, auto_pong=False)
    assert run.first(events.Ping).data == b"x"
    record = ws_server.last
    record.wait_closed()
    assert record.pongs == []


def test_client_ping_gets_a_pong(peer: Peer) -> None:
    websocket = peer.make("/echo")

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_ping(b"polo")
        elif isinstance(event, events.Pong):
            websocket.close()

    run = collect(websocket, on_event)
    assert run.first(events.Pong).data == b"polo"
    assert peer.server.last.pings == [b"polo"]


def test_unsolicited_pong(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_pong(b"unsolicited")
            websocket.send_text("after")
        elif isinstance(event, events.Text):
            websocket.close()

    collect(websocket, on_event)
    assert ws_server.last.pongs == [b"unsolicited"]


def test_ping_argument_errors(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    errors: Dict[str, type] = {}

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            for name, call in {
                "ping-str": lambda: websocket.send_ping("text"),  # type: ignore[arg-type]
                "ping-126": lambda: websocket.send_ping(b"x" * 126),
                "pong-126": lambda: websocket.send_pong(b"x" * 126),
                "text-bytes": lambda: websocket.send_text(b"bytes"),  # type: ignore[arg-type]
                "binary-str": lambda: websocket.send_binary("str"),  # type: ignore[arg-type]
                "json": lambda: websocket.send_json({1, 2}),
            }.items():
                try:
                    call()
                except Exception as error:
                    errors[name] = type(error)
            websocket.close()

    run = collect(websocket, on_event)
    assert errors == {
        "ping-str": TypeError, "ping-126": FrameBuildError, "pong-126": FrameBuildError,
        "text-bytes": TypeError, "binary-str": TypeError, "json": TypeError,
    }
    # None of those put anything on the wire or broke the connection.
    assert run.first(events.Disconnected).graceful
    assert ws_server.last.received == []


# -- handshake outcomes ------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 500, 200])
def test_rejected_by_status(ws_server: WSServer, status: int) -> None:
    websocket = WebSocket(ws_server.url_for(f"/reject?status={status}"))
    run = collect(websocket)
    assert run.names == ["connecting", "connected", "rejected", "disconnected"]
    rejected = run.first(events.Rejected)
    assert rejected.response.status_code == status
    assert str(status) in rejected.reason
    assert run.first(events.Disconnected).graceful is False


def test_rejected_bad_accept(scripted_server: Any) -> None:
    server = scripted_server(lambda conn: (conn.handshake(accept="wrong"), conn.hold(2)))
    websocket = WebSocket(server.url_for("/"))
    run = collect(websocket)
    assert run.names == ["connecting", "connected", "rejected", "disconnected"]
    assert "accept" in run.first(events.Rejected).reason.lower()


def test_rejected_unoffered_subprotocol(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake(extra_headers={"Sec-WebSocket-Protocol": "evil"})
        conn.hold(2)

    websocket = WebSocket(scripted_server(script).url_for("/"), protocols=["good"])
    run = collect(websocket)
    assert run.names == ["connecting", "connected", "rejected", "disconnected"]


def test_subprotocol_negotiated(ws_server_factory: Any) -> None:
    server = ws_server_factory(subprotocols=["chat.v2", "chat.v1"])
    websocket = WebSocket(server.url_for("/echo"), protocols=["chat.v1", "chat.v2"])
    run = collect(websocket, lambda e: websocket.close() if e.name == "ready" else None)
    assert run.first(events.Ready).protocol in ("chat.v1", "chat.v2")
    assert server.last.request_headers["Sec-WebSocket-Protocol"] == "chat.v1, chat.v2"


def test_request_headers_seen_by_the_server(ws_server: WSServer) -> None:
    websocket = WebSocket(
        ws_server.url_for("/headers"),
        agent="tester/9",
        headers={"Origin": "http://origin.example", "X-Custom": "value"},
    )
    websocket.add_header(b"X-Bytes", b"raw")
    run = collect(websocket, close_after(websocket, 1))
    headers = {k.lower(): v for k, v in run.first(events.Text).json.items()}
    assert headers["user-agent"] == "tester/9"
    assert headers["origin"] == "http://origin.example"
    assert headers["x-custom"] == "value"
    assert headers["x-bytes"] == "raw"
    assert headers["host"] == f"127.0.0.1:{ws_server.port}"
    assert headers["sec-websocket-version"] == "13"


def test_ipv6_loopback(ws_server_factory: Any) -> None:
    server = ws_server_factory(host="::1")
    websocket = WebSocket(server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_text("v6")
        elif isinstance(event, events.Text):
            websocket.close()

    run = collect(websocket, on_event)
    assert run.first(events.Text).text == "v6"
    assert server.last.request_headers["Host"] == f"[::1]:{server.port}"


def test_connection_refused() -> None:
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")
    run = collect(websocket)
    assert run.names == ["connecting", "connect_fail"]
    assert "refused" in run.first(events.ConnectFail).reason.lower()


def test_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS failure is a ConnectFail, never a leaked socket.gaierror.

    getaddrinfo is replaced so that no query leaves the machine.
    """
    import socket

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    websocket = WebSocket("ws://does-not-exist.invalid/")
    run = collect(websocket)
    assert run.names == ["connecting", "connect_fail"]
    assert "resol" in run.first(events.ConnectFail).reason.lower()


def test_handshake_stall_is_connect_fail(scripted_server: Any) -> None:
    server = scripted_server(mode="stall")
    websocket = WebSocket(server.url_for("/"))
    start = time.monotonic()
    run = collect(websocket, handshake_timeout=0.5)
    elapsed = time.monotonic() - start
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]
    assert 0.4 <= elapsed < 3.0
    assert "0.5" in run.first(events.ConnectFail).reason


def test_server_closes_during_the_handshake(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.read_request()
        conn.send_raw(b"HTTP/1.1 101 Switching")

    websocket = WebSocket(scripted_server(script).url_for("/"))
    run = collect(websocket)
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]


def test_garbage_answer_is_connect_fail(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.read_request()
        conn.send_raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        conn.hold(2)

    run = collect(WebSocket(scripted_server(script).url_for("/")))
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]


# -- protocol errors from a misbehaving server -----------------------------------------


def test_invalid_utf8_from_the_server(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Optional[tuple]:
        conn.handshake()
        conn.send_frame(TEXT, b"ok")
        conn.send_frame(TEXT, b"bad \xff")
        return conn.recv_close()

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "text", "protocol_error",
                         "disconnected"]
    error = run.first(events.ProtocolError)
    assert error.code == 1007 and not error.critical
    assert run.first(events.Disconnected).graceful is False
    code, _ = server.result()
    assert code == 1007


def test_reserved_opcode_from_the_server(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Optional[tuple]:
        conn.handshake()
        conn.send_frame(BINARY, b"ok")
        conn.send_frame(0x3, b"?")
        return conn.recv_close()  # None when dropped without a close frame

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "binary", "protocol_error",
                         "disconnected"]
    # critical=False: lomond answers with a Close frame (1002), as the
    # server sees on the wire.
    assert not run.first(events.ProtocolError).critical
    result = server.result()
    assert result is not None and result[0] == 1002


# -- sending in the wrong state ------------------------------------------------------

SENDS = {
    "text": lambda ws: ws.send_text("x"),
    "binary": lambda ws: ws.send_binary(b"x"),
    "json": lambda ws: ws.send_json(x=1),
    "ping": lambda ws: ws.send_ping(b""),
    "pong": lambda ws: ws.send_pong(b""),
}


@pytest.mark.parametrize("kind", sorted(SENDS))
def test_send_before_connect_raises_unavailable(kind: str) -> None:
    websocket = WebSocket("ws://127.0.0.1:1/")
    with pytest.raises(WebSocketUnavailable) as info:
        SENDS[kind](websocket)
    assert type(info.value) is WebSocketUnavailable


@pytest.mark.parametrize("kind", sorted(SENDS))
def test_send_in_every_state(ws_server: WSServer, kind: str) -> None:
    """Before Ready: Unavailable; after close(): Closing; after Disconnected: Closed."""
    websocket = WebSocket(ws_server.url_for("/echo"))
    send = SENDS[kind]
    outcomes: Dict[str, Any] = {}

    def attempt(label: str) -> None:
        try:
            send(websocket)
            outcomes[label] = None
        except Exception as error:
            outcomes[label] = type(error)

    def on_event(event: events.Event) -> None:
        if event.name in ("connecting", "connected"):
            attempt(event.name)
        elif event.name == "ready":
            attempt("ready")
            websocket.close()
            attempt("after-close")
        elif event.name == "closed":
            attempt("closed")
        elif event.name == "disconnected":
            attempt("disconnected")

    collect(websocket, on_event)
    attempt("after-loop")
    assert outcomes == {
        "connecting": WebSocketUnavailable,
        "connected": WebSocketUnavailable,
        "ready": None,
        "after-close": WebSocketClosing,
        "closed": WebSocketClosed,
        "disconnected": WebSocketClosed,
        "after-loop": WebSocketClosed,
    }


def test_close_and_force_disconnect_outside_a_connection_do_not_raise() -> None:
    websocket = WebSocket("ws://127.0.0.1:1/")
    websocket.close()
    websocket.force_disconnect()
    assert websocket.is_closed and not websocket.is_active and not websocket.is_closing


def test_state_properties(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    seen: Dict[str, tuple] = {}

    def on_event(event: events.Event) -> None:
        state = (websocket.is_active, websocket.is_closing, websocket.is_closed)
        if event.name == "ready":
            seen["ready"] = state
            websocket.close()
            seen["after-close"] = (websocket.is_active, websocket.is_closing,
                                   websocket.is_closed)
            assert websocket.sent_close_time is not None
            assert abs(websocket.sent_close_time - time.time()) < 5
        elif event.name in ("closed", "disconnected"):
            seen[event.name] = state

    collect(websocket, on_event)
    assert seen == {
        "ready": (True, False, False),
        "after-close": (False, True, False),
        "closed": (False, False, True),
        "disconnected": (False, False, True),
    }
    assert not websocket.is_secure
    assert WebSocket("wss://example.com/").is_secure


def test_second_connect_while_connected_raises(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    raised: List[type] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            try:
                next(iter(websocket.connect()))
            except Exception as error:
                raised.append(type(error))
            websocket.close()

    collect(websocket, on_event)
    assert raised == [WebSocketUnavailable]


def test_reconnect_with_the_same_object(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_text("again")
        elif isinstance(event, events.Text):
            websocket.close()

    for _ in range(3):
        run = collect(websocket, on_event)
        assert run.first(events.Text).text == "again"
        assert run.first(events.Disconnected).graceful
    assert len(ws_server.connections) == 3


def test_breaking_out_of_the_loop_drops_the_connection(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    for event in websocket.connect(**FAST):
        if isinstance(event, events.Ready):
            break
    record = ws_server.last
    record.wait_closed()
    assert websocket.is_closed
    with pytest.raises(WebSocketClosed):
        websocket.send_text("x")


# -- threads ---------------------------------------------------------------------------


def test_concurrent_senders(ws_server: WSServer) -> None:
    """8 threads x 1000 messages while the loop receives the echoes."""
    threads_n, per_thread = 8, 1000
    total = threads_n * per_thread
    websocket = WebSocket(ws_server.url_for("/echo"))
    errors: List[BaseException] = []
    senders: List[threading.Thread] = []

    def sender(index: int) -> None:
        try:
            for n in range(per_thread):
                if n % 2:
                    websocket.send_text(f"{index}:{n}:" + "t" * (n % 300))
                else:
                    websocket.send_binary(f"{index}:{n}:".encode() + b"b" * (n % 5000))
        except BaseException as error:
            errors.append(error)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            for index in range(threads_n):
                thread = threading.Thread(target=sender, args=(index,), daemon=True)
                senders.append(thread)
                thread.start()

    close = close_after(websocket, total)

    def handler(event: events.Event) -> None:
        on_event(event)
        close(event)

    run = collect(websocket, handler, timeout=60)
    for thread in senders:
        thread.join(10)
    assert errors == []
    assert len(run.of(events.Text)) + len(run.of(events.Binary)) == total
    received = ws_server.last.received
    assert len(received) == total
    per: Dict[int, List[int]] = {i: [] for i in range(threads_n)}
    for message in received:
        raw = message.encode() if isinstance(message, str) else message
        index, n, body = raw.split(b":", 2)
        i, k = int(index), int(n)
        per[i].append(k)
        # Intact: the right type and the right body for that message.
        if k % 2:
            assert isinstance(message, str) and body == b"t" * (k % 300)
        else:
            assert isinstance(message, bytes) and body == b"b" * (k % 5000)
    for index in range(threads_n):
        assert per[index] == list(range(per_thread)), f"thread {index} out of order"
    assert run.first(events.Disconnected).graceful


def test_close_from_another_thread_is_prompt(ws_server: WSServer) -> None:
    """With poll=30 the loop sleeps in select(); close() must wake it at once."""
    websocket = WebSocket(ws_server.url_for("/record"))
    closed_at: List[float] = []

    def close_later() -> None:
        time.sleep(0.3)
        closed_at.append(time.monotonic())
        websocket.close(4005, "from a thread")

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            threading.Thread(target=close_later, daemon=True).start()

    run = collect(websocket, on_event, poll=30, ping_rate=0, close_timeout=30)
    done = run.times[-1]
    assert closed_at and done - closed_at[0] < 2.0
    assert run.names[-2:] == ["closed", "disconnected"]
    assert run.first(events.Disconnected).graceful
    record = ws_server.last
    record.wait_closed()
    assert (record.close_code, record.close_reason) == (4005, "from a thread")


def test_force_disconnect_from_another_thread_is_prompt(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    called_at: List[float] = []

    def later() -> None:
        time.sleep(0.3)
        called_at.append(time.monotonic())
        websocket.force_disconnect()

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            threading.Thread(target=later, daemon=True).start()

    run = collect(websocket, on_event, poll=30)
    assert called_at and run.times[-1] - called_at[0] < 2.0
    assert run.names[-3:] == ["ready", "poll", "disconnected"]
    assert run.first(events.Disconnected).graceful is False


def test_send_from_another_thread_while_the_loop_waits(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    def later() -> None:
        time.sleep(0.2)
        websocket.send_text("from a thread")

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            threading.Thread(target=later, daemon=True).start()
        elif isinstance(event, events.Text):
            websocket.close()

    run = collect(websocket, on_event, poll=30)
    assert run.first(events.Text).text == "from a thread"
    # The echo is delivered promptly, not at the next poll.
    assert run.time_of(events.Text) - run.time_of(events.Ready) < 2.0


# -- TLS -----------------------------------------------------------------------------


def test_wss_with_the_test_ca(wss_server: WSServer, tls: TLSBundle) -> None:
    websocket = WebSocket(wss_server.url_for("/echo"), ssl_context=tls.client_context())
    assert websocket.is_secure

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_text("secure")
        elif isinstance(event, events.Text):
            websocket.close()

    run = collect(websocket, on_event)
    assert run.first(events.Text).text == "secure"
    assert wss_server.url.startswith("wss://localhost:")


def test_wss_without_the_ca_fails_verification(wss_server: WSServer) -> None:
    run = collect(WebSocket(wss_server.url_for("/echo")))
    assert run.names == ["connecting", "connect_fail"]
    reason = run.first(events.ConnectFail).reason
    assert "certificate verify failed" in reason.lower()
    assert wss_server.connections == []


def test_wss_hostname_mismatch(ws_server_factory: Any, tls: TLSBundle) -> None:
    server = ws_server_factory(ssl_context=tls.server_context("wrong_host"))
    run = collect(WebSocket(server.url_for("/echo"), ssl_context=tls.client_context()))
    assert run.names == ["connecting", "connect_fail"]
    assert "certificate" in run.first(events.ConnectFail).reason.lower()


def test_tls_handshake_stall_is_connect_fail(scripted_server: Any, tls: TLSBundle) -> None:
    server = scripted_server(mode="stall")
    url = f"wss://localhost:{server.port}/"
    start = time.monotonic()
    run = collect(WebSocket(url, ssl_context=tls.client_context()), handshake_timeout=0.5)
    assert run.names == ["connecting", "connect_fail"]
    assert time.monotonic() - start < 3.0


def test_one_disconnected_per_connected_over_many_outcomes(
    ws_server: WSServer, scripted_server: Any
) -> None:
    stall = scripted_server(mode="stall")
    urls = [
        ws_server.url_for("/echo"),
        ws_server.url_for("/close"),
        ws_server.url_for("/drop"),
        ws_server.url_for("/reject?status=503"),
        ws_server.url_for("/nowhere"),
        stall.url_for("/"),
        f"ws://127.0.0.1:{refused_port()}/",
    ]
    for url in urls:
        websocket = WebSocket(url)
        run = collect(
            websocket,
            lambda e, ws=websocket: ws.close() if e.name == "ready" else None,
            handshake_timeout=0.3,
        )
        assert run.names.count("disconnected") == run.names.count("connected"), (url, run.names)


def test_json_round_trip_unicode(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    obj = {"snow": "☃", "list": [1, 2.5, None, True], "nested": {"k": "v"}}

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_json(obj)
        elif isinstance(event, events.Text):
            websocket.close()

    run = collect(websocket, on_event)
    assert run.first(events.Text).json == obj
    assert json.loads(ws_server.last.received[0]) == obj


def test_close_reason_longer_than_123_bytes_is_trimmed(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.close(1000, "€" * 60)  # 180 bytes

    collect(websocket, on_event)
    record = ws_server.last
    record.wait_closed()
    assert record.close_code == 1000
    assert record.close_reason == "€" * 41  # 123 bytes
    close = next(f for f in record.frames if f.opcode == CLOSE)
    assert close.data is not None and len(close.data) == 125
    assert struct.unpack("!H", close.data[:2])[0] == 1000



def test_close_while_threads_send(ws_server: WSServer) -> None:
    """Senders racing a close(): each either sends whole or gets WebSocketClosing/Closed,
    and no data frame follows our Close frame on the wire (RFC 6455 5.5.1)."""
    websocket = WebSocket(ws_server.url_for("/record"))
    outcomes: Dict[int, Any] = {}
    sent: Dict[int, int] = {}

    def sender(index: int) -> None:
        n = 0
        try:
            while True:
                websocket.send_text(f"{index}:{n}")
                n += 1
        except (WebSocketClosing, WebSocketClosed) as error:
            outcomes[index] = type(error)
        except BaseException as error:
            outcomes[index] = error
        sent[index] = n

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(4)]

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            for thread in threads:
                thread.start()
            threading.Timer(0.2, websocket.close).start()

    run = collect(websocket, on_event, timeout=30)
    for thread in threads:
        thread.join(5)
    assert all(o in (WebSocketClosing, WebSocketClosed) for o in outcomes.values()), outcomes
    assert len(outcomes) == 4
    assert run.first(events.Disconnected).graceful
    record = ws_server.last
    record.wait_closed()
    opcodes = [f.opcode for f in record.frames]
    assert opcodes.count(CLOSE) == 1
    assert opcodes[-1] == CLOSE, "a frame followed the client's Close"
    per: Dict[int, List[int]] = {}
    for message in record.received:
        index, n = map(int, str(message).split(":"))
        per.setdefault(index, []).append(n)
    for index, numbers in per.items():
        assert numbers == list(range(sent[index])), f"thread {index}"


def test_credentials_in_the_url(ws_server: WSServer) -> None:
    url = ws_server.url_for("/headers").replace("ws://", "ws://alice:pa%3Ass@")
    websocket = WebSocket(url)
    run = collect(websocket, close_after(websocket, 1))
    headers = {k.lower(): v for k, v in run.first(events.Text).json.items()}
    import base64

    assert headers["authorization"] == "Basic " + base64.b64encode(b"alice:pa:ss").decode()
    for event in run.events:
        assert "pa:ss" not in repr(event) and "pa%3Ass" not in repr(event)
    assert "alice" not in run.first(events.Connecting).url


def test_iterating_the_websocket_itself(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/close"))
    names = [event.name for event in websocket]
    assert names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b"])
def test_header_injection_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        WebSocket("ws://example.com/", headers={"X-Custom": value})
    with pytest.raises(ValueError):
        WebSocket("ws://example.com/", agent=value)
    websocket = WebSocket("ws://example.com/")
    with pytest.raises(ValueError):
        websocket.add_header("X-Custom", value)
    with pytest.raises(ValueError):
        websocket.add_header(b"X-Custom", value.encode())
    assert websocket.headers == []


def test_constructor_does_no_io_and_validates() -> None:
    websocket = WebSocket("ws://does-not-exist.invalid:1/")  # constructing looks nothing up
    assert websocket.is_closed
    with pytest.raises(ValueError):
        WebSocket("ftp://example.com/")
    with pytest.raises(TypeError):
        WebSocket("ws://example.com/", protocols="chat")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WebSocket("ws://example.com/", max_size=0)
