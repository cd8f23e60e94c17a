"""The sans-I/O protocol, both sides, driven with bytes only.

A whole session is scripted: the upgrade request is checked line by line,
the server's answer is computed from the key in that request, and frames go
back and forth as bytes, parsed with an independent parser. The server side
is scripted the same way, and at the end a ClientProtocol and a
ServerProtocol talk to each other through plain byte pipes.
"""

from __future__ import annotations

import base64
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from lomond import events
from lomond.compression import Deflate, PerMessageDeflate, negotiate
from lomond.errors import (
    FrameBuildError,
    WebSocketClosed,
    WebSocketClosing,
    WebSocketUnavailable,
)
from lomond.frame import Frame, Opcode, build_frame
from lomond.handshake import accept_for, check_header, parse_url
from lomond.protocol import (
    ClientProtocol,
    Protocol,
    ServerProtocol,
    Side,
    State,
    UpgradeRequest,
    decode_close,
    encode_close,
)
from lomond.response import Response

# -- helpers ------------------------------------------------------------------


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A frame as the server sends it: unmasked."""
    return build_frame(opcode, payload, fin=fin, mask=False)


def close_frame(code: Optional[int] = None, reason: bytes = b"") -> bytes:
    """A Close frame as the server sends it, legal or not.

    A legal payload is :func:`encode_close`'s; the tests of invalid codes and
    reasons need payloads it refuses to build, which are packed by hand.
    """
    if code is None:
        return frame(Opcode.CLOSE, b"")
    try:
        payload = encode_close(code, reason)
    except FrameBuildError:
        payload = code.to_bytes(2, "big") + reason
    return frame(Opcode.CLOSE, payload)


def parse_client_frame(data: bytes) -> Tuple[bool, int, bytes]:
    """One masked client frame -> (fin, opcode, unmasked payload); checks it is masked."""
    byte0, byte1 = data[0], data[1]
    assert byte1 & 0x80, "client frames must be masked"
    length = byte1 & 0x7F
    pos = 2
    if length == 126:
        length = int.from_bytes(data[2:4], "big")
        pos = 4
    elif length == 127:
        length = int.from_bytes(data[2:10], "big")
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
    assert fin and opcode == Opcode.CLOSE and decode_close(payload)[0] == 1002
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
    assert decode_close(payload)[0] == 1007
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
    got = protocol.receive_data(frame(Opcode.CLOSE, encode_close(1001, "away")))
    assert kinds(got) == [events.Closing]
    assert not protocol.close_sent
    # A handler for Closing may still send (RFC 6455 5.5.1) ...
    reply = protocol.send_data(Opcode.TEXT, b"last words")
    assert parse_client_frame(reply)[2] == b"last words"
    # ... then the echo goes out, with the server's code.
    fin, opcode, payload = parse_client_frame(protocol.data_to_send())
    assert fin and opcode == Opcode.CLOSE and payload == encode_close(1001)
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
    protocol.receive_data(frame(Opcode.CLOSE, encode_close(1001)))
    ours = protocol.send_close(4000, "mine")
    assert parse_client_frame(ours)[2] == encode_close(4000, "mine")
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
        protocol.receive_data(frame(Opcode.CLOSE, encode_close(1000)))
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
    assert (opcode, payload) == (Opcode.CLOSE, encode_close(1001))
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
    protocol.receive_data(frame(Opcode.PING, b"p") + frame(Opcode.CLOSE, encode_close(1000)))
    # After the Ping's handlers: the pong only; the echo waits for Closing's.
    assert parse_client_frame(protocol.data_to_send(include_close=False))[1:] == (Opcode.PONG, b"p")
    assert not protocol.close_sent
    assert parse_client_frame(protocol.data_to_send())[1] == Opcode.CLOSE
    assert protocol.close_sent


def test_client_protocol_keeps_its_attributes_in_shared_keys() -> None:
    """At most 29 instance attributes, so CPython 3.11 keeps them in shared keys.

    From the 30th name on, an instance's attributes live in a plain dict and
    every ``self.x`` in the receive and send paths becomes a dict lookup
    (LOAD_ATTR_WITH_HINT instead of LOAD_ATTR_INSTANCE_VALUE): a cost per
    message for every client. A new attribute must replace an old one, or
    live elsewhere.
    """
    protocol = open_protocol()
    protocol.send_data(Opcode.TEXT, b"x")
    protocol.receive_data(frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.CONTINUATION, b"b"))
    assert len(vars(protocol)) <= 29, sorted(vars(protocol))


# -- the server side: the opening handshake ---------------------------------------------

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade_request(
    *extra: str,
    line: str = "GET /chat?room=1 HTTP/1.1",
    drop: Sequence[str] = (),
    key: str = RFC_KEY,
    version: str = "13",
) -> bytes:
    """A client's upgrade request (RFC 6455 section 4.1), without the headers in ``drop``."""
    headers = {
        "host": "Host: server.example.com",
        "upgrade": "Upgrade: websocket",
        "connection": "Connection: Upgrade",
        "sec-websocket-key": f"Sec-WebSocket-Key: {key}",
        "sec-websocket-version": f"Sec-WebSocket-Version: {version}",
    }
    lines = [line, *(value for name, value in headers.items() if name not in drop), *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a client sends it: masked."""
    return build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=True)


def parse_server_frames(data: bytes) -> List[Tuple[bool, int, bytes]]:
    """Unmasked server frames -> [(fin, opcode, payload)]; checks none is masked."""
    out = []
    while data:
        byte0, byte1 = data[0], data[1]
        assert not byte1 & 0x80, "server frames must not be masked"
        length, pos = byte1 & 0x7F, 2
        if length == 126:
            length, pos = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, pos = int.from_bytes(data[2:10], "big"), 10
        out.append((bool(byte0 & 0x80), byte0 & 0x0F, data[pos : pos + length]))
        data = data[pos + length :]
    return out


def parse_http(data: bytes) -> Tuple[int, Dict[str, str], bytes]:
    """An HTTP answer -> (status, headers by lower-case name, body)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for header in lines[1:]:
        name, _, value = header.partition(": ")
        headers[name.lower()] = value
    return int(lines[0].split(" ")[1]), headers, body


def open_server(*extra: str, **kwargs: object) -> ServerProtocol:
    server = ServerProtocol(**kwargs)  # type: ignore[arg-type]
    got = server.receive_data(upgrade_request(*extra))
    assert kinds(got) == [UpgradeRequest]
    assert server.accept() == []
    status, _, _ = parse_http(server.data_to_send())
    assert status == 101 and server.state is State.OPEN
    return server


def test_server_accepts_the_rfc_example() -> None:
    server = ServerProtocol()
    assert server.side is Side.SERVER and server.state is State.CONNECTING
    got = server.receive_data(upgrade_request("X-Extra: 1"))
    assert kinds(got) == [UpgradeRequest]
    request = got[0].request  # type: ignore[attr-defined]
    assert request is server.request
    assert (request.method, request.target) == ("GET", "/chat?room=1")
    assert request.get("x-extra") == "1"
    assert server.data_to_send() == b""  # nothing until the application answers
    assert server.state is State.CONNECTING
    assert server.accept() == []
    answer = server.data_to_send()
    assert answer == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n\r\n"
    )
    assert server.state is State.OPEN
    assert server.protocol is None and server.deflate is None
    assert not server.should_close


