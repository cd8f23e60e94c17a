"""lomond.asyncio.WebSocket against real peers on loopback: events, sends, options.

The same server answers both drivers where a comparison is practical: the
threaded :class:`lomond.WebSocket` and :class:`lomond.asyncio.WebSocket`
must yield the same events, in the same order, with the same reasons.
Coroutines run with :func:`core_helpers.run_async` (no pytest plugin); the
tests marked with the ``loop_factory`` fixture run on asyncio's own loop
and on uvloop's. Timers, back-pressure and cancellation are in
test_asyncio_session.py, connecting in test_asyncio_connect.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import pytest
from aio_helpers import no_dns, run_asyncio, run_threaded, summary
from core_helpers import (
    FAST,
    LoopFactory,
    Run,
    acollect,
    aexchange,
    collect,
    open_descriptors,
    refused_port,
    run_async,
    wait_for,
)
from peers.raw_server import PONG, TEXT, RawConnection
from peers.tls import TLSBundle
from peers.ws_server import WSServer, deflate

import lomond
from lomond import events
from lomond.asyncio import WebSocket
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


# -- the same events as the threaded driver --------------------------------------------


SCENARIOS: Dict[str, List[str]] = {
    "normal": ["connecting", "connected", "ready", "closed", "disconnected"],
    "server-close": ["connecting", "connected", "ready", "closing", "disconnected"],
    "rejected": ["connecting", "connected", "rejected", "disconnected"],
    "not-found": ["connecting", "connected", "rejected", "disconnected"],
    "dns": ["connecting", "connect_fail"],
    "connect-timeout": ["connecting", "connect_fail"],
    "handshake-timeout": ["connecting", "connected", "connect_fail", "disconnected"],
    "handshake-stall": ["connecting", "connected", "connect_fail", "disconnected"],
    "dropped": ["connecting", "connected", "ready", "disconnected"],
    "garbage-answer": ["connecting", "connected", "connect_fail", "disconnected"],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_both_drivers_yield_the_same_events(
    scenario: str, ws_server: WSServer, scripted_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    options: Dict[str, Any] = {}
    close_on_ready = False
    if scenario == "normal":
        url, close_on_ready = ws_server.url_for("/echo"), True
    elif scenario == "server-close":
        url = ws_server.url_for("/close?code=4000&reason=bye")
    elif scenario == "rejected":
        url = ws_server.url_for("/reject?status=403")
    elif scenario == "not-found":
        url = ws_server.url_for("/nowhere")
    elif scenario == "dns":
        monkeypatch.setattr(socket, "getaddrinfo", no_dns)
        url = "ws://does-not-exist.invalid/"
    elif scenario == "connect-timeout":
        url, options = scripted_server(mode="no-accept").url, {"connect_timeout": 0.3}
    elif scenario == "handshake-timeout":
        url, options = ws_server.url_for("/slow-handshake?delay=3"), {"handshake_timeout": 0.3}
    elif scenario == "handshake-stall":
        url, options = scripted_server(mode="stall").url, {"handshake_timeout": 0.3}
    elif scenario == "dropped":
        url = ws_server.url_for("/drop")
    else:

        def garbage(conn: RawConnection) -> None:
            conn.read_request()
            conn.send_raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            conn.hold(2)

        url = scripted_server(garbage).url
    threaded = run_threaded(url, close_on_ready, **options)
    in_asyncio = run_asyncio(url, close_on_ready, **options)
    assert [name for name, _, _ in summary(in_asyncio)] == SCENARIOS[scenario]
    assert summary(in_asyncio) == summary(threaded)


def test_reasons_of_the_failures(ws_server: WSServer, scripted_server: Any) -> None:
    """The reason strings the documentation shows, from the asyncio driver."""
    run = run_asyncio(ws_server.url_for("/reject?status=403"), False)
    assert run.first(events.Rejected).reason == (
        "server answered 403 Forbidden instead of 101 Switching Protocols"
    )
    assert run.first(events.Disconnected).reason == "handshake rejected"
    run = run_asyncio(ws_server.url_for("/slow-handshake?delay=3"), False, handshake_timeout=0.3)
    assert run.first(events.ConnectFail).reason == "no response to the upgrade request within 0.3 s"
    server = scripted_server(mode="no-accept")
    run = run_asyncio(server.url, False, connect_timeout=0.3)
    reason = run.first(events.ConnectFail).reason
    assert reason == f"connecting to 127.0.0.1:{server.port} timed out"


def test_refused_port_is_connect_fail() -> None:
    port = refused_port()
    run = run_asyncio(f"ws://127.0.0.1:{port}/", False)
    assert run.names == ["connecting", "connect_fail"]
    reason = run.first(events.ConnectFail).reason
    assert reason.startswith(f"could not connect to 127.0.0.1:{port}: ")
    assert "ECONNREFUSED" in reason


def test_refused_port_has_the_threaded_drivers_reason() -> None:
    url = f"ws://127.0.0.1:{refused_port()}/"
    assert summary(run_asyncio(url, False)) == summary(run_threaded(url, False))


def test_dns_failure_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    run = run_asyncio("ws://does-not-exist.invalid/", False)
    assert run.first(events.ConnectFail).reason == (
        "could not resolve 'does-not-exist.invalid': name resolution failed: "
        "Name or service not known"
    )


# -- echo, on both loops ------------------------------------------------------------------


def test_echo_text_binary_json(peer: Peer, loop_factory: LoopFactory) -> None:
    websocket = peer.make("/echo")

    async def on_ready(ws: WebSocket) -> None:
        await ws.send_text("héllo")
        await ws.send_binary(b"\x00\x01\xff")
        await ws.send_binary(bytearray(b"array"))
        await ws.send_binary(memoryview(b"view"))
        await ws.send_json({"a": [1, 2]})
        await ws.send_json(b=True)

    seen = run_async(aexchange(websocket, on_ready, messages=6), loop_factory=loop_factory)
    received = [
        (event.name, getattr(event, "text", None) or getattr(event, "data", None))
        for event in seen if isinstance(event, (events.Text, events.Binary))
    ]
    assert received == [
        ("text", "héllo"), ("binary", b"\x00\x01\xff"), ("binary", b"array"),
        ("binary", b"view"), ("text", '{"a": [1, 2]}'), ("text", '{"b": true}'),
    ]
    texts = [e.text for e in seen if isinstance(e, events.Text)]
    assert [json.loads(text) for text in texts[1:]] == [{"a": [1, 2]}, {"b": True}]
    assert seen[-1].graceful  # type: ignore[attr-defined]
    peer.server.last.wait_closed()
    assert peer.server.last.close_code == 1000


def test_ready_carries_the_response(peer: Peer) -> None:
    websocket = peer.make("/echo")
    seen = run_async(aexchange(websocket, WebSocket.close))
    ready = next(event for event in seen if isinstance(event, events.Ready))
    assert ready.response.status_code == 101
    assert ready.response.headers.get("upgrade", "").lower() == "websocket"
    connected = next(e for e in seen if isinstance(e, events.Connected))
    assert (connected.url, connected.proxy) == (peer.server.url_for("/echo"), None)


@pytest.mark.parametrize("size", [4 * MiB + 3])
def test_large_messages_both_ways(peer: Peer, loop_factory: LoopFactory, size: int) -> None:
    """Several MiB each way, text and binary: the bytes come back intact."""
    payload = os.urandom(size)
    text = "ab€" * (size // 5)
    websocket = peer.make("/echo")

    async def on_ready(ws: WebSocket) -> None:
        await ws.send_binary(payload)
        await ws.send_text(text)

    seen = run_async(aexchange(websocket, on_ready, messages=2, timeout=60),
                     loop_factory=loop_factory, timeout=90)
    binary = next(e for e in seen if isinstance(e, events.Binary))
    assert binary.data == payload
    assert next(e for e in seen if isinstance(e, events.Text)).text == text


def test_messages_in_order(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/stream?count=2000"))

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Text) and event.text == "1999":
            await websocket.close()

    run = run_async(acollect(websocket, on_event))
    assert [e.text for e in run.of(events.Text)] == [str(n) for n in range(2000)]


def test_fragmented_messages_from_the_server(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/fragmented?parts=a,b,c"))
    seen = run_async(aexchange(websocket, None))
    assert [e.text for e in seen if isinstance(e, events.Text)] == ["abc"]


def test_sends_from_many_tasks_arrive_whole(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    count = 4 * 50

    async def sender(tag: int) -> None:
        for n in range(50):
            await websocket.send_text(f"{tag}:{n}:" + "x" * (n * 100))

    async def main() -> Run:
        received: List[str] = []

        async def on_event(event: events.Event) -> None:
            if isinstance(event, events.Ready):
                await asyncio.gather(*(sender(tag) for tag in range(4)))
            elif isinstance(event, events.Text):
                received.append(event.text)
                if len(received) == count:
                    await websocket.close()

        return await acollect(websocket, on_event)

    run = run_async(main())
    texts = [e.text for e in run.of(events.Text)]
    assert len(texts) == count
    for tag in range(4):
        mine = [t for t in texts if t.startswith(f"{tag}:")]
        assert [int(t.split(":")[1]) for t in mine] == list(range(50))
        assert all(t.endswith("x" * (int(t.split(":")[1]) * 100)) for t in mine)


# -- pings and pongs --------------------------------------------------------------------


def test_server_ping_is_answered(peer: Peer, loop_factory: LoopFactory) -> None:
    websocket = peer.make("/ping?data=hi")

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ping):
            await websocket.send_text("pinged")  # the pong goes out after this handler
        elif isinstance(event, events.Text):
            await websocket.close()

    run = run_async(acollect(websocket, on_event), loop_factory=loop_factory)
    assert run.first(events.Ping).data == b"hi"
    record = peer.server.last
    record.wait_closed()
    assert record.pongs == [b"hi"]
    # The Ping's handler ran first, then the pong went out.
    assert [f.opcode for f in record.frames][:2] == [TEXT, PONG]


def test_server_ping_not_answered_without_auto_pong(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/ping?data=hi"))

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ping):
            await websocket.send_pong(b"by hand")
            await websocket.send_text("pinged")
        elif isinstance(event, events.Text):
            await websocket.close()

    run = run_async(acollect(websocket, on_event, auto_pong=False))
    assert run.first(events.Ping).data == b"hi"
    ws_server.last.wait_closed()
    assert ws_server.last.pongs == [b"by hand"]


def test_client_ping_gets_a_pong(peer: Peer) -> None:
    websocket = peer.make("/echo")

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            await websocket.send_ping(b"are you there")
        elif isinstance(event, events.Pong):
            await websocket.close()

    run = run_async(acollect(websocket, on_event))
    assert run.first(events.Pong).data == b"are you there"
    peer.server.last.wait_closed()
    assert peer.server.last.pings == [b"are you there"]


def test_ping_argument_errors(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    raised: List[Any] = []

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            for call in (
                lambda: websocket.send_ping(b"x" * 126),
                lambda: websocket.send_pong(b"x" * 126),
                lambda: websocket.send_ping("text"),  # type: ignore[arg-type]
            ):
                try:
                    await call()
                except Exception as error:
                    raised.append(type(error))
            await websocket.send_ping(b"x" * 125)  # the largest allowed
        elif isinstance(event, events.Pong):
            await websocket.close()

    run = run_async(acollect(websocket, on_event))
    assert raised[:2] == [FrameBuildError, FrameBuildError]
    assert raised[2] is TypeError
    assert run.first(events.Pong).data == b"x" * 125


def test_argument_errors_of_sends(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    raised: List[Any] = []

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            for call in (
                lambda: websocket.send_text(b"bytes"),  # type: ignore[arg-type]
                lambda: websocket.send_binary("text"),  # type: ignore[arg-type]
                lambda: websocket.send_json({"a": 1}, b=2),
                lambda: websocket.send_json(object()),
                lambda: websocket.close(999),
                lambda: websocket.close(1000, "x" * 200 + "\udc80"),
            ):
                try:
                    await call()
                except Exception as error:
                    raised.append(type(error))
            await websocket.close()

    run = run_async(acollect(websocket, on_event))
    assert raised[:4] == [TypeError, TypeError, ValueError, TypeError]
    assert len(raised) == 6 and all(issubclass(kind, (ValueError, TypeError)) for kind in raised)
    assert run.first(events.Disconnected).graceful
    ws_server.last.wait_closed()
    assert ws_server.last.received == []


# -- sends in every state ------------------------------------------------------------------

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

    async def main() -> None:
        await SENDS[kind](websocket)

    with pytest.raises(WebSocketUnavailable) as info:
        run_async(main())
    assert type(info.value) is WebSocketUnavailable


@pytest.mark.parametrize("kind", sorted(SENDS))
def test_send_in_every_state(ws_server: WSServer, kind: str) -> None:
    """Before Ready: Unavailable; after close(): Closing; after Disconnected: Closed."""
    websocket = WebSocket(ws_server.url_for("/echo"))
    send = SENDS[kind]
    outcomes: Dict[str, Any] = {}

    async def attempt(label: str) -> None:
        try:
            await send(websocket)
            outcomes[label] = None
        except Exception as error:
            outcomes[label] = type(error)

    async def on_event(event: events.Event) -> None:
        if event.name in ("connecting", "connected"):
            await attempt(event.name)
        elif event.name == "ready":
            await attempt("ready")
            await websocket.close()
            await attempt("after-close")
        elif event.name == "closed":
            await attempt("closed")
        elif event.name == "disconnected":
            await attempt("disconnected")

    async def main() -> None:
        await acollect(websocket, on_event)
        await attempt("after-loop")

    run_async(main())
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

    async def main() -> None:
        await websocket.close()
        websocket.force_disconnect()

    run_async(main())
    assert websocket.is_closed and not websocket.is_active and not websocket.is_closing


def test_state_properties(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    states: Dict[str, Any] = {}

    def state() -> Any:
        return (websocket.is_active, websocket.is_closing, websocket.is_closed)

    async def on_event(event: events.Event) -> None:
        if event.name == "ready":
            states["ready"] = state()
            await websocket.close()
            states["after-close"] = state()
        elif event.name == "disconnected":
            states["disconnected"] = state()

    states["before"] = state()
    run_async(acollect(websocket, on_event))
    states["after"] = state()
    assert states == {
        "before": (False, False, True),
        "ready": (True, False, False),
        "after-close": (False, True, False),
        "disconnected": (False, False, True),
        "after": (False, False, True),
    }
    assert websocket.sent_close_time is None  # between connections


def test_second_connect_while_connected_raises(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    raised: List[Any] = []

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            try:
                async for _ in websocket.connect():
                    pass
            except WebSocketUnavailable as error:
                raised.append(error)
            await websocket.close()

    run_async(acollect(websocket, on_event))
    assert len(raised) == 1 and "already connected" in str(raised[0])


def test_reconnect_with_the_same_object(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    async def main() -> List[List[events.Event]]:
        return [await aexchange(websocket) for _ in range(3)]

    runs = run_async(main())
    assert all(run[-1].graceful for run in runs)  # type: ignore[attr-defined]
    assert [rec.received for rec in ws_server.connections] == [["hello"]] * 3


def test_iterating_the_websocket_itself(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/close"))

    async def main() -> List[str]:
        return [event.name async for event in websocket]

    assert run_async(main()) == [
        "connecting", "connected", "ready", "poll", "closing", "disconnected"
    ]


def test_breaking_out_of_the_loop_sends_going_away(ws_server: WSServer) -> None:
    """Leaving ``async for`` (and closing the generator) says goodbye with 1001."""
    websocket = WebSocket(ws_server.url_for("/echo"))

    async def main() -> None:
        events_of = websocket.connect(**FAST)
        async for event in events_of:
            if isinstance(event, events.Ready):
                break
        await events_of.aclose()  # type: ignore[attr-defined]

    run_async(main())
    record = ws_server.last
    record.wait_closed()
    assert (record.close_code, record.close_reason) == (1001, "going away")
    assert websocket.is_closed and websocket.session is None


def test_an_exception_in_the_loop_body_sends_going_away(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    async def main() -> None:
        async for event in websocket.connect(**FAST):
            if isinstance(event, events.Ready):
                raise RuntimeError("application bug")

    with pytest.raises(RuntimeError, match="application bug"):
        run_async(main())
    record = ws_server.last
    record.wait_closed()
    assert (record.close_code, record.close_reason) == (1001, "going away")
    # The object is usable again.
    assert run_async(aexchange(websocket))[-1].graceful  # type: ignore[attr-defined]


def test_server_close_and_drop(ws_server: WSServer) -> None:
    run = run_async(acollect(WebSocket(ws_server.url_for("/close?code=4001&reason=later"))))
    closing = run.first(events.Closing)
    assert (closing.code, closing.reason) == (4001, "later")
    assert run.first(events.Disconnected).graceful
    run = run_async(acollect(WebSocket(ws_server.url_for("/drop"))))
    assert run.names[-2:] == ["poll", "disconnected"]
    assert run.first(events.Disconnected).graceful is False


def test_invalid_utf8_from_the_server_fails_with_1007(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_frame(TEXT, b"ok")
        conn.send_frame(TEXT, b"bad \xff")
        return conn.recv_close()

    server = scripted_server(script)
    run = run_async(acollect(WebSocket(server.url)))
    assert run.names[-3:] == ["text", "protocol_error", "disconnected"]
    assert run.first(events.ProtocolError).code == 1007
    assert server.result()[0] == 1007


# -- options: max_size, compression, subprotocols, headers, trace ------------------------


def test_message_over_max_size_fails_with_1009(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"), max_size=1000)

    async def on_ready(ws: WebSocket) -> None:
        await ws.send_text("x" * 999)
        await ws.send_text("y" * 1001)

    run = run_async(acollect(websocket, lambda e: on_ready(websocket) if e.name == "ready"
                             else None))
    assert [e.text for e in run.of(events.Text)] == ["x" * 999]
    error = run.first(events.ProtocolError)
    assert error.code == 1009
    assert run.names[-2:] == ["protocol_error", "disconnected"]
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1009


def test_compression_with_the_websockets_server(ws_server: WSServer) -> None:
    records: List[Dict[str, Any]] = []
    websocket = WebSocket(ws_server.url_for("/echo"), compress=True, trace=records.append)
    text = "compress me " * 2000

    async def on_ready(ws: WebSocket) -> None:
        assert ws.supports_compression
        await ws.send_text(text)
        await ws.send_binary(text.encode(), compress=False)

    seen = run_async(aexchange(websocket, on_ready, messages=2))
    ready = next(e for e in seen if isinstance(e, events.Ready))
    assert "permessage-deflate" in ready.extensions
    assert next(e for e in seen if isinstance(e, events.Text)).text == text
    assert next(e for e in seen if isinstance(e, events.Binary)).data == text.encode()
    record = ws_server.last
    record.wait_closed()
    assert record.extensions is not None and "permessage-deflate" in record.extensions
    # Each message's frame is written (socket_send) just before its send_* record:
    # the text went out deflated, the binary (compress=False) as it is.
    sizes = {
        records[index]["stage"]: records[index - 1]["bytes"]
        for index in range(1, len(records))
        if records[index]["stage"] in ("send_text", "send_binary")
        and records[index - 1]["stage"] == "socket_send"
    }
    assert sizes["send_text"] < 1000 < len(text) < sizes["send_binary"]
    assert websocket.supports_compression


def test_compression_refused_by_the_server(ws_server_factory: Any) -> None:
    server = ws_server_factory(compression=None)
    websocket = WebSocket(server.url_for("/echo"), compress=True)
    seen = run_async(aexchange(websocket))
    assert next(e for e in seen if isinstance(e, events.Ready)).extensions == set()
    assert not websocket.supports_compression


def test_compression_with_no_context_takeover(ws_server_factory: Any) -> None:
    server = ws_server_factory(extensions=[deflate(server_no_context_takeover=True,
                                                   client_no_context_takeover=True)])
    websocket = WebSocket(server.url_for("/echo"), compress=True)
    texts = [f"message {n} " * 100 for n in range(5)]

    async def on_ready(ws: WebSocket) -> None:
        for text in texts:
            await ws.send_text(text)

    seen = run_async(aexchange(websocket, on_ready, messages=5))
    assert [e.text for e in seen if isinstance(e, events.Text)] == texts


def test_subprotocol_negotiated(ws_server_factory: Any) -> None:
    server = ws_server_factory(subprotocols=["chat.v2", "chat.v1"])
    websocket = WebSocket(server.url_for("/echo"), protocols=["chat.v1", "chat.v2"])
    seen = run_async(aexchange(websocket))
    assert next(e for e in seen if isinstance(e, events.Ready)).protocol in ("chat.v1", "chat.v2")
    record = server.last
    assert record.request_headers["Sec-WebSocket-Protocol"] == "chat.v1, chat.v2"
    assert record.subprotocol == next(e for e in seen if isinstance(e, events.Ready)).protocol


def test_request_headers_seen_by_the_server(ws_server: WSServer) -> None:
    websocket = WebSocket(
        ws_server.url_for("/headers"),
        headers={"Origin": "https://example.org", "X-Token": "abc"},
        agent="test-agent/1",
    )
    websocket.add_header("X-Extra", "1")
    seen = run_async(aexchange(websocket, None))
    sent = json.loads(next(e for e in seen if isinstance(e, events.Text)).text)
    assert sent["Origin"] == "https://example.org"
    assert sent["X-Token"] == "abc"
    assert sent["X-Extra"] == "1"
    assert sent["User-Agent"] == "test-agent/1"


def test_credentials_in_the_url(ws_server: WSServer) -> None:
    url = ws_server.url_for("/echo").replace("ws://", "ws://user:pa55@")
    seen = run_async(aexchange(WebSocket(url)))
    assert seen[-1].name == "disconnected"
    assert ws_server.last.request_headers["Authorization"].startswith("Basic ")
    assert all("pa55" not in repr(event) for event in seen)


def stages(records: List[Dict[str, Any]]) -> List[str]:
    return [record["stage"] for record in records]


def test_trace_records_match_the_threaded_driver(wss_server: WSServer, tls: TLSBundle) -> None:
    url = wss_server.url_for("/echo")
    threaded: List[Dict[str, Any]] = []
    in_asyncio: List[Dict[str, Any]] = []
    sync_socket = lomond.WebSocket(url, ssl_context=tls.client_context(), trace=threaded.append)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            sync_socket.send_text("payload")
        elif isinstance(event, events.Text):
            sync_socket.close(1000, "bye")

    collect(sync_socket, on_event, poll=0)
    aio_socket = WebSocket(url, ssl_context=tls.client_context(), trace=in_asyncio.append)

    async def on_ready(ws: WebSocket) -> None:
        await ws.send_text("payload")

    async def on_text(ws: WebSocket) -> None:
        await ws.close(1000, "bye")

    async def on_aio_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            await on_ready(aio_socket)
        elif isinstance(event, events.Text):
            await on_text(aio_socket)

    run_async(acollect(aio_socket, on_aio_event, poll=0))

    def essential(records: List[Dict[str, Any]]) -> List[str]:
        # socket_send/socket_recv depend on how the bytes were split.
        return [s for s in stages(records) if s not in ("socket_send", "socket_recv")]

    assert essential(in_asyncio) == essential(threaded)
    assert essential(in_asyncio)[:4] == [
        "connect_start", "tcp_connected", "tls_wrapped", "upgrade_sent"
    ]
    for record in in_asyncio:
        assert {"stage", "url", "time", "elapsed"} <= set(record)
        assert record["url"] == url
        assert "payload" not in repr(record)
    wrapped = next(r for r in in_asyncio if r["stage"] == "tls_wrapped")
    assert wrapped["version"].startswith("TLS") and wrapped["cipher"]
    assert next(r for r in in_asyncio if r["stage"] == "tcp_connected")["address"] == (
        f"127.0.0.1:{wss_server.port}"
    )


def test_a_failing_trace_callable_does_not_break_the_connection(ws_server: WSServer) -> None:
    def broken(record: Dict[str, Any]) -> None:
        raise RuntimeError("tracer bug")

    seen = run_async(aexchange(WebSocket(ws_server.url_for("/echo"), trace=broken)))
    assert [e.text for e in seen if isinstance(e, events.Text)] == ["hello"]


def test_on_response_and_on_disconnect_hooks(ws_server: WSServer) -> None:
    calls: List[Any] = []

    class Hooked(WebSocket):
        def on_response(self, response: Any) -> None:
            calls.append(("response", response.status_code))

        def process_extensions(self, extensions: Any) -> None:
            calls.append(("extensions", sorted(extensions)))

        def on_disconnect(self) -> None:
            calls.append(("disconnect",))

    run_async(aexchange(Hooked(ws_server.url_for("/echo"), compress=True)))
    assert calls == [
        ("response", 101), ("extensions", ["permessage-deflate"]), ("disconnect",)
    ]


def test_ipv6_loopback(ws_server_factory: Any) -> None:
    try:
        server = ws_server_factory(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    seen = run_async(aexchange(WebSocket(server.url_for("/echo"))))
    assert [e.text for e in seen if isinstance(e, events.Text)] == ["hello"]


def test_construction_checks_like_the_threaded_websocket() -> None:
    assert WebSocket("https://example.org/").url.url == "wss://example.org/"  # as browsers do
    with pytest.raises(ValueError):
        WebSocket("ftp://example.org/")
    with pytest.raises(ValueError):
        WebSocket("ws://example.org/", max_size=0)
    with pytest.raises(ValueError):
        WebSocket("ws://example.org/", headers={"X": "a\r\nb"})
    websocket = WebSocket("ws://example.org/")
    with pytest.raises(TypeError):
        websocket.connect(poll="often")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        websocket.connect(close_timeout=-1)
    with pytest.raises(TypeError):
        websocket.connect(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        websocket.connect(stop=object())  # type: ignore[arg-type]
    assert repr(websocket) == "<WebSocket 'ws://example.org/' disconnected>"


# -- resources ----------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_connect_close_cycles_leak_no_descriptor_nor_resource_warning(
    ws_server: WSServer, tls: TLSBundle, wss_server: WSServer, loop_factory: LoopFactory
) -> None:
    """Each cycle: a new loop, a ws:// and a wss:// connection, a refused port, and a
    connection left by breaking out of the loop; nothing is left open afterwards."""
    refused = refused_port()

    async def cycle() -> None:
        await aexchange(WebSocket(ws_server.url_for("/echo")))
        await aexchange(WebSocket(wss_server.url_for("/echo"), ssl_context=tls.client_context()))
        await acollect(WebSocket(f"ws://127.0.0.1:{refused}/"))
        events_of = WebSocket(ws_server.url_for("/echo")).connect(**FAST)
        async for event in events_of:
            if isinstance(event, events.Ready):
                break
        await events_of.aclose()  # type: ignore[attr-defined]

    enabled = gc.isenabled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run_async(cycle(), loop_factory=loop_factory)  # warm-up
        before = open_descriptors()
        gc.disable()  # descriptors must be released by the end, not by the collector
        try:
            for _ in range(5):
                run_async(cycle(), loop_factory=loop_factory)
        finally:
            if enabled:
                gc.enable()
        try:  # the servers' ends close a moment after ours
            wait_for(lambda: open_descriptors() <= before, 5)
        except AssertionError:
            pass
        grown = open_descriptors() - before
        gc.collect()
    assert grown <= 0, f"5 cycles hold {grown} more descriptors"
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]


def test_a_given_socket_serves_one_connection(ws_server: WSServer) -> None:
    """``sock=``: a pre-connected socket instead of connecting; used once."""
    sock = socket.create_connection(("127.0.0.1", ws_server.port))
    websocket = WebSocket(ws_server.url_for("/echo"), sock=sock)
    records: List[Dict[str, Any]] = []
    websocket.trace = records.append
    seen = run_async(aexchange(websocket))
    assert [e.text for e in seen if isinstance(e, events.Text)] == ["hello"]
    assert sock.fileno() == -1  # closed with the connection
    assert "tcp_connected" in stages(records)
    local = next(e for e in seen if isinstance(e, events.Connected))
    assert local.proxy is None
    # The next connection connects by itself.
    assert run_async(aexchange(websocket))[-1].graceful  # type: ignore[attr-defined]
    assert len(ws_server.connections) == 2


def test_a_given_tls_socket_is_refused(ws_server: WSServer, tls: TLSBundle) -> None:
    """The asyncio driver does TLS itself: an ``ssl.SSLSocket`` is a ConnectFail."""
    import ssl

    raw = socket.create_connection(("127.0.0.1", ws_server.port))
    tls_sock = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(
        raw, server_hostname="localhost", do_handshake_on_connect=False
    )
    run = run_async(acollect(WebSocket("wss://localhost/", sock=tls_sock)))
    assert run.names == ["connecting", "connect_fail"]
    assert "pass the plain connected socket" in run.first(events.ConnectFail).reason
    tls_sock.close()


def test_a_given_socket_over_tls(wss_server: WSServer, tls: TLSBundle) -> None:
    sock = socket.create_connection(("127.0.0.1", wss_server.port))
    websocket = WebSocket(wss_server.url_for("/echo"), sock=sock,
                          ssl_context=tls.client_context())
    seen = run_async(aexchange(websocket))
    assert [e.text for e in seen if isinstance(e, events.Text)] == ["hello"]


def test_a_given_socketpair(scripted_server: Any) -> None:
    """Any connected stream socket will do (no TCP_NODELAY there)."""
    import threading

    from peers.raw_server import RawConnection as Raw

    ours, theirs = socket.socketpair()
    result: List[Optional[tuple]] = []

    def serve() -> None:
        conn = Raw(theirs, None)
        conn.handshake()
        conn.send_text("over a pair")
        result.append(conn.recv_close())
        conn.send_close(1000)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    seen = run_async(aexchange(WebSocket("ws://pair.invalid/", sock=ours), None))
    thread.join(5)
    assert [e.text for e in seen if isinstance(e, events.Text)] == ["over a pair"]
    assert result == [(1000, "goodbye")]
