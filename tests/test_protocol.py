"""The sans-I/O client protocol, driven with bytes only.

A whole session is scripted: the upgrade request is checked line by line,
the server's answer is computed from the key in that request, and frames go
back and forth as bytes, parsed with an independent parser.
"""

from __future__ import annotations

import base64
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from lomond import events
from lomond.errors import (
    FrameBuildError,
    WebSocketClosed,
    WebSocketClosing,
    WebSocketUnavailable,
)
from lomond.frame import Opcode, build_frame
from lomond.handshake import accept_for, check_header, parse_url
from lomond.protocol import ClientProtocol, State, decode_close, encode_close

# -- helpers ------------------------------------------------------------------


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A frame as the server sends it: unmasked."""
    return build_frame(opcode, payload, fin=fin, mask=False)


def close_frame(code: Optional[int] = None, reason: bytes = b"") -> bytes:
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return frame(Opcode.CLOSE, payload)


def parse_client_frame(data: bytes) -> Tuple[bool, int, bytes]:
    """One masked client frame -> (fin, opcode, unmasked payload); checks it is masked."""
    byte0, byte1 = data[0], data[1]
    assert byte1 & 0x80, "client frames must be masked"
    length = byte1 & 0x7F
    pos = 2
    if length == 126:
        (length,) = struct.unpack("!H", data[2:4])
        pos = 4
    elif length == 127:
        (length,) = struct.unpack("!Q", data[2:10])
        pos = 10
    key = data[pos : pos + 4]
    payload = data[pos + 4 :]
    assert len(payload) == length
    return bool(byte0 & 0x80), byte0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def parse_request(data: bytes) -> Tuple[str, Dict[str, str], List[Tuple[str, str]]]:
    assert data.endswith(b"\r\n\r\n")
    lines = data.decode("latin-1").split("\r\n")[:-2]
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers.append((name, value))
    return lines[0], {name.lower(): value for name, value in headers}, headers


def make_protocol(url: str = "ws://example.com/", **kwargs: object) -> ClientProtocol:
    return ClientProtocol(parse_url(url), **kwargs)  # type: ignore[arg-type]


def response_for(
    protocol: ClientProtocol,
    *,
    status: str = "101 Switching Protocols",
    upgrade: Optional[str] = "websocket",
    connection: Optional[str] = "Upgrade",
    accept: Optional[str] = None,
    extra: Sequence[str] = (),
) -> bytes:
    """The server's answer, with the accept computed from the key in the request."""
    _, headers, _ = parse_request(protocol.request())
    key = headers["sec-websocket-key"].encode()
    lines = [f"HTTP/1.1 {status}"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    lines.append(f"Sec-WebSocket-Accept: {accept if accept is not None else accept_for(key)}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def open_protocol(**kwargs: object) -> ClientProtocol:
    protocol = make_protocol(**kwargs)  # type: ignore[arg-type]
    got = protocol.receive_data(response_for(protocol))
    assert [type(e) for e in got] == [events.Ready]
    assert protocol.state is State.OPEN
    return protocol


def kinds(evs: List[events.Event]) -> List[type]:
    return [type(e) for e in evs]


# -- the upgrade request ------------------------------------------------------


def test_request_lines() -> None:
    protocol = make_protocol(
        "ws://example.com:8080/chat/room?id=7",
        protocols=["chat.v2", "chat.v1"],
        agent="tester/1.0",
        headers=[("Origin", "http://example.com"), ("X-Token", "abc")],
    )
    line, headers, pairs = parse_request(protocol.request())
    assert line == "GET /chat/room?id=7 HTTP/1.1"
    assert headers["host"] == "example.com:8080"
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert headers["sec-websocket-version"] == "13"
    key = headers["sec-websocket-key"]
    assert len(base64.b64decode(key, validate=True)) == 16
    assert key.encode() == protocol.key
    assert headers["user-agent"] == "tester/1.0"
    assert headers["sec-websocket-protocol"] == "chat.v2, chat.v1"
    assert headers["origin"] == "http://example.com"
    assert headers["x-token"] == "abc"
    assert "sec-websocket-extensions" not in headers
    # Each header once.
    assert len({n.lower() for n, _ in pairs}) == len(pairs)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("ws://example.com/", "example.com"),
        ("ws://example.com:80/", "example.com"),
        ("wss://example.com:443/", "example.com"),
        ("wss://example.com/", "example.com"),
        ("ws://example.com:443/", "example.com:443"),
        ("wss://example.com:80/", "example.com:80"),
        ("ws://127.0.0.1:9001/", "127.0.0.1:9001"),
        ("ws://[::1]:9000/", "[::1]:9000"),
        ("ws://[::1]/", "[::1]"),
        ("wss://[2001:db8::1]:8443/x", "[2001:db8::1]:8443"),
    ],
)
def test_host_header(url: str, host: str) -> None:
    _, headers, _ = parse_request(make_protocol(url).request())
    assert headers["host"] == host