def test_server_request_byte_by_byte() -> None:
    server = ServerProtocol()
    data = upgrade_request()
    for i in range(len(data) - 1):
        assert server.receive_data(data[i : i + 1]) == [], i
    assert kinds(server.receive_data(data[-1:])) == [UpgradeRequest]


def test_server_chooses_a_subprotocol_and_adds_headers() -> None:
    server = ServerProtocol()
    server.receive_data(upgrade_request("Sec-WebSocket-Protocol: chat.v2, chat.v1"))
    with pytest.raises(ValueError, match="did not offer"):
        server.accept(subprotocol="chat.v3")
    with pytest.raises(ValueError):
        server.accept(subprotocol="chat.v1", headers=[("Sec-WebSocket-Accept", "forged")])
    assert server.state is State.CONNECTING  # a refused call changes nothing
    server.accept(subprotocol="chat.v1", headers=[("X-Served-By", "test")])
    status, headers, _ = parse_http(server.data_to_send())
    assert status == 101
    assert headers["sec-websocket-protocol"] == "chat.v1"
    assert headers["x-served-by"] == "test"
    assert server.protocol == "chat.v1"


def test_server_rejects_on_the_applications_word() -> None:
    server = ServerProtocol()
    server.receive_data(upgrade_request())
    server.reject(403, "not you", headers=[("X-Why", "test")])
    assert server.state is State.CLOSED and server.should_close
    status, headers, body = parse_http(server.data_to_send())
    assert (status, headers["connection"], headers["x-why"], body) == (
        403, "close", "test", b"not you\n")
    assert int(headers["content-length"]) == len(body)
    with pytest.raises(WebSocketUnavailable):
        server.accept()
    with pytest.raises(WebSocketUnavailable):
        server.reject(400)
    with pytest.raises(WebSocketUnavailable):
        server.send_data(Opcode.TEXT, b"x")
    assert server.receive_data(b"more") == []
    (end,) = server.finish()
    assert isinstance(end, events.Disconnected) and not end.graceful
    assert end.reason == "upgrade rejected with 403: not you"


