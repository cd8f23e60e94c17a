"""Property-based tests (hypothesis) of the parsers that read untrusted bytes.

For arbitrary input fed in arbitrary chunks only documented outcomes may come
out: events from :mod:`lomond.events`, never an exception; and a valid stream
split at any points parses exactly as when fed whole.
"""

from __future__ import annotations

import zlib
from typing import Any, List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lomond import events
from lomond.compression import PerMessageDeflate, negotiate, parse_extensions
from lomond.errors import CompressionParameterError, HandshakeError
from lomond.frame import Opcode, build_frame
from lomond.handshake import accept_for, parse_url
from lomond.protocol import ClientProtocol
from lomond.reader import read_frames
from lomond.response import Response

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, cuts: List[int]) -> List[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted)."""
    if not data:
        return [data]
    points = sorted({c % len(data) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def open_protocol(max_size: int = 1 << 20) -> ClientProtocol:
    protocol = ClientProtocol(parse_url("ws://example.com/"), max_size=max_size)
    protocol.request()
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(protocol.key)}\r\n\r\n"
    ).encode()
    assert [type(e) for e in protocol.receive_data(response)] == [events.Ready]
    return protocol


ALLOWED = (
    events.Text, events.Binary, events.Ping, events.Pong, events.Closing,
    events.ProtocolError,
)


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_give_only_documented_events(data: bytes, cuts: List[int]) -> None:
    protocol = open_protocol()
    out: List[events.Event] = []
    for chunk in split(data, cuts):
        out.extend(protocol.receive_data(chunk))
    assert all(isinstance(e, ALLOWED) for e in out)
    # Nothing follows a ProtocolError or a Closing: the stream is over.
    for index, event in enumerate(out):
        if isinstance(event, (events.ProtocolError, events.Closing)):
            assert index == len(out) - 1
    errors = [e for e in out if isinstance(e, events.ProtocolError)]
    for error in errors:
        assert error.code in (1002, 1007, 1009)


frame_specs = st.lists(
    st.one_of(
        st.tuples(st.just(int(Opcode.TEXT)), st.text(max_size=300).map(str.encode)),
        st.tuples(st.just(int(Opcode.BINARY)), st.binary(max_size=70_000)),
        st.tuples(st.just(int(Opcode.PING)), st.binary(max_size=125)),
        st.tuples(st.just(int(Opcode.PONG)), st.binary(max_size=125)),
    ),
    max_size=12,
)


def fragmented(opcode: int, payload: bytes, pieces: int) -> bytes:
    """A message as ``pieces`` frames (data opcodes only)."""
    if opcode >= 0x8 or pieces <= 1 or len(payload) < pieces:
        return build_frame(opcode, payload, mask=False)
    step = len(payload) // pieces
    parts = [payload[i * step:(i + 1) * step] for i in range(pieces - 1)]
    parts.append(payload[(pieces - 1) * step:])
    frames = [build_frame(opcode, parts[0], fin=False, mask=False)]
    frames += [build_frame(Opcode.CONTINUATION, p, fin=False, mask=False) for p in parts[1:-1]]
    frames.append(build_frame(Opcode.CONTINUATION, parts[-1], fin=True, mask=False))
    return b"".join(frames)


def summary(out: List[events.Event]) -> List[Tuple[str, object]]:
    result: List[Tuple[str, object]] = []
    for event in out:
        value = getattr(event, "text", None)
        if value is None:
            value = getattr(event, "data", None)
        result.append((event.name, value))
    return result


@FUZZ
@given(frame_specs, st.integers(min_value=1, max_value=4),
       st.lists(st.integers(min_value=0), max_size=30))
def test_valid_stream_split_anywhere_parses_the_same(
    specs: List[Tuple[int, bytes]], pieces: int, cuts: List[int]
) -> None:
    stream = b"".join(fragmented(op, payload, pieces) for op, payload in specs)
    whole = open_protocol().receive_data(stream)
    protocol = open_protocol()
    chunked: List[events.Event] = []
    for chunk in split(stream, cuts):
        chunked.extend(protocol.receive_data(chunk))
    assert summary(chunked) == summary(whole)
    expected = [
        ({1: "text", 2: "binary", 9: "ping", 10: "pong"}[op],
         payload.decode() if op == 1 else payload)
        for op, payload in specs
    ]
    assert summary(whole) == expected


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(min_value=0), max_size=10))
def test_reader_never_raises(data: bytes, cuts: List[int]) -> None:
    reader = read_frames(max_size=1 << 16)
    for chunk in split(data, cuts):
        try:
            frames, error = reader.send(chunk)
        except StopIteration:
            break
        assert all(f.opcode in (0, 1, 2, 8, 9, 10) for f in frames)
        if error is not None:
            assert error.code in (1002, 1009)


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(min_value=0), max_size=10))
def test_handshake_response_bytes_give_only_documented_events(
    data: bytes, cuts: List[int]
) -> None:
    protocol = ClientProtocol(parse_url("ws://example.com/"), offers=[PerMessageDeflate()])
    protocol.request()
    out: List[events.Event] = []
    for chunk in split(data + b"\r\n\r\n", cuts):
        out.extend(protocol.receive_data(chunk))
        if out:
            break
    assert len(out) >= 1
    assert isinstance(out[0], (events.ConnectFail, events.Rejected, events.Ready))


@FUZZ
@given(st.binary(max_size=1024))
def test_response_parser_raises_only_handshake_error(data: bytes) -> None:
    try:
        response = Response(data)
    except HandshakeError:
        return
    assert isinstance(response.status_code, int)
    assert isinstance(response.get_list("connection"), list)


header_text = st.text(
    alphabet=st.sampled_from(list("permssage-deflt_clinoxwbv=0123456789;, \"\t")), max_size=120
)


@FUZZ
@given(st.lists(header_text, min_size=1, max_size=3))
def test_extension_header_parser_raises_only_compression_errors(values: List[str]) -> None:
    try:
        agreement = negotiate([PerMessageDeflate()], values, 1 << 20)
    except CompressionParameterError:
        return
    if agreement is not None:
        assert 8 <= agreement.server_max_window_bits <= 15
        assert 8 <= agreement.client_max_window_bits <= 15


# -- issue 7: more parsers, more inputs -------------------------------------------------

# A smaller budget for the additions keeps the whole module well under 20 s.
FUZZ_MORE = settings(max_examples=200, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])

offers_strategy = st.lists(
    st.builds(
        PerMessageDeflate,
        client_no_context_takeover=st.booleans(),
        server_no_context_takeover=st.booleans(),
        client_max_window_bits=st.one_of(st.none(), st.booleans(), st.integers(8, 15)),
        server_max_window_bits=st.one_of(st.none(), st.integers(8, 15)),
    ),
    min_size=1,
    max_size=3,
)


@FUZZ_MORE
@given(st.lists(st.text(max_size=200), min_size=0, max_size=4))
def test_parse_extensions_any_text_raises_only_compression_errors(values: List[str]) -> None:
    try:
        parsed = parse_extensions(values)
    except CompressionParameterError:
        return
    for name, params in parsed:
        assert isinstance(name, str) and name and name == name.lower()
        for key, value in params:
            assert isinstance(key, str) and key
            assert value is None or isinstance(value, str)


@FUZZ_MORE
@given(offers_strategy, st.lists(st.one_of(header_text, st.text(max_size=80)),
                                 min_size=1, max_size=3))
def test_negotiate_any_offers_and_answers(offers: List[PerMessageDeflate],
                                          values: List[str]) -> None:
    try:
        agreement = negotiate(offers, values, 1 << 20)
    except CompressionParameterError:
        return
    if agreement is None:
        return
    # Whatever was agreed must fit at least one offer's limits.
    assert any(
        (offer.server_max_window_bits is None
         or agreement.server_max_window_bits <= offer.server_max_window_bits)
        and (not isinstance(offer.client_max_window_bits, int)
             or isinstance(offer.client_max_window_bits, bool)
             or agreement.client_max_window_bits <= offer.client_max_window_bits)
        and (not offer.server_no_context_takeover or agreement.server_no_context_takeover)
        for offer in offers
    )


@FUZZ_MORE
@given(offers_strategy)
def test_negotiate_accepts_the_echo_of_each_offer(offers: List[PerMessageDeflate]) -> None:
    """A server that echoes one of our offers back (window bits made explicit) is accepted."""
    for offer in offers:
        value = offer.header_value()
        if offer.client_max_window_bits is True:
            value = value.replace("client_max_window_bits", "client_max_window_bits=15")
        for candidates in ([offer], offers):
            agreement = negotiate(candidates, [value], None)
            assert agreement is not None
        agreement = negotiate([offer], [value], None)
        assert agreement is not None
        assert agreement.server_no_context_takeover == offer.server_no_context_takeover
        assert agreement.client_no_context_takeover == offer.client_no_context_takeover
        if offer.server_max_window_bits is not None:
            assert agreement.server_max_window_bits == offer.server_max_window_bits


def response_for(protocol: ClientProtocol, extra: str = "") -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(protocol.key)}\r\n{extra}\r\n"
    ).encode()


def test_handshake_response_split_at_every_point_gives_the_same_events() -> None:
    """Exhaustive: every 2-way split of a response followed by two frames."""
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    frames = build_frame(Opcode.TEXT, b"hello", mask=False) + build_frame(
        Opcode.BINARY, b"\x00" * 300, mask=False
    )
    template = ClientProtocol(parse_url("ws://example.com/"), key=key,
                              offers=[PerMessageDeflate()])
    stream = response_for(template, "Sec-WebSocket-Extensions: permessage-deflate\r\n") + frames
    expected = [("ready", None), ("text", "hello"), ("binary", b"\x00" * 300)]
    for cut in range(len(stream) + 1):
        protocol = ClientProtocol(parse_url("ws://example.com/"), key=key,
                                  offers=[PerMessageDeflate()])
        protocol.request()
        out = protocol.receive_data(stream[:cut]) + protocol.receive_data(stream[cut:])
        got = [(e.name, getattr(e, "text", getattr(e, "data", None))) for e in out]
        assert got == expected, cut
        assert out[0].extensions == frozenset({"permessage-deflate"})


def test_valid_frame_stream_split_at_every_point() -> None:
    """Exhaustive: every 2-way and every 1-byte-at-a-time feed of a mixed stream."""
    stream = b"".join([
        fragmented(int(Opcode.TEXT), "héllo wörld ✓".encode(), 3),
        build_frame(Opcode.PING, b"p", mask=False),
        build_frame(Opcode.BINARY, bytes(range(256)) * 2, mask=False),
        build_frame(Opcode.TEXT, b"x" * 70_000, mask=False),
        build_frame(Opcode.CLOSE, b"\x03\xe8bye", mask=False),
    ])
    whole = summary(open_protocol(1 << 20).receive_data(stream))
    assert [name for name, _ in whole] == ["text", "ping", "binary", "text", "closing"]
    # 70 KB: every cut inside the headers and the small frames, then a stride.
    cuts = list(range(0, 700)) + list(range(700, len(stream) + 1, 997)) + [len(stream) - 1]
    for cut in cuts:
        protocol = open_protocol(1 << 20)
        out = protocol.receive_data(stream[:cut]) + protocol.receive_data(stream[cut:])
        assert summary(out) == whole, cut
    protocol = open_protocol(1 << 20)
    out = []
    for index in range(len(stream)):
        out.extend(protocol.receive_data(stream[index:index + 1]))
    assert summary(out) == whole


def open_deflate_protocol(max_size: int = 1 << 20) -> ClientProtocol:
    protocol = ClientProtocol(parse_url("ws://example.com/"), offers=[PerMessageDeflate()],
                              max_size=max_size)
    protocol.request()
    out = protocol.receive_data(
        response_for(protocol, "Sec-WebSocket-Extensions: permessage-deflate\r\n"))
    assert [type(e) for e in out] == [events.Ready]
    return protocol


def compressed_frame(opcode: int, payload: bytes, compressor: Any) -> bytes:
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return build_frame(opcode, data[:-4], rsv1=True, mask=False)


@FUZZ_MORE
@given(st.binary(max_size=2048), st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_with_deflate_give_only_documented_events(
    data: bytes, cuts: List[int]
) -> None:
    protocol = open_deflate_protocol(max_size=1 << 16)
    out: List[events.Event] = []
    for chunk in split(data, cuts):
        out.extend(protocol.receive_data(chunk))
    assert all(isinstance(e, ALLOWED) for e in out)
    for index, event in enumerate(out):
        if isinstance(event, (events.ProtocolError, events.Closing)):
            assert index == len(out) - 1
        if isinstance(event, events.ProtocolError):
            assert event.code in (1002, 1007, 1009)


@FUZZ_MORE
@given(st.binary(max_size=512), st.lists(st.integers(min_value=0), max_size=10))
def test_arbitrary_compressed_payloads_give_only_documented_events(
    payload: bytes, cuts: List[int]
) -> None:
    """Well-formed frames with RSV1 set whose payload is not valid deflate data."""
    protocol = open_deflate_protocol(max_size=1 << 16)
    stream = build_frame(Opcode.BINARY, payload, rsv1=True, mask=False)
    out: List[events.Event] = []
    for chunk in split(stream, cuts):
        out.extend(protocol.receive_data(chunk))
    assert len(out) <= 1
    if out:
        assert isinstance(out[0], (events.Binary, events.ProtocolError))
        if isinstance(out[0], events.ProtocolError):
            assert out[0].code in (1002, 1009) and not out[0].critical


@FUZZ_MORE
@given(
    st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=3000)), max_size=6),
    st.lists(st.integers(min_value=0), max_size=30),
)
def test_valid_compressed_stream_split_anywhere_parses_the_same(
    specs: List[Tuple[int, bytes]], cuts: List[int]
) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    messages = [(op, payload if op == 2 else payload.hex().encode()) for op, payload in specs]
    stream = b"".join(compressed_frame(op, payload, compressor) for op, payload in messages)
    protocol = open_deflate_protocol()
    out: List[events.Event] = []
    for chunk in split(stream, cuts):
        out.extend(protocol.receive_data(chunk))
    expected = [("text", p.decode()) if op == 1 else ("binary", p) for op, p in messages]
    assert summary(out) == expected