def test_request_defaults() -> None:
    line, headers, _ = parse_request(make_protocol("ws://example.com").request())
    assert line == "GET / HTTP/1.1"
    assert "user-agent" not in headers  # agent=None: none sent
    assert "sec-websocket-protocol" not in headers


def test_keys_are_fresh() -> None:
    keys = {make_protocol().key for _ in range(50)}
    assert len(keys) == 50


def test_request_is_stable_for_one_protocol() -> None:
    protocol = make_protocol()
    assert protocol.request() == protocol.request()


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b"])
def test_cr_lf_in_header_values_rejected(value: str) -> None:
    with pytest.raises(ValueError):
        check_header("X-Custom", value)
    with pytest.raises(ValueError):
        check_header(b"X-Custom", value.encode())


# -- the response ----------------------------------------------------------------


def test_ready() -> None:
    protocol = make_protocol(protocols=["chat"])
    data = response_for(protocol, extra=["Sec-WebSocket-Protocol: chat", "X-Server: test"])
    got = protocol.receive_data(data)
    assert kinds(got) == [events.Ready]
    ready = got[0]
    assert isinstance(ready, events.Ready)
    assert ready.protocol == "chat"
    assert ready.extensions == frozenset()
    assert ready.response.status_code == 101
    assert ready.response.get("x-server") == "test"
    assert protocol.protocol == "chat"
    assert protocol.state is State.OPEN


def test_response_byte_by_byte() -> None:
    protocol = make_protocol()
    data = response_for(protocol) + frame(Opcode.TEXT, b"hi")
    got: List[events.Event] = []
    for i in range(len(data)):
        step = protocol.receive_data(data[i : i + 1])
        got.extend(step)
        if i < len(data) - len(frame(Opcode.TEXT, b"hi")) - 1:
            assert step == [], f"event before the response was complete (byte {i})"
    assert kinds(got) == [events.Ready, events.Text]
    assert got[1].text == "hi"  # type: ignore[attr-defined]


def test_frames_in_the_same_buffer_as_the_response() -> None:
    protocol = make_protocol()
    data = response_for(protocol) + frame(Opcode.TEXT, b"a") + frame(Opcode.PING, b"b")
    got = protocol.receive_data(data)
    assert kinds(got) == [events.Ready, events.Text, events.Ping]


def test_rfc_example_key() -> None:
    """RFC 6455 section 1.3: key dGhlIHNhbXBsZSBub25jZQ== -> s3pPLMBiTxaQ9kYGzzhZRbK+xOo=."""
    assert accept_for(b"dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    protocol = make_protocol(key=b"dGhlIHNhbXBsZSBub25jZQ==")
    _, headers, _ = parse_request(protocol.request())
    assert headers["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    assert kinds(protocol.receive_data(response)) == [events.Ready]


def test_header_tokens_are_case_insensitive() -> None:
    protocol = make_protocol()
    data = response_for(protocol, upgrade="WebSocket", connection="keep-alive, UPGRADE")
    assert kinds(protocol.receive_data(data)) == [events.Ready]


REJECTIONS = {
    "wrong accept": ({"accept": base64.b64encode(b"x" * 20).decode()}, "Accept"),
    "missing upgrade": ({"upgrade": None}, "Upgrade"),
    "wrong upgrade": ({"upgrade": "h2c"}, "Upgrade"),
    "missing connection": ({"connection": None}, "Connection"),
    "connection keep-alive": ({"connection": "keep-alive"}, "Connection"),
    "403": ({"status": "403 Forbidden"}, "403"),
    "200": ({"status": "200 OK"}, "200"),
    "unoffered protocol": ({"extra": ["Sec-WebSocket-Protocol: other"]}, "other"),
    "unoffered extension": (
        {"extra": ["Sec-WebSocket-Extensions: permessage-deflate"]}, "extension"
    ),
}


@pytest.mark.parametrize("name", sorted(REJECTIONS))
def test_rejected(name: str) -> None:
    options, reason_part = REJECTIONS[name]
    protocol = make_protocol(protocols=["chat"])
    got = protocol.receive_data(response_for(protocol, **options) + frame(Opcode.TEXT, b"x"))
    assert kinds(got) == [events.Rejected]
    rejected = got[0]
    assert isinstance(rejected, events.Rejected)
    assert reason_part.lower() in rejected.reason.lower()
    assert rejected.response is not None
    assert protocol.state is State.CLOSED
    # Nothing more comes out of a rejected connection, and nothing can be sent.
    assert protocol.receive_data(frame(Opcode.TEXT, b"y")) == []
    with pytest.raises(WebSocketUnavailable):
        protocol.send_data(Opcode.TEXT, b"z")


def test_missing_accept_rejected() -> None:
    protocol = make_protocol()
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    got = protocol.receive_data(data)
    assert kinds(got) == [events.Rejected]
    assert "accept" in got[0].reason.lower()  # type: ignore[attr-defined]


def test_two_subprotocols_rejected() -> None:
    protocol = make_protocol(protocols=["a", "b"])
    got = protocol.receive_data(response_for(protocol, extra=["Sec-WebSocket-Protocol: a, b"]))
    assert kinds(got) == [events.Rejected]


def test_rejected_status_keeps_the_response() -> None:
    protocol = make_protocol()
    data = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Why: nope\r\n\r\n"
    got = protocol.receive_data(data)
    assert kinds(got) == [events.Rejected]
    rejected = got[0]
    assert isinstance(rejected, events.Rejected)
    assert rejected.response.status_code == 404
    assert rejected.response.get("x-why") == "nope"


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.0\r\n\r\n",
        b"HTTP/1.1 abc Switching\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n",
        b"\r\n\r\n",
    ],
)
def test_garbage_response_is_connect_fail(data: bytes) -> None:
    protocol = make_protocol()
    got = protocol.receive_data(data)
    assert kinds(got) == [events.ConnectFail]
    assert got[0].reason  # type: ignore[attr-defined]
    assert protocol.state is State.CLOSED
    assert protocol.receive_data(b"more") == []


