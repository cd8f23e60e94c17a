"""permessage-deflate (RFC 7692): offers, negotiation, the frame transforms, and a real server."""

from __future__ import annotations

import os
import tracemalloc
import zlib
from typing import Any, List, Optional

import pytest
from core_helpers import collect
from peers.ws_server import deflate
from test_protocol import frame, make_protocol, parse_client_frame, response_for

from lomond import PerMessageDeflate, WebSocket, events
from lomond.compression import (
    UNCOMPRESSED_FALLBACK_SIZE,
    Deflate,
    build_offer_header,
    negotiate,
    negotiate_server,
    offers_from_option,
    parse_extensions,
)
from lomond.errors import CompressionParameterError, PayloadTooLarge, ProtocolViolation
from lomond.frame import Frame, Opcode

# -- helpers ------------------------------------------------------------------


class ServerDeflater:
    """What a server does to compress (RFC 7692 section 7.2.1), for feeding the client."""

    def __init__(self, bits: int = 15, no_context: bool = False) -> None:
        self.bits = bits
        self.no_context = no_context
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)

    def compress(self, data: bytes) -> bytes:
        if self.no_context:
            self._compressor = zlib.compressobj(6, zlib.DEFLATED, -self.bits)
        out = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


def inflate_message(data: bytes, inflater: Optional[Any] = None) -> bytes:
    """What a server does to decompress one client message (RFC 7692 section 7.2.2)."""
    inflater = inflater or zlib.decompressobj(-15)
    return inflater.decompress(data + b"\x00\x00\xff\xff")  # type: ignore[no-any-return]


def agreed(*values: str, offers: Optional[List[PerMessageDeflate]] = None,
           max_size: Optional[int] = 1 << 20) -> Deflate:
    result = negotiate(offers or [PerMessageDeflate()], list(values), max_size)
    assert result is not None
    return result


# -- offers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "offer, header",
    [
        (PerMessageDeflate(), "permessage-deflate; client_max_window_bits"),
        (PerMessageDeflate(client_max_window_bits=None), "permessage-deflate"),
        (PerMessageDeflate(client_max_window_bits=False), "permessage-deflate"),
        (
            PerMessageDeflate(
                client_no_context_takeover=True,
                server_no_context_takeover=True,
                client_max_window_bits=9,
                server_max_window_bits=10,
            ),
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover; "
            "client_max_window_bits=9; server_max_window_bits=10",
        ),
    ],
)
def test_offer_header(offer: PerMessageDeflate, header: str) -> None:
    assert offer.header_value() == header


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_max_window_bits": 7},
        {"client_max_window_bits": 16},
        {"client_max_window_bits": "15"},
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"server_max_window_bits": True},
    ],
)
def test_offer_rejects_bad_window_bits(kwargs: Any) -> None:
    with pytest.raises(ValueError):
        PerMessageDeflate(**kwargs)


def test_offers_from_option() -> None:
    assert offers_from_option(False) == []
    assert offers_from_option(None) == []
    assert offers_from_option(True) == [PerMessageDeflate()]
    one = PerMessageDeflate(server_max_window_bits=12)
    two = PerMessageDeflate(client_no_context_takeover=True)
    assert offers_from_option(one) == [one]
    assert offers_from_option([one, two]) == [one, two]
    with pytest.raises(TypeError):
        offers_from_option("deflate")
    with pytest.raises(TypeError):
        offers_from_option([one, "deflate"])


def test_several_offers_in_one_header() -> None:
    header = build_offer_header([PerMessageDeflate(server_max_window_bits=10), PerMessageDeflate()])
    assert header == (
        "permessage-deflate; client_max_window_bits; server_max_window_bits=10, "
        "permessage-deflate; client_max_window_bits"
    )


# -- negotiation --------------------------------------------------------------


def test_parse_extensions_quoted_values_and_case() -> None:
    parsed = parse_extensions(['Permessage-Deflate; Client_Max_Window_Bits="10"; x'])
    assert parsed == [("permessage-deflate", [("client_max_window_bits", "10"), ("x", None)])]


def test_no_extension_header_means_no_compression() -> None:
    assert negotiate([PerMessageDeflate()], [], 100) is None
    assert negotiate([PerMessageDeflate()], [" "], 100) is None