def test_server_reject_needs_an_error_status() -> None:
    server = ServerProtocol()
    server.receive_data(upgrade_request())
    with pytest.raises(ValueError):
        server.reject(200)
    assert server.state is State.CONNECTING


def test_server_cannot_accept_before_a_request_or_send_before_accepting() -> None:
    server = ServerProtocol()
    with pytest.raises(WebSocketUnavailable):
        server.accept()
    server.receive_data(upgrade_request()[:20])
    with pytest.raises(WebSocketUnavailable):
        server.accept()
    server.receive_data(upgrade_request()[20:])
    with pytest.raises(WebSocketUnavailable, match="accept"):
        server.send_data(Opcode.TEXT, b"too early")


BAD_REQUESTS = {
    "post": (upgrade_request(line="POST /chat HTTP/1.1"), 400, "GET"),
    "http-1.0": (upgrade_request(line="GET /chat HTTP/1.0"), 400, "HTTP/1.1"),
    "http-0.9-ish": (upgrade_request(line="GET /chat HTTP/x.y"), 400, "HTTP/1.1"),
    "request-line": (upgrade_request(line="GET /chat"), 400, "request line"),
    "no-host": (upgrade_request(drop=["host"]), 400, "Host"),
    "no-upgrade": (upgrade_request(drop=["upgrade"]), 400, "Upgrade"),
    "upgrade-h2c": (upgrade_request("Upgrade: h2c", drop=["upgrade"]), 400, "Upgrade"),
    "no-connection": (upgrade_request(drop=["connection"]), 400, "Connection"),
    "connection-keep-alive": (
        upgrade_request("Connection: keep-alive", drop=["connection"]), 400, "Connection"),
    "no-key": (upgrade_request(drop=["sec-websocket-key"]), 400, "Key"),
    "short-key": (upgrade_request(key=base64.b64encode(b"x" * 15).decode()), 400, "Key"),
    "long-key": (upgrade_request(key=base64.b64encode(b"x" * 17).decode()), 400, "Key"),
    "key-not-base64": (upgrade_request(key="not base64 at all!!!!!!="), 400, "Key"),
    "two-keys": (upgrade_request(f"Sec-WebSocket-Key: {RFC_KEY}"), 400, "Key"),
    "no-version": (upgrade_request(drop=["sec-websocket-version"]), 426, "version 13"),
    "version-8": (upgrade_request(version="8"), 426, "version 13"),
    "malformed-header": (upgrade_request("no colon here"), 400, "header line"),
    "plain-http": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Upgrade: websocket"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_server_refuses_a_request_that_is_not_an_upgrade(name: str) -> None:
    """Every check of RFC 6455 section 4.2.1, answered by the protocol itself."""
    data, status, reason_part = BAD_REQUESTS[name]
    server = ServerProtocol()
    got = server.receive_data(data + client_frame(Opcode.TEXT, b"x"))
    assert kinds(got) == [events.ConnectFail]
    reason = got[0].reason  # type: ignore[attr-defined]
    assert reason.startswith(f"upgrade rejected with {status}: ") and reason_part in reason
    assert server.state is State.CLOSED and server.should_close
    answer_status, headers, body = parse_http(server.data_to_send())
    assert answer_status == status
    assert body.decode() == reason[len(f"upgrade rejected with {status}: "):] + "\n"
    if status == 426:  # section 4.4: the answer names the version the server speaks
        assert headers["sec-websocket-version"] == "13"
    assert server.receive_data(client_frame(Opcode.TEXT, b"y")) == []
    with pytest.raises(WebSocketUnavailable):
        server.accept()
    assert kinds(server.finish()) == [events.Disconnected]


def test_server_answers_at_once_what_is_not_http() -> None:
    """A TLS hello (a wss:// client at a ws:// server) gets its 400 before any header end."""
    server = ServerProtocol()
    got = server.receive_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert kinds(got) == [events.ConnectFail]
    status, _, body = parse_http(server.data_to_send())
    assert status == 400 and b"not an HTTP request" in body
    assert server.should_close


@pytest.mark.parametrize("whole", [True, False], ids=["one-buffer", "without-end"])
def test_server_caps_the_request_header_block(whole: bool) -> None:
    server = ServerProtocol(max_request_size=1024)
    data = upgrade_request(*(f"X-Filler-{i}: {'a' * 100}" for i in range(10)))
    if not whole:
        data = data[:1100]  # no blank line yet
    got = server.receive_data(data)
    assert kinds(got) == [events.ConnectFail]
    assert "exceeds 1024 bytes" in got[0].reason  # type: ignore[attr-defined]
    assert parse_http(server.data_to_send())[0] == 431


def test_server_eof_during_the_handshake() -> None:
    server = ServerProtocol()
    server.receive_data(upgrade_request()[:30])
    got = server.receive_eof()
    assert kinds(got) == [events.ConnectFail]
    assert got[0].reason == "client closed the connection during the handshake"  # type: ignore[attr-defined]
    assert server.should_close and server.data_to_send() == b""
    with pytest.raises(WebSocketUnavailable):
        server.accept()


def test_frames_behind_the_request_are_read_once_accepted() -> None:
    server = ServerProtocol()
    got = server.receive_data(upgrade_request() + client_frame(Opcode.TEXT, b"early"))
    assert kinds(got) == [UpgradeRequest]
    assert server.receive_data(client_frame(Opcode.PING, b"p")) == []  # kept for accept()
    got = server.accept()
    assert kinds(got) == [events.Text, events.Ping]
    assert got[0].text == "early"  # type: ignore[attr-defined]
    # The 101 answer first, then the Pong.
    data = server.data_to_send()
    answer, _, frames = data.partition(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert parse_server_frames(frames) == [(True, Opcode.PONG, b"p")]


# -- the server side: frames --------------------------------------------------------------


def test_server_requires_masked_frames() -> None:
    """RFC 6455 section 5.1: a server fails the connection on an unmasked frame (1002)."""
    server = open_server()
    got = server.receive_data(
        client_frame(Opcode.TEXT, b"fine") + build_frame(Opcode.TEXT, b"bare", mask=False)
    )
    assert kinds(got) == [events.Text, events.ProtocolError]
    error = got[1]
    assert isinstance(error, events.ProtocolError)
    assert (error.code, error.critical) == (1002, False)
    assert "masked" in error.error
    assert parse_server_frames(server.data_to_send()) == [
        (True, Opcode.CLOSE, encode_close(1002, error.error))]
    assert server.should_close
    (end,) = server.finish()
    assert isinstance(end, events.Disconnected) and not end.graceful


def test_server_frames_are_unmasked() -> None:
    server = open_server()
    sent = b"".join([
        server.send_data(Opcode.TEXT, "h\u00e9".encode()),
        server.send_data(Opcode.BINARY, b"\x00" * 70_000),
        server.send_ping(b"pi"),
        server.send_pong(b"po"),
        server.send_close(1000, "bye"),
    ])
    assert parse_server_frames(sent) == [
        (True, Opcode.TEXT, "h\u00e9".encode()),
        (True, Opcode.BINARY, b"\x00" * 70_000),
        (True, Opcode.PING, b"pi"),
        (True, Opcode.PONG, b"po"),
        (True, Opcode.CLOSE, encode_close(1000, "bye")),
    ]


def test_server_messages_and_fragments() -> None:
    server = open_server()
    got = server.receive_data(
        client_frame(Opcode.TEXT, b"caf", fin=False)
        + client_frame(Opcode.PING, b"mid")
        + client_frame(Opcode.CONTINUATION, "\u00e9".encode())
        + client_frame(Opcode.BINARY, b"\x01\x02")
        + client_frame(Opcode.PONG, b"back")
    )
    assert kinds(got) == [events.Ping, events.Text, events.Binary, events.Pong]
    assert got[1].text == "caf\u00e9"  # type: ignore[attr-defined]
    assert got[2].data == b"\x01\x02"  # type: ignore[attr-defined]
    assert parse_server_frames(server.data_to_send()) == [(True, Opcode.PONG, b"mid")]


def test_server_ping_without_auto_pong() -> None:
    server = open_server(auto_pong=False)
    assert kinds(server.receive_data(client_frame(Opcode.PING, b"x"))) == [events.Ping]
    assert server.data_to_send() == b""


def test_server_fails_invalid_utf8_with_1007() -> None:
    server = open_server()
    got = server.receive_data(client_frame(Opcode.TEXT, b"\xff"))
    assert kinds(got) == [events.ProtocolError]
    ((_, opcode, payload),) = parse_server_frames(server.data_to_send())
    assert opcode == Opcode.CLOSE and decode_close(payload)[0] == 1007


def test_server_size_cap() -> None:
    server = open_server(max_size=10)
    got = server.receive_data(client_frame(Opcode.BINARY, b"x" * 11))
    assert kinds(got) == [events.ProtocolError]
    assert got[0].code == 1009  # type: ignore[attr-defined]


def test_client_starts_the_close_and_the_server_closes_tcp_first() -> None:
    """RFC 6455 section 7.1.1: once both Closes crossed, the server drops TCP at once."""
    server = open_server()
    got = server.receive_data(client_frame(Opcode.CLOSE, encode_close(1001, "bye")))
    assert kinds(got) == [events.Closing]
    assert (got[0].code, got[0].reason) == (1001, "bye")  # type: ignore[attr-defined]
    assert not server.should_close  # the echo is not out yet
    assert parse_server_frames(server.data_to_send()) == [(True, Opcode.CLOSE, encode_close(1001))]
    assert server.handshake_complete and server.state is State.CLOSED
    assert server.should_close  # no end of stream needed: the server goes first
    (end,) = server.finish()
    assert isinstance(end, events.Disconnected) and end.graceful and end.reason == "closed"


def test_server_starts_the_close_and_closes_tcp_when_answered() -> None:
    server = open_server()
    server.send_close(4000, "done")
    assert server.state is State.CLOSING and not server.should_close
    got = server.receive_data(client_frame(Opcode.TEXT, b"late") + client_frame(
        Opcode.CLOSE, encode_close(4000)))
    assert kinds(got) == [events.Text, events.Closed]
    assert server.should_close and server.data_to_send() == b""
    assert server.receive_eof() == []
    (end,) = server.finish()
    assert isinstance(end, events.Disconnected) and end.graceful


def test_server_closing_handler_may_close_with_its_own_code() -> None:
    server = open_server()
    server.receive_data(client_frame(Opcode.CLOSE, encode_close(1000)))
    ours = server.send_close(4001, "mine")
    assert parse_server_frames(ours) == [(True, Opcode.CLOSE, encode_close(4001, "mine"))]
    assert server.should_close and server.data_to_send() == b""


@pytest.mark.parametrize(
    "setup, reason, graceful",
    [
        ("open", "client closed the connection without a close frame", False),
        ("our_close", "client closed the connection without answering our close", False),
    ],
)
def test_server_end_of_stream_reasons(setup: str, reason: str, graceful: bool) -> None:
    server = open_server()
    if setup == "our_close":
        server.send_close()
    assert server.receive_eof() == []
    assert server.should_close
    (end,) = server.finish()
    assert (end.reason, end.graceful) == (reason, graceful)  # type: ignore[attr-defined]


# -- the server side: permessage-deflate -------------------------------------------------


def offer_request(offer: str) -> bytes:
    return upgrade_request(f"Sec-WebSocket-Extensions: {offer}")


def agreed(server: ServerProtocol, offer: str) -> Tuple[Optional[str], Optional[Deflate]]:
    """Accept a request with ``offer``; the answer's extension header and the client's view."""
    assert kinds(server.receive_data(offer_request(offer))) == [UpgradeRequest]
    server.accept()
    response = Response(server.data_to_send())
    answer = response.get("sec-websocket-extensions")
    client = negotiate([PerMessageDeflate()], [answer], None) if answer else None
    return answer, client


def test_server_agrees_to_permessage_deflate_when_enabled() -> None:
    server = ServerProtocol(compress=True)
    answer, client = agreed(server, "permessage-deflate; client_max_window_bits")
    assert answer == "permessage-deflate"
    assert server.deflate is not None and server.deflate.server_side
    assert client is not None
    # A compressed message each way, checked with an independent Deflate.
    sent = client.encode(Frame(Opcode.TEXT, b"squeeze me " * 100))
    assert sent.rsv1
    got = server.receive_data(client_frame(Opcode.TEXT, bytes(sent.payload), rsv1=True))
    assert kinds(got) == [events.Text] and got[0].text == "squeeze me " * 100  # type: ignore[attr-defined]
    data = server.send_data(Opcode.BINARY, b"\x00" * 1000)
    assert data[0] & 0x40 and len(data) < 100  # RSV1: compressed
    ((fin, opcode, payload),) = parse_server_frames(data)
    assert client.decode(Frame(opcode, payload, fin, True)).payload == b"\x00" * 1000


def test_server_echoes_the_offers_parameters() -> None:
    server = ServerProtocol(compress=True)
    answer, _ = agreed(
        server,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=12",
    )
    assert answer == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=12"
    )
    deflate = server.deflate
    assert deflate is not None
    assert (deflate.server_no_context_takeover, deflate.client_no_context_takeover) == (True, True)
    assert (deflate.server_max_window_bits, deflate.client_max_window_bits) == (10, 12)


@pytest.mark.parametrize(
    "compress, offer",
    [
        (False, "permessage-deflate"),  # not enabled
        (True, "x-webkit-deflate-frame"),  # another extension
        (True, "permessage-deflate; server_max_window_bits=7"),  # out of range: skipped
        (True, "permessage-deflate; no_such_parameter"),
    ],
)
def test_server_goes_uncompressed_without_an_acceptable_offer(compress: bool, offer: str) -> None:
    server = ServerProtocol(compress=compress)
    answer, _ = agreed(server, offer)
    assert answer is None and server.deflate is None
    # RSV1 has no meaning then: a frame with it fails the connection.
    got = server.receive_data(client_frame(Opcode.TEXT, b"x", rsv1=True))
    assert kinds(got) == [events.ProtocolError]


def test_server_takes_a_later_acceptable_offer() -> None:
    server = ServerProtocol(compress=True)
    answer, _ = agreed(server, "permessage-deflate; server_max_window_bits=7, permessage-deflate")
    assert answer == "permessage-deflate"


# -- Protocol itself -------------------------------------------------------------------------


def test_a_bare_protocol_starts_open_on_either_side() -> None:
    """For a connection whose opening handshake was done elsewhere."""
    server = Protocol(Side.SERVER)
    assert (server.side, server.state) == (Side.SERVER, State.OPEN)
    got = server.receive_data(client_frame(Opcode.TEXT, b"hi"))
    assert kinds(got) == [events.Text]
    assert parse_server_frames(server.send_data(Opcode.TEXT, b"yo")) == [(True, Opcode.TEXT, b"yo")]
    client = Protocol(Side.CLIENT, deflate=Deflate())
    assert client.side is Side.CLIENT and client.deflate is not None
    compressed = Deflate(server_side=True).encode(Frame(Opcode.TEXT, b"zip " * 50))
    got = client.receive_data(
        build_frame(Opcode.TEXT, compressed.payload, rsv1=True, mask=False))
    assert kinds(got) == [events.Text] and got[0].text == "zip " * 50  # type: ignore[attr-defined]
    assert parse_client_frame(client.send_pong(b"p")) == (True, Opcode.PONG, b"p")
    with pytest.raises(TypeError):
        Protocol("server")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="other side"):
        Protocol(Side.SERVER, deflate=Deflate())
    with pytest.raises(ValueError, match="other side"):
        Protocol(Side.CLIENT, deflate=Deflate(server_side=True))


