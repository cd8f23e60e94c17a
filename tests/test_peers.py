"""Self-tests of the test peers (tests/peers), independent of lomond.

Each peer is driven by a client known to be right (the ``websockets``
package) or by raw sockets, so that a lomond integration test failing
against these peers points at lomond, not at the harness.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import threading
import time
from typing import Any, List, Optional, Tuple

import pytest
from core_helpers import raw_upgrade_request
from peers.proxy import PROXY_PASSWORD, PROXY_USER, ProxyServer
from peers.raw_server import (
    BINARY,
    CLOSE,
    PING,
    TEXT,
    ClientFrame,
    PeerClosed,
    ProtocolViolation,
    RawConnection,
    ScriptedServer,
    accept_key,
    build_frame,
)
from peers.tls import TLSBundle
from peers.ws_server import WSServer, deflate
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidProxyStatus,
    InvalidStatus,
)
from websockets.sync.client import ClientConnection, connect

from lomond.protocol import encode_close
from lomond.reader import FrameReader, read_frames

TIMEOUT = 3.0


def ws_connect(url: str, **kwargs: Any) -> ClientConnection:
    """websockets' client with test defaults: no env proxy, short timeouts, no size cap."""
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("max_size", None)
    kwargs.setdefault("ping_interval", None)
    return connect(url, **kwargs)


# ---------------------------------------------------------------------------
# WSServer
# ---------------------------------------------------------------------------


def test_echo_keeps_message_types_and_records_before_replying(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/echo")) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=TIMEOUT) == "héllo"
        # Recorded before the reply was sent, so it is visible right now.
        assert ws_server.last.received == ["héllo"]
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\xff"
        local = ws.socket.getsockname()
    record = ws_server.wait_for_connection()
    record.wait_closed()
    assert record.path == "/echo"
    assert record.status == 101 and record.accepted
    assert record.received == ["héllo", b"\x00\xff"]
    assert record.remote_address[:2] == local[:2]
    assert (record.close_code, record.close_reason) == (1000, "")
    assert [f.opcode for f in record.frames] == [TEXT, BINARY, CLOSE]


def test_root_path_echoes_and_unknown_path_is_404(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url + "/") as ws:
        ws.send("x")
        assert ws.recv(timeout=TIMEOUT) == "x"
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_server.url_for("/no-such-behaviour"))
    assert info.value.response.status_code == 404
    assert ws_server.last.status == 404


def test_headers_behaviour_reports_request_headers(ws_server: WSServer) -> None:
    with ws_connect(
        ws_server.url_for("/headers?x=1"), additional_headers={"X-Lomond-Test": "yes"}
    ) as ws:
        headers = json.loads(ws.recv(timeout=TIMEOUT))
        ws.send("then echo")
        assert ws.recv(timeout=TIMEOUT) == "then echo"
    assert headers["X-Lomond-Test"] == "yes"
    assert headers["Upgrade"] == "websocket"
    record = ws_server.last
    assert record.path == "/headers?x=1" and record.query == {"x": "1"}
    # Case-insensitive lookups on the recorded headers.
    assert record.request_headers.get("x-lomond-test") == "yes"
    key = record.request_headers["sec-websocket-key"]
    assert record.response_headers is not None
    assert record.response_headers["Sec-WebSocket-Accept"] == accept_key(key)


def test_server_close_with_code_and_reason(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/close?code=4000&reason=bye")) as ws:
        # websockets calls any code but 1000/1001 an error closure.
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=TIMEOUT)
        assert (ws.close_code, ws.close_reason) == (4000, "bye")
    record = ws_server.last
    record.wait_closed()
    assert (record.close_sent_code, record.close_sent_reason) == (4000, "bye")
    # websockets echoes the code back, as RFC 6455 §5.5.1 suggests.
    assert record.close_code == 4000