def test_oversized_header_block_without_end_is_connect_fail() -> None:
    protocol = make_protocol()
    got: List[events.Event] = []
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    got.extend(protocol.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n"))
    for _ in range(100):
        got.extend(protocol.receive_data(line))
        if got:
            break
    assert kinds(got) == [events.ConnectFail]
    assert "exceeds" in got[0].reason  # type: ignore[attr-defined]


def test_oversized_header_block_in_one_buffer_is_connect_fail() -> None:
    protocol = make_protocol()
    filler = "".join(f"X-Filler-{i}: {'a' * 1000}\r\n" for i in range(70))
    data = response_for(protocol, extra=[filler.rstrip("\r\n")])
    assert len(data) > 64 * 1024
    got = protocol.receive_data(data)
    assert kinds(got) == [events.ConnectFail]


# -- messages ---------------------------------------------------------------------


def test_single_frame_messages() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(
        frame(Opcode.TEXT, "héllo ☃".encode()) + frame(Opcode.BINARY, b"\x00\xff")
        + frame(Opcode.TEXT, b"") + frame(Opcode.BINARY, b"")
    )
    assert kinds(got) == [events.Text, events.Binary, events.Text, events.Binary]
    assert got[0].text == "héllo ☃"  # type: ignore[attr-defined]
    assert got[1].data == b"\x00\xff"  # type: ignore[attr-defined]
    assert got[2].text == ""  # type: ignore[attr-defined]
    assert got[3].data == b""  # type: ignore[attr-defined]


def test_fragmented_messages_with_interleaved_control_frames() -> None:
    protocol = open_protocol()
    data = (
        frame(Opcode.TEXT, b"Hel", fin=False)
        + frame(Opcode.PING, b"p1")
        + frame(Opcode.CONTINUATION, b"lo ", fin=False)
        + frame(Opcode.PONG, b"p2")
        + frame(Opcode.CONTINUATION, b"world")
        + frame(Opcode.BINARY, b"\x01", fin=False)
        + frame(Opcode.PING, b"")
        + frame(Opcode.CONTINUATION, b"", fin=False)
        + frame(Opcode.CONTINUATION, b"\x02\x03")
    )
    got = protocol.receive_data(data)
    assert kinds(got) == [
        events.Ping, events.Pong, events.Text, events.Ping, events.Binary
    ]
    assert got[0].data == b"p1"  # type: ignore[attr-defined]
    assert got[1].data == b"p2"  # type: ignore[attr-defined]
    assert got[2].text == "Hello world"  # type: ignore[attr-defined]
    assert got[4].data == b"\x01\x02\x03"  # type: ignore[attr-defined]


def test_fragmented_message_byte_by_byte() -> None:
    protocol = open_protocol()
    data = (
        frame(Opcode.TEXT, "ab€".encode()[:3], fin=False)
        + frame(Opcode.PING, b"x")
        + frame(Opcode.CONTINUATION, "ab€".encode()[3:])
    )
    got: List[events.Event] = []
    for i in range(len(data)):
        got.extend(protocol.receive_data(data[i : i + 1]))
    assert kinds(got) == [events.Ping, events.Text]
    assert got[1].text == "ab€"  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["é", "€", "𝄞", "a€b𝄞c"])