def test_defaults_agreed() -> None:
    result = agreed("permessage-deflate")
    assert (result.client_no_context_takeover, result.server_no_context_takeover) == (False, False)
    assert (result.client_max_window_bits, result.server_max_window_bits) == (15, 15)
    assert result.max_size == 1 << 20


def test_server_parameters_agreed() -> None:
    result = agreed(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=9"
    )
    assert result.server_no_context_takeover and result.client_no_context_takeover
    assert (result.client_max_window_bits, result.server_max_window_bits) == (9, 10)


def test_client_no_context_takeover_offered_is_kept() -> None:
    result = agreed("permessage-deflate",
                    offers=[PerMessageDeflate(client_no_context_takeover=True)])
    assert result.client_no_context_takeover


@pytest.mark.parametrize(
    "value, offer, message",
    [
        ("permessage-deflate; foo", PerMessageDeflate(), "unknown"),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover",
         PerMessageDeflate(), "duplicate"),
        ("permessage-deflate; server_no_context_takeover=1", PerMessageDeflate(), "value"),
        ("permessage-deflate; client_no_context_takeover=x", PerMessageDeflate(), "value"),
        ("permessage-deflate; server_max_window_bits", PerMessageDeflate(), "needs a value"),
        ("permessage-deflate; server_max_window_bits=7", PerMessageDeflate(), "8 to 15"),
        ("permessage-deflate; server_max_window_bits=16", PerMessageDeflate(), "8 to 15"),
        ("permessage-deflate; server_max_window_bits=0x9", PerMessageDeflate(), "8 to 15"),
        ("permessage-deflate; client_max_window_bits=16", PerMessageDeflate(), "8 to 15"),
        ("permessage-deflate; client_max_window_bits", PerMessageDeflate(), "needs a value"),
        ("permessage-deflate; client_max_window_bits=10",
         PerMessageDeflate(client_max_window_bits=None), "not offered"),
        ("permessage-deflate; client_max_window_bits=12",
         PerMessageDeflate(client_max_window_bits=10), "exceeds"),
        ("permessage-deflate; server_max_window_bits=12",
         PerMessageDeflate(server_max_window_bits=10), "exceeds"),
        ("permessage-deflate", PerMessageDeflate(server_max_window_bits=10), "ignored"),
        ("permessage-deflate", PerMessageDeflate(server_no_context_takeover=True), "ignored"),
        ("x-webkit-deflate-frame", PerMessageDeflate(), "not offered"),
        ("permessage-deflate, permessage-deflate", PerMessageDeflate(), "more than one"),
        ('permessage-deflate; client_max_window_bits="10', PerMessageDeflate(), "unterminated"),
    ],
)
def test_invalid_responses_rejected(value: str, offer: PerMessageDeflate, message: str) -> None:
    with pytest.raises(CompressionParameterError, match=message):
        negotiate([offer], [value], 1000)


def test_response_matched_against_the_next_offer() -> None:
    offers = [PerMessageDeflate(server_no_context_takeover=True), PerMessageDeflate()]
    result = agreed("permessage-deflate", offers=offers)
    assert not result.server_no_context_takeover


def test_unoffered_extension_rejects_the_handshake() -> None:
    protocol = make_protocol()
    got = protocol.receive_data(
        response_for(protocol, extra=["Sec-WebSocket-Extensions: permessage-deflate"])
    )
    assert [type(e) for e in got] == [events.Rejected]
    assert "not offered" in got[0].reason  # type: ignore[attr-defined]


def test_bad_parameter_rejects_the_handshake_with_the_reason() -> None:
    protocol = make_protocol(offers=[PerMessageDeflate()])
    got = protocol.receive_data(
        response_for(protocol, extra=["Sec-WebSocket-Extensions: permessage-deflate; bogus"])
    )
    assert [type(e) for e in got] == [events.Rejected]
    assert "bogus" in got[0].reason  # type: ignore[attr-defined]


# -- decoding -----------------------------------------------------------------


