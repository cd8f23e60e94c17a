"""lomond.testing.LocalServer, driven by lomond, the websockets client and raw sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any, List, Optional, Tuple

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from lomond import PerMessageDeflate, WebSocket, events
from lomond.compression import negotiate
from lomond.frame import Frame, Opcode, build_frame
from lomond.protocol import decode_close, encode_close
from lomond.reader import read_frames
from lomond.testing import LocalServer, ServerConnection

TIMEOUT = 3.0


def ws_connect(url: str, **kwargs: Any) -> Any:
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("max_size", None)
    return connect(url, **kwargs)


def server_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("LocalServer")]


@pytest.fixture
def server() -> Any:
    with LocalServer() as local:
        yield local
    assert server_threads() == []


def lomond_session(
    url: str, on_ready: Any, until: Any, compress: Any = False, **connect_kwargs: Any
) -> List[Any]:
    """Run a lomond connection: ``on_ready(ws)`` once, ``until(event)`` -> True closes."""
    websocket = WebSocket(url, proxies={}, compress=compress)
    seen = []
    connect_kwargs.setdefault("ping_rate", 0)
    connect_kwargs.setdefault("close_timeout", TIMEOUT)
    for event in websocket.connect(**connect_kwargs):
        seen.append(event)
        if isinstance(event, events.Ready):
            on_ready(websocket)
        elif until(event) and websocket.is_active:
            websocket.close()
    return seen


def messages(seen: List[Any]) -> List[Any]:
    return [
        e.text if isinstance(e, events.Text) else e.data
        for e in seen
        if isinstance(e, (events.Text, events.Binary))
    ]


# -- handshake -------------------------------------------------------------------


def raw_request(port: int, request: bytes) -> Tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return sock, data


def upgrade_request(key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==", version: bytes = b"13") -> bytes:
    return (
        b"GET /chat?room=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: " + version + b"\r\nX-Extra: 1\r\n\r\n"
    )


def test_accept_key_is_the_rfc_example(server: LocalServer) -> None:
    # RFC 6455 section 1.3: this key must be answered with this accept value.
    sock, response = raw_request(server.port, upgrade_request())
    with sock:
        head = response.decode("latin-1")
        assert head.startswith("HTTP/1.1 101 ")
        assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
        assert "Sec-WebSocket-Extensions" not in head


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # plain HTTP
        (b"POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400),
        (upgrade_request(key=b"short"), 400),
        (upgrade_request(key=b""), 400),
        (upgrade_request(version=b"8"), 426),
    ],
    ids=["plain-http", "post", "bad-key", "no-key", "version-8"],
)
def test_non_websocket_requests_are_refused(
    server: LocalServer, request_bytes: bytes, status: int
) -> None:
    sock, response = raw_request(server.port, request_bytes)
    with sock:
        assert response.startswith(f"HTTP/1.1 {status} ".encode())
        if status == 426:
            assert b"Sec-WebSocket-Version: 13\r\n" in response
        # Then the server closes the connection.
        sock.settimeout(TIMEOUT)
        rest = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk


def test_handler_sees_path_and_headers() -> None:
    seen: List[Tuple[str, str, str]] = []

    def handler(connection: ServerConnection) -> None:
        seen.append(
            (connection.path, connection.headers["x-extra"], connection.headers["connection"])
        )

    with LocalServer(handler) as local:
        sock, response = raw_request(local.port, upgrade_request())
        sock.close()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert seen == [("/chat?room=1", "1", "keep-alive, Upgrade")]


def test_url_and_port() -> None:
    local = LocalServer()
    with local:
        assert local.port > 0
        assert local.url == f"ws://127.0.0.1:{local.port}/"


# -- against lomond's client ----------------------------------------------------------


def test_lomond_echo_text_binary_and_ping(server: LocalServer) -> None:
    big = os.urandom(200_000)

    def on_ready(ws: WebSocket) -> None:
        ws.send_text("héllo ☃")
        ws.send_binary(b"\x00\xff")
        ws.send_binary(big)
        ws.send_text("")
        ws.send_ping(b"ping!")

    seen = lomond_session(server.url, on_ready, lambda e: isinstance(e, events.Pong))
    assert messages(seen) == ["héllo ☃", b"\x00\xff", big, ""]
    assert [e.data for e in seen if isinstance(e, events.Pong)] == [b"ping!"]
    closed = [e for e in seen if isinstance(e, events.Closed)]
    assert closed and closed[0].code == 1000
    assert isinstance(seen[-1], events.Disconnected) and seen[-1].graceful


def test_lomond_close_code_reaches_the_handler() -> None:
    codes: List[Tuple[Optional[int], str, Any]] = []

    def handler(connection: ServerConnection) -> None:
        result = connection.recv()
        codes.append((connection.close_code, connection.close_reason, result))

    with LocalServer(handler) as local:
        websocket = WebSocket(local.url, proxies={})
        seen = []
        for event in websocket.connect(ping_rate=0, close_timeout=TIMEOUT):
            seen.append(event)
            if isinstance(event, events.Ready):
                websocket.close(4000, "see you")
    assert codes == [(4000, "see you", None)]
    assert [(e.code, e.reason) for e in seen if isinstance(e, events.Closed)] == [(4000, "")]
    assert seen[-1].graceful


def test_server_side_close_and_handler_return() -> None:
    def handler(connection: ServerConnection) -> None:
        message = connection.recv()
        connection.send(f"got {message}")
        connection.close(4001, "bye now")
        with pytest.raises(ConnectionError):
            connection.send("too late")

    with LocalServer(handler) as local:
        seen = lomond_session(local.url, lambda ws: ws.send_text("x"), lambda e: False)
    assert messages(seen) == ["got x"]
    closing = [e for e in seen if isinstance(e, events.Closing)]
    assert [(e.code, e.reason) for e in closing] == [(4001, "bye now")]
    assert seen[-1].graceful


def test_handler_returning_closes_gracefully_with_1000() -> None:
    with LocalServer(lambda connection: connection.send("hi")) as local:
        seen = lomond_session(local.url, lambda ws: None, lambda e: False)
    assert messages(seen) == ["hi"]
    assert [e.code for e in seen if isinstance(e, events.Closing)] == [1000]
    assert seen[-1].graceful


def test_handler_exception_closes_with_1011() -> None:
    def handler(connection: ServerConnection) -> None:
        connection.recv()
        raise RuntimeError("handler bug")

    with LocalServer(handler) as local:
        seen = lomond_session(local.url, lambda ws: ws.send_text("boom"), lambda e: False)
    assert [e.code for e in seen if isinstance(e, events.Closing)] == [1011]


def test_recv_timeout_keeps_the_connection_usable() -> None:
    results: List[Any] = []

    def handler(connection: ServerConnection) -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connection.recv(timeout=0.2)
        results.append(time.monotonic() - started)
        connection.send("timed out")
        connection.send(f"then {connection.recv(timeout=TIMEOUT)}")

    with LocalServer(handler) as local:
        websocket = WebSocket(local.url, proxies={})
        seen = []
        for event in websocket.connect(ping_rate=0, close_timeout=TIMEOUT):
            seen.append(event)
            if isinstance(event, events.Text):
                if event.text == "timed out":  # only now: the later recv() must get it
                    websocket.send_text("x")
                else:
                    websocket.close()
    assert messages(seen) == ["timed out", "then x"]
    assert 0.15 <= results[0] < 2.0


def test_recv_after_timeout_with_websockets_client() -> None:
    got: List[Any] = []
    ready = threading.Event()

    def handler(connection: ServerConnection) -> None:
        with pytest.raises(TimeoutError):
            connection.recv(timeout=0.1)
        ready.set()
        got.append(connection.recv(timeout=TIMEOUT))

    with LocalServer(handler) as local, ws_connect(local.url) as client:
        assert ready.wait(TIMEOUT)
        client.send("later")
        client.close()
    assert got == ["later"]


# -- against the websockets client -------------------------------------------------------


def test_websockets_client_echo_and_fragments(server: LocalServer) -> None:
    with ws_connect(server.url) as client:
        client.send("plain")
        assert client.recv(timeout=TIMEOUT) == "plain"
        client.send(["frag", "ment", "ed ☃"])  # one message in three frames
        assert client.recv(timeout=TIMEOUT) == "fragmented ☃"
        client.send([b"\x01", b"\x02", b"\x03"])
        assert client.recv(timeout=TIMEOUT) == b"\x01\x02\x03"
        assert client.ping(b"abc").wait(TIMEOUT)
        client.send(b"x" * 70_000)
        assert client.recv(timeout=TIMEOUT) == b"x" * 70_000


def test_websockets_client_close_code() -> None:
    codes: List[Optional[int]] = []

    def handler(connection: ServerConnection) -> None:
        while connection.recv() is not None:
            pass
        codes.append(connection.close_code)

    with LocalServer(handler) as local:
        with ws_connect(local.url) as client:
            client.close(4002, "done")
            assert client.close_code == 4002  # the server echoed it
    assert codes == [4002]


def test_broadcast_reaches_every_client(server: LocalServer) -> None:
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(ws_connect(server.url)) for _ in range(3)]
        deadline = time.monotonic() + TIMEOUT
        while len(server.connections) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.broadcast("news")
        server.broadcast(b"\x00bin")
        for client in clients:
            assert client.recv(timeout=TIMEOUT) == "news"
            assert client.recv(timeout=TIMEOUT) == b"\x00bin"


def test_stop_closes_clients_with_1001_and_leaves_no_thread() -> None:
    local = LocalServer().start()
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(ws_connect(local.url)) for _ in range(2)]
        clients[0].send("hi")
        assert clients[0].recv(timeout=TIMEOUT) == "hi"
        assert len(server_threads()) == 3  # the accept loop and two connections
        started = time.monotonic()
        local.stop()
        assert time.monotonic() - started < 1.5
        assert server_threads() == []
        for client in clients:
            with pytest.raises(ConnectionClosed):
                client.recv(timeout=TIMEOUT)
            assert client.close_code == 1001
    # The port is free again.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", local.port), timeout=TIMEOUT)


def test_stop_drops_a_client_that_never_answers() -> None:
    local = LocalServer().start()
    sock, response = raw_request(local.port, upgrade_request())
    assert response.startswith(b"HTTP/1.1 101 ")
    half_open = socket.create_connection(("127.0.0.1", local.port), timeout=TIMEOUT)
    started = time.monotonic()
    local.stop(timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert server_threads() == []
    sock.close()
    half_open.close()


# -- protocol checks (raw client frames) ----------------------------------------------------


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    return build_frame(opcode, payload, fin=fin, mask=mask)


def read_server_frames(sock: socket.socket) -> List[Tuple[int, bytes]]:
    """Every frame until the server closes the TCP connection (checked as a client would)."""
    reader = read_frames()
    frames: List[Frame] = []
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got, error = reader.send(chunk)
        assert error is None, error
        frames.extend(got)
    return [(frame.opcode, bytes(frame.payload)) for frame in frames]


@pytest.mark.parametrize(
    "frames, code",
    [
        ([client_frame(0x1, b"hi", mask=False)], 1002),  # unmasked
        ([client_frame(0x1, b"\xff\xfe")], 1007),  # invalid UTF-8
        ([client_frame(0x0, b"x")], 1002),  # continuation of nothing
        ([client_frame(0x1, b"a", fin=False), client_frame(0x1, b"b")], 1002),
        ([client_frame(0x3, b"")], 1002),  # reserved opcode
        ([client_frame(0x9, b"p", fin=False)], 1002),  # fragmented control frame
        # encode_close refuses 1005 (it may not be sent): packed by hand.
        ([client_frame(0x8, b"\x03\xed")], 1002),  # reserved close code 1005
    ],
    ids=["unmasked", "utf8", "orphan-continuation", "interleaved", "opcode-3", "ping-fin",
         "close-1005"],
)
def test_protocol_violations_close_the_connection(frames: List[bytes], code: int) -> None:
    with LocalServer() as local:
        sock, response = raw_request(local.port, upgrade_request())
        with sock:
            assert response.startswith(b"HTTP/1.1 101 ")
            sock.sendall(b"".join(frames))
            received = read_server_frames(sock)
    assert received[-1][0] == 0x8
    assert decode_close(received[-1][1])[0] == code


def test_ping_is_answered_and_client_close_echoed() -> None:
    with LocalServer() as local:
        sock, response = raw_request(local.port, upgrade_request())
        with sock:
            assert response.startswith(b"HTTP/1.1 101 ")
            sock.sendall(
                client_frame(0x9, b"are you there")
                + client_frame(0x1, b"frag", fin=False)
                + client_frame(0x9, b"mid")  # control frames may interleave fragments
                + client_frame(0x0, b"ment")
                + client_frame(0x8, b"")  # a Close with no code
            )
            received = read_server_frames(sock)
    assert received == [(0xA, b"are you there"), (0xA, b"mid"), (0x1, b"fragment"), (0x8, b"")]


def test_answers_keep_the_order_of_what_they_answer() -> None:
    """One burst: each echo, Pong and the Close echo go out in the order of what they answer.

    The protocol queues the Pong and the Close echo at once; the server holds
    each back until the handler has taken the messages before it.
    """
    with LocalServer() as local:
        sock, response = raw_request(local.port, upgrade_request())
        with sock:
            assert response.startswith(b"HTTP/1.1 101 ")
            sock.sendall(
                client_frame(0x1, b"first")
                + client_frame(0x9, b"ping")
                + client_frame(0x2, b"second")
                + client_frame(0x8, encode_close(1000, "bye"))
            )
            received = read_server_frames(sock)
    assert received == [(0x1, b"first"), (0xA, b"ping"), (0x2, b"second"),
                        (0x8, encode_close(1000))]


def test_frames_sent_with_the_request_are_read_after_the_answer() -> None:
    with LocalServer() as local:
        sock = socket.create_connection(("127.0.0.1", local.port), timeout=TIMEOUT)
        with sock:
            # A client should wait for the 101 (RFC 6455 section 4.1); one
            # that does not is still served.
            sock.sendall(upgrade_request() + client_frame(0x1, b"eager")
                         + client_frame(0x8, encode_close(1000)))
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    got, error = read_frames().send(frames)
    assert error is None
    assert [(f.opcode, bytes(f.payload)) for f in got] == [
        (0x1, b"eager"), (0x8, encode_close(1000))]


def test_abort_drops_without_a_close_frame() -> None:
    def handler(connection: ServerConnection) -> None:
        connection.send("last words")
        connection.abort()
        with pytest.raises(ConnectionError):
            connection.send("after abort")

    with LocalServer(handler) as local:
        seen = lomond_session(local.url, lambda ws: None, lambda e: False)
    assert messages(seen) == ["last words"]
    assert not any(isinstance(e, (events.Closing, events.Closed)) for e in seen)
    assert isinstance(seen[-1], events.Disconnected) and not seen[-1].graceful


# -- permessage-deflate -------------------------------------------------------------


def test_lomond_client_with_compression(server: LocalServer) -> None:
    words = "compress me, compress me " * 4000
    noise = os.urandom(100_000)

    def on_ready(ws: WebSocket) -> None:
        for message in (words, noise, words, b"", "x"):
            if isinstance(message, str):
                ws.send_text(message)
            else:
                ws.send_binary(message)

    seen = lomond_session(
        server.url, on_ready, lambda e: isinstance(e, events.Text) and e.text == "x",
        compress=True,
    )
    ready = [e for e in seen if isinstance(e, events.Ready)]
    assert ready and ready[0].extensions == frozenset(["permessage-deflate"])
    assert messages(seen) == [words, noise, words, b"", "x"]


def test_lomond_client_with_constrained_compression_parameters(server: LocalServer) -> None:
    offer = PerMessageDeflate(
        client_no_context_takeover=True, server_no_context_takeover=True,
        client_max_window_bits=10, server_max_window_bits=9,
    )
    texts = ["abcabcabc " * 500, "abcabcabc " * 500, "end"]

    def on_ready(ws: WebSocket) -> None:
        for text in texts:
            ws.send_text(text)

    seen = lomond_session(
        server.url, on_ready, lambda e: isinstance(e, events.Text) and e.text == "end",
        compress=offer,
    )
    assert next(e for e in seen if isinstance(e, events.Ready)).extensions
    assert messages(seen) == texts


def test_compression_can_be_declined() -> None:
    with LocalServer(compress=False) as local:
        seen = lomond_session(
            local.url, lambda ws: ws.send_text("plain"), lambda e: isinstance(e, events.Text),
            compress=True,
        )
    assert next(e for e in seen if isinstance(e, events.Ready)).extensions == frozenset()
    assert messages(seen) == ["plain"]


def test_websockets_client_with_compression(server: LocalServer) -> None:
    with ws_connect(server.url, compression="deflate") as ws:
        for message in ["zip " * 1000, b"\x00" * 70_000, "short"]:
            ws.send(message)
            assert ws.recv() == message
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")


def test_echo_is_compressed_on_the_wire() -> None:
    """The server really compresses what it sends (RSV1 set, smaller than the message)."""
    offer = PerMessageDeflate()
    request = upgrade_request().replace(
        b"X-Extra: 1\r\n", f"Sec-WebSocket-Extensions: {offer.header_value()}\r\n".encode()
    )
    message = b"squeeze " * 1000
    with LocalServer() as local:
        sock, response = raw_request(local.port, request)
        with sock:
            head, _, rest = response.partition(b"\r\n\r\n")
            assert rest == b""
            answer = [line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"sec-websocket-extensions:")]
            deflate = negotiate([offer], answer, None)
            assert deflate is not None
            sent = deflate.encode(Frame(Opcode.BINARY, message))
            assert sent.rsv1
            sock.sendall(build_frame(Opcode.BINARY, sent.payload, rsv1=True)
                         + client_frame(0x8, encode_close(1000)))
            reader = read_frames(allow_rsv1=True)
            frames: List[Frame] = []
            while not any(f.opcode == Opcode.CLOSE for f in frames):
                chunk = sock.recv(65536)
                assert chunk
                got, error = reader.send(chunk)
                assert error is None
                frames.extend(got)
    echoed = frames[0]
    assert echoed.rsv1 and len(echoed.payload) < len(message) // 10
    assert deflate.decode(echoed).payload == message