def test_utf8_split_across_fragments_decodes(text: str) -> None:
    encoded = text.encode("utf-8")
    for cut in range(1, len(encoded)):
        protocol = open_protocol()
        got = protocol.receive_data(
            frame(Opcode.TEXT, encoded[:cut], fin=False)
            + frame(Opcode.CONTINUATION, encoded[cut:])
        )
        assert kinds(got) == [events.Text], cut
        assert got[0].text == text  # type: ignore[attr-defined]


def test_utf8_split_one_byte_per_fragment() -> None:
    encoded = "𝄞€é".encode()
    protocol = open_protocol()
    data = frame(Opcode.TEXT, encoded[:1], fin=False)
    for i in range(1, len(encoded) - 1):
        data += frame(Opcode.CONTINUATION, encoded[i : i + 1], fin=False)
    data += frame(Opcode.CONTINUATION, encoded[-1:])
    got = protocol.receive_data(data)
    assert kinds(got) == [events.Text]
    assert got[0].text == "𝄞€é"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"ok\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"abc\x80", b"\xc3\x28"],
)
def test_invalid_utf8_in_first_fragment_fails_at_once(bad: bytes) -> None:
    """The violation is reported for the first fragment, before the final one arrives."""
    protocol = open_protocol()
    got = protocol.receive_data(frame(Opcode.TEXT, bad, fin=False))
    assert kinds(got) == [events.ProtocolError]
    error = got[0]
    assert isinstance(error, events.ProtocolError)
    assert error.code == 1007
    assert not error.critical
    # The connection is failed: later fragments produce nothing.
    assert protocol.receive_data(frame(Opcode.CONTINUATION, b"rest")) == []


def test_invalid_utf8_in_a_middle_fragment_fails_at_that_fragment() -> None:
    protocol = open_protocol()
    assert protocol.receive_data(frame(Opcode.TEXT, b"fine", fin=False)) == []
    got = protocol.receive_data(frame(Opcode.CONTINUATION, b"\xe2\x82", fin=False))
    assert got == []  # an incomplete but valid prefix of "€"
    got = protocol.receive_data(frame(Opcode.CONTINUATION, b"\x41", fin=False))
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1007  # type: ignore[attr-defined]


def test_truncated_utf8_at_the_end_of_a_message_fails() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(
        frame(Opcode.TEXT, b"abc\xe2", fin=False) + frame(Opcode.CONTINUATION, b"\x82")
    )
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1007  # type: ignore[attr-defined]


def test_invalid_utf8_in_a_single_frame() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(frame(Opcode.TEXT, b"ok") + frame(Opcode.TEXT, b"\xfe"))
    assert kinds(got) == [events.Text, events.ProtocolError]
    assert got[1].code == 1007  # type: ignore[attr-defined]


def test_binary_messages_are_not_utf8_checked() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(
        frame(Opcode.BINARY, b"\xff", fin=False) + frame(Opcode.CONTINUATION, b"\xfe")
    )
    assert kinds(got) == [events.Binary]
    assert got[0].data == b"\xff\xfe"  # type: ignore[attr-defined]


def test_continuation_without_a_message() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(frame(Opcode.CONTINUATION, b"x"))
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1002  # type: ignore[attr-defined]


def test_new_message_inside_a_fragmented_one() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(
        frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.BINARY, b"b")
    )
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1002  # type: ignore[attr-defined]


def test_assembled_message_over_max_size() -> None:
    protocol = open_protocol(max_size=10)
    got = protocol.receive_data(
        frame(Opcode.BINARY, b"12345", fin=False)
        + frame(Opcode.CONTINUATION, b"12345", fin=False)
    )
    assert got == []  # exactly 10 so far
    got = protocol.receive_data(frame(Opcode.CONTINUATION, b"1"))
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1009  # type: ignore[attr-defined]


def test_single_frame_over_max_size() -> None:
    protocol = open_protocol(max_size=10)
    got = protocol.receive_data(frame(Opcode.TEXT, b"ok") + frame(Opcode.BINARY, b"x" * 11))
    assert kinds(got) == [events.Text, events.ProtocolError]
    assert got[1].code == 1009  # type: ignore[attr-defined]