def test_inflates_messages_with_context_takeover() -> None:
    deflater = ServerDeflater()
    decoder = agreed("permessage-deflate")
    sizes = []
    for _ in range(3):
        data = deflater.compress(b"hello hello hello")
        sizes.append(len(data))
        out = decoder.decode(Frame(Opcode.TEXT, data, rsv1=True))
        assert (out.payload, out.rsv1, out.fin) == (b"hello hello hello", False, True)
    # The later messages refer back to the first: context takeover really happened.
    assert sizes[1] < sizes[0]


def test_server_no_context_takeover_resets_the_inflater() -> None:
    decoder = agreed("permessage-deflate; server_no_context_takeover")
    deflater = ServerDeflater(no_context=True)
    for _ in range(3):
        out = decoder.decode(Frame(Opcode.BINARY, deflater.compress(b"abcabcabc"), rsv1=True))
        assert out.payload == b"abcabcabc"


def test_fragmented_compressed_message() -> None:
    data = ServerDeflater().compress(b"x" * 1000 + b"y" * 1000)
    decoder = agreed("permessage-deflate")
    first = decoder.decode(Frame(Opcode.TEXT, data[:5], fin=False, rsv1=True))
    middle = decoder.decode(Frame(Opcode.CONTINUATION, data[5:-3], fin=False))
    last = decoder.decode(Frame(Opcode.CONTINUATION, data[-3:], fin=True))
    assert first.payload + middle.payload + last.payload == b"x" * 1000 + b"y" * 1000
    assert (first.opcode, last.opcode, last.fin) == (Opcode.TEXT, Opcode.CONTINUATION, True)


def test_uncompressed_messages_pass_through() -> None:
    decoder = agreed("permessage-deflate")
    plain = Frame(Opcode.TEXT, b"plain", fin=False)
    assert decoder.decode(plain) is plain
    tail = Frame(Opcode.CONTINUATION, b" text")
    assert decoder.decode(tail) is tail
    ping = Frame(Opcode.PING, b"p")
    assert decoder.decode(ping) is ping