def test_client_protocol_is_the_client_side() -> None:
    protocol = open_protocol()
    assert protocol.side is Side.CLIENT
    assert isinstance(protocol, Protocol)


# -- a client and a server through byte pipes ------------------------------------------------


class Pipe:
    """A ClientProtocol and a ServerProtocol, each one's output fed to the other."""

    def __init__(self, compress: bool = False) -> None:
        offers = [PerMessageDeflate()] if compress else []
        self.client = ClientProtocol(
            parse_url("ws://example.com/chat"), protocols=["v2", "v1"], offers=offers)
        self.server = ServerProtocol(compress=compress)
        self.client_events: List[events.Event] = []
        self.server_events: List[events.Event] = []

    def to_server(self, data: bytes) -> None:
        if data:
            self.server_events.extend(self.server.receive_data(data))

    def to_client(self, data: bytes) -> None:
        if data:
            self.client_events.extend(self.client.receive_data(data))

    def pump(self) -> None:
        """Deliver what each side owes the other, until neither owes anything."""
        while self.client.replies_pending or self.server.replies_pending:
            self.to_server(self.client.data_to_send())
            self.to_client(self.server.data_to_send())

    def take(self, side: str) -> List[events.Event]:
        got = self.client_events if side == "client" else self.server_events
        taken = list(got)
        got.clear()
        return taken

    def open(self) -> None:
        self.to_server(self.client.request())
        (request,) = self.take("server")
        assert isinstance(request, UpgradeRequest)
        chosen = request.request.get_list("sec-websocket-protocol")[-1]
        assert self.server.accept(subprotocol=chosen) == []
        self.to_client(self.server.data_to_send())
        (ready,) = self.take("client")
        assert isinstance(ready, events.Ready)
        assert ready.protocol == self.server.protocol == "v1"