def test_reader_violation_sends_a_close_and_follows_good_events() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(frame(Opcode.TEXT, b"before") + bytes((0x83, 0)))
    assert kinds(got) == [events.Text, events.ProtocolError]
    error = got[1]
    assert isinstance(error, events.ProtocolError)
    # critical=False: a Close frame with the code goes out (RFC 6455 7.1.7).
    assert not error.critical
    assert error.code == 1002
    assert protocol.failure is not None
    assert protocol.receive_data(frame(Opcode.TEXT, b"after")) == []
    # The message before the violation may still be answered (Autobahn 3.3,
    # 4.1.3: the echo is expected before the Close) ...
    _, _, payload = parse_client_frame(protocol.send_data(Opcode.TEXT, b"reply"))
    assert payload == b"reply"
    # ... until the driver takes the failing Close from the queue.
    closing = protocol.data_to_send()
    fin, opcode, payload = parse_client_frame(closing)
    assert fin and opcode == Opcode.CLOSE and payload[:2] == struct.pack("!H", 1002)
    assert protocol.should_close
    with pytest.raises(WebSocketClosed):
        protocol.send_data(Opcode.TEXT, b"x")
    assert protocol.data_to_send() == b""
    assert kinds(protocol.finish()) == [events.Disconnected]


def test_violation_after_our_close_is_critical_and_sends_nothing() -> None:
    protocol = open_protocol()
    protocol.send_close(1000, "bye")
    got = protocol.receive_data(bytes((0x83, 0)))
    error = got[-1]
    assert isinstance(error, events.ProtocolError)
    # critical=True: our Close is out already, so the connection is dropped
    # without another Close frame - the flag says what happens on the wire.
    assert error.critical
    assert protocol.data_to_send() == b""
    assert protocol.should_close


def test_failing_close_carries_the_error_code_once() -> None:
    protocol = open_protocol()
    protocol.receive_data(frame(Opcode.TEXT, b"\xff"))
    fin, opcode, payload = parse_client_frame(protocol.data_to_send())
    assert fin and opcode == Opcode.CLOSE
    assert payload[:2] == struct.pack("!H", 1007)
    assert b"UTF-8" in payload
    assert protocol.data_to_send() == b""


def test_nothing_queued_before_the_handshake() -> None:
    protocol = make_protocol()
    assert protocol.data_to_send() == b""
    assert not protocol.should_close


# -- the protocol's own replies and end of stream ------------------------------------


def test_ping_is_answered_through_the_queue() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(frame(Opcode.PING, b"abc") + frame(Opcode.PING, b"de"))
    assert kinds(got) == [events.Ping, events.Ping]
    data = protocol.data_to_send()
    # Two masked pongs, in order: 2 header bytes + 4 key bytes + payload each.
    assert parse_client_frame(data[:9])[1:] == (Opcode.PONG, b"abc")
    assert parse_client_frame(data[9:])[1:] == (Opcode.PONG, b"de")
    assert protocol.data_to_send() == b""


def test_no_pong_without_auto_pong() -> None:
    protocol = open_protocol(auto_pong=False)
    protocol.receive_data(frame(Opcode.PING, b"abc"))
    assert protocol.data_to_send() == b""


def test_ping_answered_while_our_close_is_pending() -> None:
    protocol = open_protocol()
    protocol.send_close(1000, "")
    protocol.receive_data(frame(Opcode.PING, b"p"))
    assert parse_client_frame(protocol.data_to_send())[1:] == (Opcode.PONG, b"p")


def test_close_echo_waits_for_data_to_send_so_a_closing_handler_may_send() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(frame(Opcode.CLOSE, struct.pack("!H", 1001) + b"away"))
    assert kinds(got) == [events.Closing]
    assert not protocol.close_sent
    # A handler for Closing may still send (RFC 6455 5.5.1) ...
    reply = protocol.send_data(Opcode.TEXT, b"last words")
    assert parse_client_frame(reply)[2] == b"last words"
    # ... then the echo goes out, with the server's code.
    fin, opcode, payload = parse_client_frame(protocol.data_to_send())
    assert fin and opcode == Opcode.CLOSE and payload == struct.pack("!H", 1001)
    assert protocol.handshake_complete
    with pytest.raises(WebSocketClosed):
        protocol.send_data(Opcode.TEXT, b"too late")
    # The client waits for the server to close TCP first (RFC 6455 7.1.1).
    assert not protocol.should_close
    assert protocol.receive_eof() == []
    assert protocol.should_close
    (end,) = protocol.finish()
    assert isinstance(end, events.Disconnected) and end.graceful and end.reason == "closed"


