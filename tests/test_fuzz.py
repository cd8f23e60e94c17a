"""Property-based tests (hypothesis) of the parsers that read untrusted bytes.

For arbitrary input fed in arbitrary chunks only documented outcomes may come
out: events from :mod:`lomond.events`, never an exception; and a valid stream
split at any points parses exactly as when fed whole.
"""

from __future__ import annotations

from typing import List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lomond import events
from lomond.compression import PerMessageDeflate, negotiate
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