def texts(got: List[events.Event]) -> List[object]:
    return [e.text if isinstance(e, events.Text) else e.data  # type: ignore[attr-defined]
            for e in got]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
@pytest.mark.parametrize("closer", ["client", "server"])
def test_client_and_server_talk_through_byte_pipes(compress: bool, closer: str) -> None:
    pipe = Pipe(compress)
    pipe.open()
    client, server = pipe.client, pipe.server
    assert (client.deflate is not None) is compress and (server.deflate is not None) is compress
    big = "\u00e9t\u00e9 " * 20_000  # 140 KB of two-byte characters, compressible

    # Messages both ways: text, binary, large, empty.
    pipe.to_server(client.send_data(Opcode.TEXT, big.encode()))
    pipe.to_server(client.send_data(Opcode.BINARY, b"\x00\xff"))
    pipe.to_server(client.send_data(Opcode.BINARY, b""))
    assert texts(pipe.take("server")) == [big, b"\x00\xff", b""]
    pipe.to_client(server.send_data(Opcode.TEXT, b"hello"))
    pipe.to_client(server.send_data(Opcode.BINARY, bytes(range(256)) * 300))
    assert texts(pipe.take("client")) == ["hello", bytes(range(256)) * 300]

    # Fragmented messages both ways, a Ping between the fragments. Neither
    # protocol sends fragments itself: they are framed by hand (uncompressed,
    # which permessage-deflate allows for any message).
    pipe.to_server(build_frame(Opcode.TEXT, b"frag", fin=False, mask=True)
                   + client.send_ping(b"between")
                   + build_frame(Opcode.CONTINUATION, b"ment", mask=True))
    pipe.to_client(build_frame(Opcode.BINARY, b"\x01", fin=False, mask=False)
                   + build_frame(Opcode.CONTINUATION, b"\x02", mask=False))
    assert kinds(pipe.server_events) == [events.Ping, events.Text]
    assert texts(pipe.take("server")[1:]) == ["fragment"]
    assert texts(pipe.take("client")) == [b"\x01\x02"]

    # Ping/Pong: the server's automatic Pong reaches the client, and back.
    pipe.pump()
    assert [(type(e), e.data) for e in pipe.take("client")] == [  # type: ignore[attr-defined]
        (events.Pong, b"between")]
    pipe.to_client(server.send_ping(b"you?"))
    pipe.pump()
    assert kinds(pipe.take("client")) == [events.Ping]
    assert [(type(e), e.data) for e in pipe.take("server")] == [  # type: ignore[attr-defined]
        (events.Pong, b"you?")]

    # The close handshake, started by either side; the server closes TCP first.
    if closer == "client":
        pipe.to_server(client.send_close(1000, "bye"))
        (closing,) = pipe.take("server")
        assert isinstance(closing, events.Closing) and (closing.code, closing.reason) == (
            1000, "bye")
        pipe.pump()  # the server's echo
        (closed,) = pipe.take("client")
        assert isinstance(closed, events.Closed) and closed.code == 1000
    else:
        pipe.to_client(server.send_close(1001, "going away"))
        (closing,) = pipe.take("client")
        assert isinstance(closing, events.Closing) and closing.code == 1001
        pipe.pump()  # the client's echo
        (closed,) = pipe.take("server")
        assert isinstance(closed, events.Closed) and closed.code == 1001
    assert client.handshake_complete and server.handshake_complete
    assert server.should_close and not client.should_close
    # The server's driver closes TCP: the client reads its end of stream.
    assert client.receive_eof() == []
    assert client.should_close
    for side in (client, server):
        (end,) = side.finish()
        assert isinstance(end, events.Disconnected) and end.graceful


def test_client_and_server_pipe_a_violation() -> None:
    """A client that breaks the protocol gets the server's failing Close, and vice versa."""
    pipe = Pipe()
    pipe.open()
    pipe.to_server(build_frame(Opcode.TEXT, b"\xc3\x28", mask=True))  # invalid UTF-8
    (error,) = pipe.take("server")
    assert isinstance(error, events.ProtocolError) and error.code == 1007
    pipe.pump()
    (closing,) = pipe.take("client")
    assert isinstance(closing, events.Closing) and closing.code == 1007
    assert pipe.server.should_close and pipe.server.failure is not None
    # The client's echo arrives after the server gave up: nothing more happens.
    assert pipe.client.data_to_send() == b""  # echoed while pumping
    assert pipe.take("server") == []