def test_close_echo_without_a_status_code_is_empty() -> None:
    protocol = open_protocol()
    protocol.receive_data(frame(Opcode.CLOSE, b""))
    assert parse_client_frame(protocol.data_to_send())[1:] == (Opcode.CLOSE, b"")


def test_our_close_in_a_closing_handler_replaces_the_echo() -> None:
    protocol = open_protocol()
    protocol.receive_data(frame(Opcode.CLOSE, struct.pack("!H", 1001)))
    ours = protocol.send_close(4000, "mine")
    assert parse_client_frame(ours)[2] == struct.pack("!H", 4000) + b"mine"
    assert protocol.data_to_send() == b""


@pytest.mark.parametrize(
    "setup, reason, graceful",
    [
        ("open", "server closed the connection without a close frame", False),
        ("our_close", "server closed the connection without answering our close", False),
        ("both_closes", "closed", True),
    ],
)
def test_end_of_stream_reasons(setup: str, reason: str, graceful: bool) -> None:
    protocol = open_protocol()
    if setup in ("our_close", "both_closes"):
        protocol.send_close(1000, "")
    if setup == "both_closes":
        protocol.receive_data(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
    assert protocol.receive_eof() == []
    assert protocol.should_close
    (end,) = protocol.finish()
    assert isinstance(end, events.Disconnected)
    assert (end.reason, end.graceful) == (reason, graceful)


def test_end_of_stream_during_the_handshake_is_connect_fail() -> None:
    protocol = make_protocol()
    got = protocol.receive_eof()
    assert kinds(got) == [events.ConnectFail]
    assert protocol.should_close
    (end,) = protocol.finish()
    assert isinstance(end, events.Disconnected) and not end.graceful


def test_finish_with_a_drivers_reason_before_ready_adds_connect_fail() -> None:
    protocol = make_protocol()
    got = protocol.finish("no response to the upgrade request within 1 s")
    assert kinds(got) == [events.ConnectFail, events.Disconnected]
    assert {e.reason for e in got} == {"no response to the upgrade request within 1 s"}  # type: ignore[attr-defined]


def test_finish_with_a_drivers_reason_after_ready() -> None:
    protocol = open_protocol()
    (end,) = protocol.finish("unresponsive: no pong within 2 s")
    assert isinstance(end, events.Disconnected)
    assert (end.reason, end.graceful) == ("unresponsive: no pong within 2 s", False)


def test_rejected_handshake_asks_to_close() -> None:
    protocol = make_protocol()
    protocol.receive_data(b"HTTP/1.1 403 Forbidden\r\n\r\n")
    assert protocol.should_close
    (end,) = protocol.finish()
    assert isinstance(end, events.Disconnected) and end.reason == "handshake rejected"


# -- close frames --------------------------------------------------------------------


def test_close_with_empty_payload() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(close_frame())
    assert kinds(got) == [events.Closing]
    assert got[0].code is None  # type: ignore[attr-defined]
    assert got[0].reason == ""  # type: ignore[attr-defined]
    assert protocol.state is State.CLOSING


def test_close_with_code_only() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(close_frame(1000))
    assert kinds(got) == [events.Closing]
    assert (got[0].code, got[0].reason) == (1000, "")  # type: ignore[attr-defined]


def test_close_with_code_and_reason() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(close_frame(4001, "bye ☃".encode()))
    assert kinds(got) == [events.Closing]
    assert (got[0].code, got[0].reason) == (4001, "bye ☃")  # type: ignore[attr-defined]


def test_close_with_one_byte_payload() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(frame(Opcode.CLOSE, b"\x03"))
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1002  # type: ignore[attr-defined]


INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes(code: int) -> None:
    protocol = open_protocol()
    got = protocol.receive_data(close_frame(code, b"reason"))
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1002  # type: ignore[attr-defined]
    assert not protocol.close_received


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes(code: int) -> None:
    protocol = open_protocol()
    got = protocol.receive_data(close_frame(code, b"r"))
    assert kinds(got) == [events.Closing]
    assert got[0].code == code  # type: ignore[attr-defined]


def test_close_reason_invalid_utf8() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(close_frame(1000, b"\xff\xfe"))
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1007  # type: ignore[attr-defined]


def test_nothing_delivered_after_the_servers_close() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(
        frame(Opcode.TEXT, b"before") + close_frame(1000) + frame(Opcode.TEXT, b"after")
        + frame(Opcode.PING, b"p")
    )
    assert kinds(got) == [events.Text, events.Closing]
    assert protocol.receive_data(frame(Opcode.TEXT, b"later") + close_frame(1000)) == []
    assert protocol.receive_data(bytes((0x83, 0))) == []


def test_bad_header_after_the_servers_close_in_the_same_buffer_is_ignored() -> None:
    """RFC 6455 5.5.1: after a Close nothing is data, not even a malformed frame.

    The documented order ends with Closing -> Disconnected: a ProtocolError
    after Closing would also turn a graceful close into a failed one.
    """
    protocol = open_protocol()
    got = protocol.receive_data(close_frame(1000) + frame(Opcode.TEXT, b"x") + bytes((0x83, 0)))
    assert kinds(got) == [events.Closing]
    assert protocol.failure is None
    protocol.send_close(1000, "")
    assert protocol.handshake_complete


def test_server_initiated_close() -> None:
    protocol = open_protocol()
    got = protocol.receive_data(close_frame(1001, b"going"))
    assert kinds(got) == [events.Closing]
    assert protocol.state is State.CLOSING
    assert protocol.close_received and not protocol.close_sent
    # A Closing handler may still send.
    assert parse_client_frame(protocol.send_data(Opcode.TEXT, b"last words")) == (
        True, Opcode.TEXT, b"last words")
    # The echo completes the handshake.
    _, opcode, payload = parse_client_frame(protocol.send_close(1001, ""))
    assert (opcode, payload) == (Opcode.CLOSE, struct.pack("!H", 1001))
    assert protocol.state is State.CLOSED
    assert protocol.handshake_complete
    with pytest.raises(WebSocketClosed):
        protocol.send_data(Opcode.TEXT, b"x")


def test_client_initiated_close() -> None:
    protocol = open_protocol()
    fin, opcode, payload = parse_client_frame(protocol.send_close(1000, "goodbye"))
    assert fin and opcode == Opcode.CLOSE
    assert payload == b"\x03\xe8goodbye"
    assert protocol.state is State.CLOSING
    assert not protocol.handshake_complete
    # Messages still arrive until the server answers.
    got = protocol.receive_data(frame(Opcode.TEXT, b"in flight") + close_frame(1000, b"ok"))
    assert kinds(got) == [events.Text, events.Closed]
    assert (got[1].code, got[1].reason) == (1000, "ok")  # type: ignore[attr-defined]
    assert protocol.state is State.CLOSED
    assert protocol.handshake_complete
    assert protocol.receive_data(frame(Opcode.TEXT, b"after")) == []


def test_sending_while_closing_raises_closing() -> None:
    protocol = open_protocol()
    protocol.send_close(1000, "")
    with pytest.raises(WebSocketClosing):
        protocol.send_data(Opcode.TEXT, b"x")
    with pytest.raises(WebSocketClosing):
        protocol.send_ping(b"")
    with pytest.raises(WebSocketClosing):
        protocol.send_pong(b"")
    with pytest.raises(WebSocketClosing):
        protocol.send_close(1000, "")


def test_sending_after_closed_raises_closed() -> None:
    protocol = open_protocol()
    protocol.send_close(1000, "")
    protocol.receive_data(close_frame(1000))
    for send in (
        lambda: protocol.send_data(Opcode.BINARY, b"x"),
        lambda: protocol.send_ping(b""),
        lambda: protocol.send_close(1000, ""),
    ):
        with pytest.raises(WebSocketClosed):
            send()


def test_sending_before_the_handshake_raises_unavailable() -> None:
    protocol = make_protocol()
    for send in (
        lambda: protocol.send_data(Opcode.TEXT, b"x"),
        lambda: protocol.send_ping(b""),
        lambda: protocol.send_pong(b""),
        lambda: protocol.send_close(1000, ""),
    ):
        with pytest.raises(WebSocketUnavailable) as info:
            send()
        assert type(info.value) is WebSocketUnavailable


def test_sent_frames_are_masked_and_fresh() -> None:
    protocol = open_protocol()
    first = protocol.send_data(Opcode.TEXT, b"same")
    second = protocol.send_data(Opcode.TEXT, b"same")
    assert first != second
    assert parse_client_frame(first) == parse_client_frame(second) == (True, Opcode.TEXT, b"same")
    assert parse_client_frame(protocol.send_ping(b"pp")) == (True, Opcode.PING, b"pp")
    assert parse_client_frame(protocol.send_pong(b"qq")) == (True, Opcode.PONG, b"qq")


def test_control_payload_limits_on_send() -> None:
    protocol = open_protocol()
    protocol.send_ping(b"x" * 125)
    with pytest.raises(ValueError):
        protocol.send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        protocol.send_pong(b"x" * 126)
    with pytest.raises(TypeError):
        protocol.send_ping("text")  # type: ignore[arg-type]


def test_close_reason_trimmed_at_a_character_boundary() -> None:
    protocol = open_protocol()
    reason = "é" * 100  # 200 bytes of UTF-8, two per character
    _, _, payload = parse_client_frame(protocol.send_close(1000, reason))
    assert len(payload) <= 125
    decoded = payload[2:].decode("utf-8")  # must still be valid UTF-8
    assert decoded == "é" * 61  # 122 bytes: the 62nd would need 124


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("a" * 200, "a" * 123),
        ("a" * 123, "a" * 123),
        ("a" * 122 + "€", "a" * 122),
        ("a" * 120 + "€", "a" * 120 + "€"),
        ("𝄞" * 40, "𝄞" * 30),
    ],
)
def test_encode_close_trimming(reason: str, expected: str) -> None:
    payload = encode_close(1000, reason)
    assert len(payload) <= 125
    assert payload[:2] == b"\x03\xe8"
    assert payload[2:].decode("utf-8") == expected


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_encode_close_refuses_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(FrameBuildError):
        encode_close(code, "")