def test_client_close_code_is_recorded(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/record")) as ws:
        ws.close(4321, "done here")
    record = ws_server.last
    record.wait_closed()
    assert (record.close_code, record.close_reason) == (4321, "done here")


def test_close_after_n_messages(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/close-after?n=2&code=1001&reason=later")) as ws:
        for text in ("a", "b"):
            ws.send(text)
            assert ws.recv(timeout=TIMEOUT) == text
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=TIMEOUT)
        assert (ws.close_code, ws.close_reason) == (1001, "later")
    assert ws_server.last.received == ["a", "b"]


def test_ping_behaviour_and_pong_recording(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/ping?data=hello")) as ws:
        # websockets answers the ping by itself; the server records the pong.
        pong = ws_server.wait_for_connection().wait_frame(0xA)
        assert pong.data == b"hello"
        ws.send("still echoing")
        assert ws.recv(timeout=TIMEOUT) == "still echoing"
        ws.ping(b"from client")
        ws_server.last.wait_frame(PING)
    assert ws_server.last.pings == [b"from client"]
    assert ws_server.last.pongs[0] == b"hello"


def test_stream_sends_numbered_messages_in_order(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/stream?count=2000")) as ws:
        got = [ws.recv(timeout=TIMEOUT) for _ in range(2000)]
        assert got == [str(n) for n in range(2000)]
        ws.send("echo after stream")
        assert ws.recv(timeout=TIMEOUT) == "echo after stream"
    with ws_connect(ws_server.url_for("/stream?count=3&size=4")) as ws:
        assert [ws.recv(timeout=TIMEOUT) for _ in range(3)] == ["0000", "0001", "0002"]


def test_fragmented_message(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/fragmented?parts=ab,cd,ef")) as ws:
        assert ws.recv(timeout=TIMEOUT) == "abcdef"
    with ws_connect(ws_server.url_for("/fragmented?parts=x,y&binary=1")) as ws:
        assert ws.recv(timeout=TIMEOUT) == b"xy"


def test_record_never_replies(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/record")) as ws:
        ws.send("one")
        ws.send(b"two")
        assert ws_server.last.wait_received(2) == ["one", b"two"]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)


def test_reject_with_status_and_retry_after(ws_server: WSServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_server.url_for("/reject?status=503&retry_after=7"))
    response = info.value.response
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert b"503" in response.body
    record = ws_server.wait_for_connection()
    assert record.status == 503 and not record.accepted
    record.wait_closed()


def test_reject_extra_headers_and_redirect_location(ws_server: WSServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(
            ws_server.url_for("/reject?status=401&header=WWW-Authenticate:Basic%20realm%3Dx")
        )
    assert info.value.response.headers["WWW-Authenticate"] == "Basic realm=x"
    # websockets follows redirects, so read the 302 with a raw request.
    with socket.create_connection(("127.0.0.1", ws_server.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            raw_upgrade_request("127.0.0.1", "/reject?status=302&location=ws://127.0.0.1:1/elsewhere")
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 302")
    assert b"\r\nLocation: ws://127.0.0.1:1/elsewhere\r\n" in reply


def test_drop_aborts_without_close_frame(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/drop")) as ws:
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=TIMEOUT)
        assert ws.protocol.close_rcvd is None


def test_slow_handshake_times_out_the_client(ws_server: WSServer) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        ws_connect(ws_server.url_for("/slow-handshake?delay=2"), open_timeout=0.3)
    assert time.monotonic() - started < 1.5


def test_large_message_round_trip(ws_server: WSServer) -> None:
    payload = os.urandom(16 * 1024 * 1024 + 1)
    with ws_connect(ws_server.url_for("/echo"), compression=None) as ws:
        ws.send(payload)
        assert ws.recv(timeout=30) == payload


def test_restart_same_port_drops_connections(ws_server: WSServer) -> None:
    port = ws_server.port
    with ws_connect(ws_server.url_for("/echo")) as ws:
        ws_server.restart()
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 1001
    assert ws_server.port == port
    with ws_connect(ws_server.url_for("/echo")) as again:
        again.send("back")
        assert again.recv(timeout=TIMEOUT) == "back"
    assert len(ws_server.connections) == 2


def test_stop_abort_resets_without_close_frame(ws_server: WSServer) -> None:
    with ws_connect(ws_server.url_for("/echo")) as ws:
        ws_server.stop(abort=True)
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=TIMEOUT)
        assert ws.protocol.close_rcvd is None
    ws_server.last.wait_closed()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ws_server.port), timeout=TIMEOUT)


def test_subprotocol_negotiation(ws_server_factory: Any) -> None:
    server = ws_server_factory(subprotocols=["chat.v2", "chat.v1"])
    with ws_connect(server.url_for("/echo"), subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
    assert server.last.subprotocol == "chat.v1"
    assert server.last.request_headers["Sec-WebSocket-Protocol"] == "chat.v1"


def test_forced_deflate_parameters(ws_server_factory: Any) -> None:
    server = ws_server_factory(
        extensions=[
            deflate(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=10,
                client_max_window_bits=9,
            )
        ]
    )
    with ws_connect(server.url_for("/echo")) as ws:
        ws.send("compressible " * 100)
        assert ws.recv(timeout=TIMEOUT) == "compressible " * 100
    agreed = server.last.extensions
    assert agreed is not None
    for param in (
        "permessage-deflate",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits=10",
        "client_max_window_bits=9",
    ):
        assert param in agreed


def test_compression_off(ws_server_factory: Any) -> None:
    server = ws_server_factory(compression=None)
    with ws_connect(server.url_for("/echo")) as ws:
        ws.send("x")
        ws.recv(timeout=TIMEOUT)
    assert "permessage-deflate" in server.last.request_headers["Sec-WebSocket-Extensions"]
    assert server.last.extensions is None


def test_ipv6_loopback(ws_server_factory: Any) -> None:
    server = ws_server_factory(host="::1")
    assert server.url == f"ws://[::1]:{server.port}"
    with ws_connect(server.url_for("/echo")) as ws:
        ws.send("v6")
        assert ws.recv(timeout=TIMEOUT) == "v6"
    assert server.last.remote_address[0] == "::1"


def test_behaviour_error_is_reported() -> None:
    async def broken(ws: Any, rec: Any) -> None:
        raise ValueError("bug in a test behaviour")

    server = WSServer(behaviours={"/broken": broken}).start()
    try:
        with ws_connect(server.url_for("/broken")) as ws:
            with pytest.raises(ConnectionClosedError):
                ws.recv(timeout=TIMEOUT)
            assert ws.close_code == 1011
    finally:
        server.stop()
    assert [type(e) for e in server.errors] == [ValueError]


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------


def test_wss_echo_trusting_the_session_ca(wss_server: WSServer, tls: TLSBundle) -> None:
    assert wss_server.url.startswith("wss://localhost:")
    with ws_connect(wss_server.url_for("/echo"), ssl=tls.client_context()) as ws:
        ws.send("secure")
        assert ws.recv(timeout=TIMEOUT) == "secure"
        assert isinstance(ws.socket, ssl.SSLSocket)


def test_wss_ca_file_path_works(wss_server: WSServer, tls: TLSBundle) -> None:
    context = ssl.create_default_context(cafile=tls.ca_file)
    with ws_connect(wss_server.url_for("/echo"), ssl=context) as ws:
        ws.send("file")
        assert ws.recv(timeout=TIMEOUT) == "file"


def test_wss_untrusted_ca_fails(wss_server: WSServer, tls: TLSBundle) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        ws_connect(wss_server.url_for("/echo"), ssl=tls.client_context(trust="other_ca"))
    assert "unable to get local issuer certificate" in str(info.value)


def test_wss_cert_from_other_ca_fails(ws_server_factory: Any, tls: TLSBundle) -> None:
    server = ws_server_factory(ssl_context=tls.server_context("untrusted"))
    with pytest.raises(ssl.SSLCertVerificationError):
        ws_connect(server.url_for("/echo"), ssl=tls.client_context())


def test_wss_hostname_mismatch_fails(ws_server_factory: Any, tls: TLSBundle) -> None:
    server = ws_server_factory(ssl_context=tls.server_context("wrong_host"))
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        ws_connect(server.url_for("/echo"), ssl=tls.client_context())
    assert "mismatch" in str(info.value).lower()


def test_wss_expired_cert_fails(ws_server_factory: Any, tls: TLSBundle) -> None:
    server = ws_server_factory(ssl_context=tls.server_context("expired"))
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        ws_connect(server.url_for("/echo"), ssl=tls.client_context())
    assert "expired" in str(info.value)


def test_wss_ipv6_literal_matches_ip_san(ws_server_factory: Any, tls: TLSBundle) -> None:
    server = ws_server_factory(host="::1", ssl_context=tls.server_context())
    assert server.url.startswith("wss://[::1]:")
    with ws_connect(server.url_for("/echo"), ssl=tls.client_context()) as ws:
        ws.send("v6 tls")
        assert ws.recv(timeout=TIMEOUT) == "v6 tls"


def test_mutual_tls(ws_server_factory: Any, tls: TLSBundle) -> None:
    server = ws_server_factory(ssl_context=tls.server_context(require_client_cert=True))
    with ws_connect(server.url_for("/echo"), ssl=tls.client_context(client_cert=True)) as ws:
        ws.send("mtls")
        assert ws.recv(timeout=TIMEOUT) == "mtls"
    # Without a client certificate the server refuses; under TLS 1.3 the
    # client learns it on its first read, as an SSL error or a dropped socket
    # (which websockets reports as InvalidHandshake or ConnectionClosed).
    with pytest.raises(
        (ssl.SSLError, ConnectionError, EOFError, InvalidHandshake, ConnectionClosed)
    ):
        ws_connect(server.url_for("/echo"), ssl=tls.client_context())
    assert len(server.connections) == 1


def test_client_cert_files_load(tls: TLSBundle) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
    context.load_cert_chain(tls.client_combined_file)
    context.load_verify_locations(tls.ca_file)


# ---------------------------------------------------------------------------
# ScriptedServer
# ---------------------------------------------------------------------------


def test_build_frame_illegal_encodings() -> None:
    """What lomond's codec never writes (its legal framing is tested in test_frame.py)."""
    assert build_frame(0x3, b"", fin=False, rsv1=True, rsv2=True, rsv3=True) == b"\x73\x00"
    # Illegal: length with the most significant bit set, and nothing sent.
    assert build_frame(BINARY, b"", length_override=2**63) == b"\x82\x7f\x80" + b"\x00" * 7
    # Non-minimal length encoding.
    assert build_frame(TEXT, "a", length_form=64) == b"\x81\x7f" + struct.pack("!Q", 1) + b"a"
    # Oversized control frame (RFC 6455 allows at most 125 bytes).
    assert build_frame(PING, b"p" * 200)[:4] == b"\x89\x7e\x00\xc8"
    masked = build_frame(TEXT, b"abcd", mask=b"\x01\x02\x03\x04")
    assert masked == b"\x81\x84\x01\x02\x03\x04" + bytes([0x60, 0x60, 0x60, 0x60])


class MiniClient:
    """The smallest hand-written WebSocket client: enough to test the raw server."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.reader: Optional[FrameReader] = None
        self.pending: List[Tuple[int, bytes]] = []
        self.partial: Optional[Tuple[int, bytes]] = None

    def handshake(self, host: str, path: str = "/") -> Tuple[str, bytes]:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(raw_upgrade_request(host, path, key))
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "server closed during handshake"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return key, head

    def send(self, opcode: int, payload: bytes, mask: bool = True) -> None:
        self.sock.sendall(build_frame(opcode, payload, mask=mask))

    def recv(self) -> Tuple[int, bytes]:
        """The next whole frame, read with lomond's client-side reader."""
        if self.reader is None:
            self.reader = read_frames()
            self.pending.extend(self._feed(self.buffer))
        while not self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.pending.extend(self._feed(chunk))
        return self.pending.pop(0)

    def _feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        assert self.reader is not None
        frames, error = self.reader.send(data)
        assert error is None, error
        # A frame split across reads arrives in pieces: join them.
        out: List[Tuple[int, bytes]] = []
        for frame in frames:
            if self.partial is not None:
                self.partial = (self.partial[0], self.partial[1] + bytes(frame.payload))
            else:
                self.partial = (frame.opcode, bytes(frame.payload))
            if frame.fin:
                out.append(self.partial)
                self.partial = None
        return out


def test_scripted_handshake_and_frame_round_trip(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Optional[Tuple[int, str]]:
        request = conn.read_request()
        assert request.method == "GET" and request.path == "/chat?room=1"
        assert request.headers.get("upgrade") == "websocket"
        conn.send_handshake(extra_headers={"X-Peer": "scripted"})
        frame = conn.recv_frame()
        assert frame == ClientFrame(True, False, TEXT, b"ping me")
        conn.send_text(frame.text.upper())
        closing = conn.recv_close()
        if closing is not None:
            conn.send_close(*closing)
        return closing

    server = scripted_server(script)
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        client = MiniClient(sock)
        key, head = client.handshake(f"127.0.0.1:{server.port}", "/chat?room=1")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in head
        assert b"X-Peer: scripted" in head
        client.send(TEXT, b"ping me")
        assert client.recv() == (TEXT, b"PING ME")
        client.send(CLOSE, encode_close(1000, "bye"))
        assert client.recv() == (CLOSE, encode_close(1000, "bye"))
    assert server.result() == (1000, "bye")


def test_unmasked_client_frame_is_flagged(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> str:
        conn.handshake()
        with pytest.raises(ProtocolViolation):
            conn.recv_frame()
        return "flagged"

    server = scripted_server(script)
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        client = MiniClient(sock)
        client.handshake("localhost")
        client.send(TEXT, b"naked", mask=False)
        assert server.result() == "flagged"


def test_script_errors_are_reported() -> None:
    def script(conn: RawConnection) -> None:
        conn.read_request()
        raise AssertionError("script saw something wrong")

    server = ScriptedServer(script).start()
    try:
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            MiniClient(sock).sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with pytest.raises(AssertionError, match="something wrong"):
                server.result()
    finally:
        server.stop()
    with pytest.raises(AssertionError, match="something wrong"):
        server.check()


def test_wrong_accept_fails_a_real_client(scripted_server: Any) -> None:
    server = scripted_server(lambda conn: conn.handshake(accept="wrong"))
    with pytest.raises(InvalidHandshake):
        ws_connect(server.url)


def test_missing_upgrade_header_fails_a_real_client(scripted_server: Any) -> None:
    server = scripted_server(lambda conn: conn.handshake(omit=["Upgrade"]))
    with pytest.raises(InvalidHandshake):
        ws_connect(server.url)


def test_trickled_handshake_and_frames_reach_a_real_client(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Optional[Tuple[int, str]]:
        request = conn.read_request()
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(request.key or '')}\r\n\r\n"
        ).encode()
        conn.trickle(response + build_frame(TEXT, "slow"), delay=0.0005)
        return conn.recv_close()

    server = scripted_server(script)
    with ws_connect(server.url) as ws:
        assert ws.recv(timeout=TIMEOUT) == "slow"
    assert server.result() == (1000, "")


def test_reset_is_seen_as_connection_reset(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.recv_frame()
        conn.reset()

    server = scripted_server(script)
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        client = MiniClient(sock)
        client.handshake("localhost")
        client.send(TEXT, b"x")
        server.result()
        with pytest.raises(ConnectionResetError):
            client.recv()


def test_half_close_keeps_reading(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> bytes:
        conn.handshake()
        conn.shutdown_write()
        return conn.recv_frame().payload

    server = scripted_server(script)
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        client = MiniClient(sock)
        client.handshake("localhost")
        with pytest.raises(EOFError):
            client.recv()
        client.send(BINARY, b"after FIN")
        assert server.result() == b"after FIN"


def test_recv_close_skips_frames_and_returns_none_on_eof(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Any:
        conn.handshake()
        return conn.recv_close()

    server = scripted_server(script)
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        MiniClient(sock).handshake("localhost")
        sock.sendall(build_frame(TEXT, "skipped", mask=True))
    assert server.result() is None
    assert server.connections[0].frames[0].payload == b"skipped"


def test_client_close_then_eof(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> bytes:
        conn.handshake()
        assert conn.recv_close() == (1005, "")
        return conn.expect_eof()

    server = scripted_server(script)
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        MiniClient(sock).handshake("localhost")
        sock.sendall(build_frame(CLOSE, b"", mask=True))
    assert server.result() == b""


def test_scripted_tls(scripted_server: Any, tls: TLSBundle) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.send_text("over tls")
        conn.recv_close()

    server = scripted_server(script, tls=True)
    assert server.url.startswith("wss://localhost:")
    with ws_connect(server.url, ssl=tls.client_context()) as ws:
        assert ws.recv(timeout=TIMEOUT) == "over tls"
    server.result()
    # A client refusing the certificate shows up in tls_errors, not errors.
    with pytest.raises(ssl.SSLCertVerificationError):
        ws_connect(server.url, ssl=tls.client_context(trust="other_ca"))
    deadline = time.monotonic() + TIMEOUT
    while not server.tls_errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.tls_errors and not server.errors


def test_stall_mode_times_out_the_handshake(scripted_server: Any) -> None:
    server = scripted_server(mode="stall")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        ws_connect(server.url, open_timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert len(server.connections) == 1


def test_hold_keeps_connection_open_until_stop(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.hold()

    server = scripted_server(script)
    with ws_connect(server.url) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=TIMEOUT)


def test_no_accept_mode_times_out_tcp_connect(scripted_server: Any) -> None:
    server = scripted_server(mode="no-accept")
    with pytest.raises((TimeoutError, socket.timeout)):
        socket.create_connection(server.address, timeout=0.3)


def test_ipv6_scripted_server(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.send_frame(BINARY, b"v6")
        conn.recv_close()

    server = scripted_server(script, host="::1")
    assert server.url == f"ws://[::1]:{server.port}"
    with ws_connect(server.url) as ws:
        assert ws.recv(timeout=TIMEOUT) == b"v6"


def test_read_timeout_and_peer_closed(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> str:
        with pytest.raises(TimeoutError):
            conn.read_request(timeout=0.1)
        with pytest.raises(PeerClosed):
            conn.read_request()
        return "ok"

    server = scripted_server(script)
    sock = socket.create_connection(server.address, timeout=TIMEOUT)
    time.sleep(0.2)
    sock.close()
    assert server.result() == "ok"


# ---------------------------------------------------------------------------
# HTTP CONNECT proxy
# ---------------------------------------------------------------------------


def test_proxy_tunnels_to_ws_server(http_proxy: ProxyServer, ws_server: WSServer) -> None:
    mark = http_proxy.mark()
    with ws_connect(ws_server.url_for("/echo"), proxy=http_proxy.url) as ws:
        ws.send("via proxy")
        assert ws.recv(timeout=TIMEOUT) == "via proxy"
        client_local = ws.socket.getsockname()
        assert ws.socket.getpeername()[1] == http_proxy.port
    entry = http_proxy.wait_for_connect(port=ws_server.port, since=mark)
    assert entry.method == "CONNECT" and entry.host == "127.0.0.1" and not entry.authorized
    # The server's peer is the proxy's upstream socket, not the client's.
    assert ws_server.last.remote_address[1] != client_local[1]


def test_proxy_tunnels_tls(http_proxy: ProxyServer, wss_server: WSServer, tls: TLSBundle) -> None:
    mark = http_proxy.mark()
    with ws_connect(
        wss_server.url_for("/echo"), proxy=http_proxy.url, ssl=tls.client_context()
    ) as ws:
        ws.send("tls via proxy")
        assert ws.recv(timeout=TIMEOUT) == "tls via proxy"
    assert http_proxy.wait_for_connect(port=wss_server.port, since=mark).host == "localhost"


def test_proxy_to_ipv6_target(http_proxy: ProxyServer, ws_server_factory: Any) -> None:
    server = ws_server_factory(host="::1")
    with ws_connect(server.url_for("/echo"), proxy=http_proxy.url) as ws:
        ws.send("v6 via proxy")
        assert ws.recv(timeout=TIMEOUT) == "v6 via proxy"


def test_auth_proxy_with_credentials(http_proxy_auth: ProxyServer, ws_server: WSServer) -> None:
    assert http_proxy_auth.url_with_auth == (
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{http_proxy_auth.port}"
    )
    mark = http_proxy_auth.mark()
    with ws_connect(ws_server.url_for("/echo"), proxy=http_proxy_auth.url_with_auth) as ws:
        ws.send("authorized")
        assert ws.recv(timeout=TIMEOUT) == "authorized"
    assert http_proxy_auth.wait_for_connect(port=ws_server.port, since=mark).authorized


def test_auth_proxy_without_credentials_is_407(
    http_proxy_auth: ProxyServer, ws_server: WSServer
) -> None:
    with pytest.raises(InvalidProxyStatus) as info:
        ws_connect(ws_server.url_for("/echo"), proxy=http_proxy_auth.url)
    assert info.value.response.status_code == 407
    # Raw request with wrong credentials: 407 with a Basic challenge.
    wrong = base64.b64encode(b"lomond:wrong").decode()
    target = f"127.0.0.1:{ws_server.port}"
    with socket.create_connection(("127.0.0.1", http_proxy_auth.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
            f"Proxy-Authorization: Basic {wrong}\r\n\r\n".encode()
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 407")
    assert b"proxy-authenticate: basic" in reply.lower()
    assert ws_server.connections == []


def test_proxy_start_stop_is_quick(tmp_path: Any) -> None:
    proxy = ProxyServer(workdir=tmp_path)
    started = time.monotonic()
    proxy.start()
    try:
        assert proxy.startup_seconds is not None and proxy.startup_seconds < 5
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT):
            pass
    finally:
        proxy.stop()
    assert time.monotonic() - started < 8
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)


def test_ws_server_threads_are_cleaned_up() -> None:
    before = {t.name for t in threading.enumerate()}
    server = WSServer().start()
    server.stop()
    leftover = {t.name for t in threading.enumerate()} - before
    assert not any(name.startswith("WSServer") for name in leftover)