@pytest.mark.parametrize("opcode", [Opcode.CONTINUATION, Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_rsv1_on_continuation_or_control_is_a_protocol_error(opcode: int) -> None:
    decoder = agreed("permessage-deflate")
    with pytest.raises(ProtocolViolation, match="RSV1") as info:
        decoder.decode(Frame(opcode, b"", rsv1=True))
    assert info.value.code == 1002


def test_invalid_deflate_data_is_a_protocol_error() -> None:
    decoder = agreed("permessage-deflate")
    with pytest.raises(ProtocolViolation, match="invalid compressed data"):
        decoder.decode(Frame(Opcode.BINARY, b"\xff\xff\xff\xff", rsv1=True))


def test_bomb_stops_at_max_size_without_inflating_it_all() -> None:
    bomb = ServerDeflater().compress(b"\0" * (64 << 20))  # 64 MiB of zeros, ~64 KiB compressed
    assert len(bomb) < 128 << 10
    decoder = agreed("permessage-deflate", max_size=1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as info:
            decoder.decode(Frame(Opcode.BINARY, bomb, rsv1=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == 1009
    assert peak < 8 << 20, f"inflating the bomb allocated {peak} bytes"


def test_max_size_counts_the_whole_fragmented_message() -> None:
    data = ServerDeflater().compress(b"a" * 3000)
    decoder = agreed("permessage-deflate", max_size=2000)
    decoder.decode(Frame(Opcode.BINARY, data[:4], fin=False, rsv1=True))
    with pytest.raises(PayloadTooLarge):
        decoder.decode(Frame(Opcode.CONTINUATION, data[4:], fin=True))


def test_exactly_max_size_is_allowed() -> None:
    decoder = agreed("permessage-deflate", max_size=1000)
    out = decoder.decode(Frame(Opcode.BINARY, ServerDeflater().compress(b"q" * 1000), rsv1=True))
    assert out.payload == b"q" * 1000


# -- encoding -----------------------------------------------------------------


def test_encode_sets_rsv1_and_strips_the_tail() -> None:
    encoder = agreed("permessage-deflate")
    inflater = zlib.decompressobj(-15)
    sizes = []
    for _ in range(3):
        out = encoder.encode(Frame(Opcode.TEXT, b"repeat me " * 20))
        assert out.rsv1 and out.opcode == Opcode.TEXT
        assert not out.payload.endswith(b"\x00\x00\xff\xff")
        sizes.append(len(out.payload))
        assert inflate_message(out.payload, inflater) == b"repeat me " * 20
    assert sizes[1] < sizes[0]  # context takeover on our side too


def test_encode_without_context_takeover_is_independent_per_message() -> None:
    encoder = agreed("permessage-deflate; client_no_context_takeover")
    for _ in range(3):
        out = encoder.encode(Frame(Opcode.BINARY, b"independent " * 10))
        # A fresh inflater decodes each message: no reference to earlier ones.
        assert inflate_message(out.payload) == b"independent " * 10


def test_encode_respects_a_small_client_window() -> None:
    encoder = agreed("permessage-deflate; client_max_window_bits=9")
    # A period under 250 bytes: zlib's matches reach at most the window
    # (512 bytes) less 262 bytes of lookahead.
    payload = bytes(range(200)) * 50
    out = encoder.encode(Frame(Opcode.BINARY, payload))
    assert out.rsv1 and len(out.payload) < len(payload)
    assert zlib.decompressobj(-9).decompress(out.payload + b"\x00\x00\xff\xff") == payload


def test_window_of_8_bits_sends_uncompressed() -> None:
    encoder = agreed("permessage-deflate; client_max_window_bits=8")
    message = Frame(Opcode.TEXT, b"zlib cannot make 256-byte windows")
    assert encoder.encode(message) is message


def test_empty_message_round_trips() -> None:
    encoder = agreed("permessage-deflate")
    out = encoder.encode(Frame(Opcode.TEXT, b""))
    assert inflate_message(out.payload) == b""


# -- through the protocol layer -----------------------------------------------


def open_deflate_protocol(extension: str = "permessage-deflate", **kwargs: Any) -> Any:
    protocol = make_protocol(offers=[PerMessageDeflate()], **kwargs)
    got = protocol.receive_data(
        response_for(protocol, extra=[f"Sec-WebSocket-Extensions: {extension}"])
    )
    assert [type(e) for e in got] == [events.Ready]
    assert got[0].extensions == frozenset(["permessage-deflate"])  # type: ignore[attr-defined]
    return protocol


def compressed_frame(opcode: int, data: bytes, fin: bool = True, rsv1: bool = True) -> bytes:
    raw = bytearray(frame(opcode, data, fin=fin))
    if rsv1:
        raw[0] |= 0x40
    return bytes(raw)


def test_protocol_inflates_text() -> None:
    protocol = open_deflate_protocol()
    data = ServerDeflater().compress("naïve café".encode())
    got = protocol.receive_data(compressed_frame(Opcode.TEXT, data))
    assert [(type(e), getattr(e, "text", None)) for e in got] == [(events.Text, "naïve café")]


def test_protocol_rejects_invalid_utf8_inside_compressed_fragments() -> None:
    protocol = open_deflate_protocol()
    data = ServerDeflater().compress(b"ok \xff and more")
    got = protocol.receive_data(
        compressed_frame(Opcode.TEXT, data[:3], fin=False)
        + compressed_frame(Opcode.CONTINUATION, data[3:], rsv1=False)
    )
    assert [type(e) for e in got] == [events.ProtocolError]
    assert got[0].code == 1007  # type: ignore[attr-defined]


def test_protocol_compresses_outgoing_and_honours_the_per_message_flag() -> None:
    protocol = open_deflate_protocol()
    raw = protocol.send_data(Opcode.TEXT, b"squeeze " * 50)
    assert raw[0] & 0x40  # RSV1: compressed
    _, _, payload = parse_client_frame(raw)
    assert inflate_message(payload) == b"squeeze " * 50
    plain = protocol.send_data(Opcode.TEXT, b"as is", compress=False)
    assert not plain[0] & 0x40
    assert parse_client_frame(plain)[2] == b"as is"


def test_protocol_bomb_closes_with_1009() -> None:
    protocol = open_deflate_protocol(max_size=1 << 16)
    bomb = ServerDeflater().compress(b"\0" * (1 << 22))
    got = protocol.receive_data(compressed_frame(Opcode.BINARY, bomb))
    assert [type(e) for e in got] == [events.ProtocolError]
    assert got[0].code == 1009  # type: ignore[attr-defined]


# -- incompressible messages go out uncompressed -------------------------------


def peer_inflate(frames: List[Frame], inflater: Any) -> List[bytes]:
    """What the peer makes of our frames: RSV1 ones inflated with its one inflater."""
    return [
        inflater.decompress(bytes(f.payload) + b"\x00\x00\xff\xff") if f.rsv1 else bytes(f.payload)
        for f in frames
    ]


@pytest.mark.parametrize("no_context", [False, True])
def test_incompressible_message_goes_out_uncompressed_and_the_stream_stays_in_step(
    no_context: bool,
) -> None:
    encoder = Deflate(client_no_context_takeover=no_context)
    noise = os.urandom(UNCOMPRESSED_FALLBACK_SIZE * 4)
    text = b"the same words again and again " * 200
    messages = [text, noise, text, noise[:5000] + text, text]
    frames = [encoder.encode(Frame(Opcode.BINARY, m)) for m in messages]
    assert [f.rsv1 for f in frames] == [True, False, True, True, True]
    assert frames[1].payload == noise  # as it was, not bigger
    # The peer never sees the discarded output: its inflater must still agree
    # with our compressor for every later message (back references included).
    assert peer_inflate(frames, zlib.decompressobj(-15)) == messages
    assert len(frames[2].payload) < 100  # context takeover still pays off


@pytest.mark.parametrize("no_context", [False, True])
def test_small_incompressible_message_stays_compressed(no_context: bool) -> None:
    """Below the fallback size the output is kept (a few bytes bigger at most)."""
    encoder = Deflate(client_no_context_takeover=no_context)
    small = os.urandom(100)
    frames = [encoder.encode(Frame(Opcode.BINARY, m)) for m in [small, b"abc" * 50, small]]
    assert all(f.rsv1 for f in frames)
    assert peer_inflate(frames, zlib.decompressobj(-15)) == [small, b"abc" * 50, small]


# -- the server side of the negotiation -------------------------------------------


def test_server_negotiation_defaults() -> None:
    deflate, answer = negotiate_server(["permessage-deflate; client_max_window_bits"])
    assert answer == "permessage-deflate"
    assert deflate is not None and deflate.server_side
    assert negotiate_server([]) == (None, None)
    assert negotiate_server(["x-webkit-deflate-frame"]) == (None, None)


def test_server_negotiation_honours_requests_and_skips_bad_offers() -> None:
    deflate, answer = negotiate_server([
        "permessage-deflate; server_max_window_bits=99, "
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=11"
    ])
    assert answer == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=11"
    )
    assert deflate is not None
    # The answer is one a lomond client accepts, with the same settings.
    client = negotiate([PerMessageDeflate(server_no_context_takeover=True,
                                          client_no_context_takeover=True,
                                          server_max_window_bits=10,
                                          client_max_window_bits=11)], [answer], None)
    assert client is not None
    for settings in (deflate, client):
        assert (settings.server_no_context_takeover, settings.client_no_context_takeover,
                settings.server_max_window_bits, settings.client_max_window_bits) == (
                    True, True, 10, 11)


def test_server_side_deflate_round_trips_with_a_client_side_one() -> None:
    server, answer = negotiate_server(["permessage-deflate; server_no_context_takeover"])
    assert server is not None and answer is not None
    client = negotiate([PerMessageDeflate(server_no_context_takeover=True)], [answer], None)
    assert client is not None
    for message in [b"ping pong " * 100, b"ping pong " * 100, b"x"]:
        to_client = server.encode(Frame(Opcode.BINARY, message))
        assert to_client.rsv1
        assert client.decode(to_client).payload == message
        to_server = client.encode(Frame(Opcode.TEXT, message))
        assert server.decode(to_server).payload == message


# -- against a real server (the websockets package) ---------------------------


def echo_run(url: str, messages: List[Any], **websocket_options: Any) -> Any:
    websocket = WebSocket(url, **websocket_options)
    received: List[Any] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            for message in messages:
                if isinstance(message, str):
                    websocket.send_text(message)
                else:
                    websocket.send_binary(message)
        elif isinstance(event, (events.Text, events.Binary)):
            received.append(event.text if isinstance(event, events.Text) else event.data)
            if len(received) == len(messages):
                websocket.close()

    run = collect(websocket, on_event)
    return websocket, run, received


MESSAGES = ["hello", "héllo wörld " * 200, b"\x00\x01" * 5000, "", b""]


def test_real_server_default_offer(ws_server: Any) -> None:
    websocket, run, received = echo_run(ws_server.url_for("/echo"), MESSAGES, compress=True)
    assert received == MESSAGES
    assert run.first(events.Ready).extensions == frozenset(["permessage-deflate"])
    assert websocket.supports_compression
    assert "permessage-deflate" in ws_server.last.extensions
    assert ws_server.last.received == MESSAGES


@pytest.mark.parametrize(
    "server_params, offer",
    [
        ({"server_no_context_takeover": True}, PerMessageDeflate()),
        ({"client_no_context_takeover": True}, PerMessageDeflate()),
        ({"server_max_window_bits": 9}, PerMessageDeflate()),
        ({"client_max_window_bits": 9}, PerMessageDeflate()),
        ({"client_max_window_bits": 8}, PerMessageDeflate()),
        ({"server_max_window_bits": 10},
         PerMessageDeflate(server_max_window_bits=10, client_no_context_takeover=True)),
        ({"server_no_context_takeover": True, "client_no_context_takeover": True,
          "server_max_window_bits": 10, "client_max_window_bits": 11},
         PerMessageDeflate(server_no_context_takeover=True, client_max_window_bits=12)),
    ],
)
def test_real_server_forced_parameters(
    ws_server_factory: Any, server_params: Any, offer: PerMessageDeflate
) -> None:
    server = ws_server_factory(extensions=[deflate(**server_params)])
    messages = ["compress me " * 300] * 3 + [bytes(range(256)) * 64]
    websocket, _run, received = echo_run(server.url_for("/echo"), messages, compress=offer)
    assert received == messages
    assert websocket.supports_compression
    assert server.last.received == messages


def test_real_server_without_compression(ws_server_factory: Any) -> None:
    server = ws_server_factory(compression=None)
    websocket, run, received = echo_run(server.url_for("/echo"), ["x"], compress=True)
    assert received == ["x"]
    assert not websocket.supports_compression
    assert run.first(events.Ready).extensions == frozenset()


def test_real_server_message_over_max_size_after_inflating(ws_server: Any) -> None:
    big = "z" * (2 << 20)  # compresses to a few KiB, inflates to 2 MiB
    websocket = WebSocket(ws_server.url_for("/echo"), compress=True, max_size=1 << 20)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_text(big)

    run = collect(websocket, on_event)
    assert run.first(events.ProtocolError).code == 1009
    assert not run.of(events.Text)
    assert ws_server.last.closed.wait(5)
    assert ws_server.last.close_code == 1009


def test_real_server_message_of_exactly_max_size_after_inflating(ws_server: Any) -> None:
    """Random data compresses to more than it was: max_size is about the inflated size."""
    limit = 1 << 20
    exact = os.urandom(limit)
    _websocket, run, received = echo_run(
        ws_server.url_for("/echo"), [exact], compress=True, max_size=limit
    )
    assert received == [exact]
    assert not run.of(events.ProtocolError)


def test_real_server_message_of_max_size_plus_one_fails_with_1009(ws_server: Any) -> None:
    limit = 1 << 20
    _websocket, run, received = echo_run(
        ws_server.url_for("/echo"), [os.urandom(limit + 1)], compress=True, max_size=limit
    )
    assert received == []
    assert run.first(events.ProtocolError).code == 1009
    assert ws_server.last.closed.wait(5)
    assert ws_server.last.close_code == 1009


@pytest.mark.parametrize("server_params", [{}, {"client_no_context_takeover": True}])
def test_real_server_incompressible_then_compressible_messages(
    ws_server_factory: Any, server_params: Any
) -> None:
    server = ws_server_factory(extensions=[deflate(**server_params)])
    words = "context takeover keeps working " * 100
    messages: List[Any] = [
        words, os.urandom(100_000), words,
        os.urandom(UNCOMPRESSED_FALLBACK_SIZE) + words.encode(), words,
        os.urandom(50), words,
    ]
    _websocket, _run, received = echo_run(server.url_for("/echo"), messages, compress=True)
    assert received == messages
    assert server.last.received == messages