def test_encode_close_without_a_code() -> None:
    assert encode_close(None) == b""
    # Lomond 0.3's close(code=None) sent a Close with no status; a reason
    # cannot travel without a code, so it is left out.
    assert encode_close(None, "reason without code") == b""
    assert encode_close(None, b"goodbye") == b""


def test_encode_close_takes_utf8_bytes_and_refuses_other_types() -> None:
    assert encode_close(1000, b"goodbye") == encode_close(1000, "goodbye")
    assert encode_close(1000, "caf\u00e9".encode()) == b"\x03\xe8caf\xc3\xa9"
    with pytest.raises(FrameBuildError):
        encode_close(1000, b"\xff\xfe")
    with pytest.raises(TypeError):
        encode_close(1000, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_close("1000", "")  # type: ignore[arg-type]


def test_decode_close() -> None:
    assert decode_close(b"") == (None, "")
    assert decode_close(b"\x03\xe8") == (1000, "")
    assert decode_close(b"\x0f\xa0hi") == (4000, "hi")


def test_full_scripted_session() -> None:
    """Request, response, messages both ways, pings, and a client-initiated close."""
    protocol = make_protocol("ws://127.0.0.1:9999/echo", protocols=["p"], agent="t")
    request = protocol.request()
    line, headers, _ = parse_request(request)
    assert line == "GET /echo HTTP/1.1" and headers["host"] == "127.0.0.1:9999"
    response = response_for(protocol, extra=["Sec-WebSocket-Protocol: p"])
    got = protocol.receive_data(response[:10])
    assert got == []
    got = protocol.receive_data(response[10:] + frame(Opcode.TEXT, b"welcome"))
    assert kinds(got) == [events.Ready, events.Text]
    assert parse_client_frame(protocol.send_data(Opcode.TEXT, b"hello")) == (
        True, Opcode.TEXT, b"hello")
    got = protocol.receive_data(frame(Opcode.PING, b"are you there"))
    assert kinds(got) == [events.Ping]
    assert parse_client_frame(protocol.send_pong(got[0].data)) == (  # type: ignore[attr-defined]
        True, Opcode.PONG, b"are you there")
    got = protocol.receive_data(frame(Opcode.TEXT, b"hel", fin=False))
    assert got == []
    got = protocol.receive_data(frame(Opcode.CONTINUATION, b"lo"))
    assert kinds(got) == [events.Text] and got[0].text == "hello"  # type: ignore[attr-defined]
    protocol.send_close(1000, "done")
    got = protocol.receive_data(close_frame(1000, b"done"))
    assert kinds(got) == [events.Closed]
    assert protocol.handshake_complete and protocol.state is State.CLOSED


def test_pongs_can_go_before_a_pending_close_echo() -> None:
    protocol = open_protocol()
    protocol.receive_data(frame(Opcode.PING, b"p") + frame(Opcode.CLOSE, struct.pack("!H", 1000)))
    # After the Ping's handlers: the pong only; the echo waits for Closing's.
    assert parse_client_frame(protocol.data_to_send(include_close=False))[1:] == (Opcode.PONG, b"p")
    assert not protocol.close_sent
    assert parse_client_frame(protocol.data_to_send())[1] == Opcode.CLOSE
    assert protocol.close_sent
