"""The frame reader: bytes from the server in any chunking, frames or a violation out.

Every header violation must be detected from the header alone, before the
payload arrives, and reported together with the valid frames that preceded
it in the same buffer.
"""

from __future__ import annotations

import os
import struct
from typing import List, Optional, Tuple

import pytest

from lomond.errors import CriticalProtocolError, PayloadTooLarge, ProtocolViolation
from lomond.frame import Frame, Opcode, build_frame
from lomond.reader import FrameReader, read_frames


def server_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a server sends it: unmasked."""
    return build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=False)


def raw_header(byte0: int, length: int, masked: bool = False) -> bytes:
    """A header with an arbitrary first byte and length (no payload)."""
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return bytes((byte0, mask_bit | length))
    if length < 0x10000:
        return struct.pack("!BBH", byte0, mask_bit | 126, length)
    return struct.pack("!BBQ", byte0, mask_bit | 127, length)


def feed_all(
    reader: FrameReader, chunks: List[bytes]
) -> Tuple[List[Frame], Optional[ProtocolViolation]]:
    frames: List[Frame] = []
    for chunk in chunks:
        got, error = reader.send(chunk)
        frames.extend(got)
        if error is not None:
            return frames, error
    return frames, None


def coalesce(frames: List[Frame]) -> List[Frame]:
    """Frames as whole messages: each data frame run up to FIN joined into one.

    The reader delivers a data frame that spans reads in pieces (and a real
    fragmented message is also several frames); both are the same message,
    which is what splitting the input must never change. Control frames,
    which may sit between fragments, stay where they are.
    """
    out: List[Frame] = []
    opcode: Optional[int] = None
    rsv1 = False
    parts: List[bytes] = []
    for frame in frames:
        if frame.opcode >= 0x8:
            out.append(Frame(frame.opcode, bytes(frame.payload), frame.fin, frame.rsv1))
            continue
        if opcode is None:
            opcode, rsv1 = frame.opcode, frame.rsv1
        parts.append(bytes(frame.payload))
        if frame.fin:
            out.append(Frame(opcode, b"".join(parts), True, rsv1))
            opcode, parts = None, []
    if opcode is not None:  # the input ended inside a message: what came of it
        out.append(Frame(opcode, b"".join(parts), False, rsv1))
    return out


STREAM_FRAMES = [
    Frame(Opcode.TEXT, b"hello"),
    Frame(Opcode.BINARY, b""),
    Frame(Opcode.TEXT, b"frag", fin=False),
    Frame(Opcode.PING, b"ping data"),
    Frame(Opcode.CONTINUATION, b"ment", fin=False),
    Frame(Opcode.PONG, b""),
    Frame(Opcode.CONTINUATION, b"ed"),
    Frame(Opcode.BINARY, os.urandom(125)),
    Frame(Opcode.BINARY, os.urandom(126)),
    Frame(Opcode.TEXT, b"x" * 65535),
    Frame(Opcode.BINARY, os.urandom(65536)),
    Frame(Opcode.CLOSE, b"\x03\xe8bye"),
]
STREAM = b"".join(server_frame(f.opcode, f.payload, f.fin) for f in STREAM_FRAMES)


def test_one_shot() -> None:
    frames, error = read_frames().send(STREAM)
    assert error is None
    assert frames == STREAM_FRAMES  # complete frames arrive as they are


def test_byte_at_a_time_gives_the_same_frames() -> None:
    # The large frames make a full byte-at-a-time pass slow; the small ones
    # and the header/payload boundaries of the large ones are what matter.
    small = STREAM_FRAMES[:9]
    stream = b"".join(server_frame(f.opcode, f.payload, f.fin) for f in small)
    reader = read_frames()
    frames = []
    for i in range(len(stream)):
        got, error = reader.send(stream[i : i + 1])
        assert error is None
        frames.extend(got)
    assert coalesce(frames) == coalesce(small)
    # Control frames are never split, even when they arrive byte by byte.
    assert [f for f in frames if f.opcode >= 0x8] == [f for f in small if f.opcode >= 0x8]


def test_byte_at_a_time_large_lengths() -> None:
    for length in (126, 65535, 65536):
        payload = os.urandom(length)
        data = server_frame(Opcode.BINARY, payload)
        reader = read_frames()
        frames = []
        # Headers byte by byte, then the payload in uneven chunks.
        for i in range(12):
            got, error = reader.send(data[i : i + 1])
            assert error is None
            frames.extend(got)
        pos = 12
        step = 1
        while pos < len(data):
            got, error = reader.send(data[pos : pos + step])
            assert error is None
            frames.extend(got)
            pos += step
            step = step * 3 + 1
        assert coalesce(frames) == [Frame(Opcode.BINARY, payload)]


@pytest.mark.parametrize("cut", range(1, 40))
def test_every_split_point(cut: int) -> None:
    stream = STREAM[:200]
    frames_whole, _ = read_frames().send(stream)
    frames, error = feed_all(read_frames(), [stream[:cut], stream[cut:]])
    assert error is None
    assert coalesce(frames) == coalesce(frames_whole)


def test_frames_are_reported_as_soon_as_complete() -> None:
    reader = read_frames()
    first = server_frame(Opcode.TEXT, b"one")
    second = server_frame(Opcode.TEXT, b"two")
    # The first payload byte of "two" arrives with "one": it is delivered at
    # once, as the first piece of its frame; the rest follows as a continuation.
    assert reader.send(first + second[:3]) == (
        [Frame(Opcode.TEXT, b"one"), Frame(Opcode.TEXT, b"t", fin=False)], None
    )
    assert reader.send(b"") == ([], None)
    assert reader.send(second[3:]) == ([Frame(Opcode.CONTINUATION, b"wo")], None)
    # A header that arrives alone, then its whole payload: one frame.
    assert reader.send(second[:2]) == ([], None)
    assert reader.send(second[2:]) == ([Frame(Opcode.TEXT, b"two")], None)


def test_rsv1_is_reported_when_allowed() -> None:
    frames, error = read_frames(allow_rsv1=True).send(server_frame(Opcode.TEXT, b"z", rsv1=True))
    assert error is None
    assert frames == [Frame(Opcode.TEXT, b"z", True, True)]


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_buffers_are_copied(kind: type) -> None:
    """A caller may reuse its receive buffer: frames must not change afterwards."""
    data = bytearray(server_frame(Opcode.BINARY, b"A" * 300))
    reader = read_frames()
    first = bytearray(data[:100])
    pieces, _ = reader.send(kind(first))
    first[:] = b"\xff" * 100  # the caller reuses its buffer
    frames, error = reader.send(kind(bytearray(data[100:])))
    assert error is None
    assert coalesce(pieces + frames) == [Frame(Opcode.BINARY, b"A" * 300)]


def test_payload_spanning_many_reads() -> None:
    payload = os.urandom(200_000)
    data = server_frame(Opcode.BINARY, payload)
    chunks = [data[i : i + 7919] for i in range(0, len(data), 7919)]
    frames, error = feed_all(read_frames(), chunks)
    assert error is None
    # One piece per read, as the bytes arrive; together, the frame.
    assert len(frames) == len(chunks)
    assert frames[0].opcode == Opcode.BINARY and not frames[0].fin
    assert all(f.opcode == Opcode.CONTINUATION for f in frames[1:])
    assert [f.fin for f in frames].count(True) == 1 and frames[-1].fin
    assert coalesce(frames) == [Frame(Opcode.BINARY, payload)]


# -- header violations ------------------------------------------------------

GOOD = server_frame(Opcode.TEXT, b"good") + server_frame(Opcode.PING, b"p")
GOOD_FRAMES = [Frame(Opcode.TEXT, b"good"), Frame(Opcode.PING, b"p")]

VIOLATIONS = {
    "rsv1": (raw_header(0x80 | 0x40 | 0x1, 3), CriticalProtocolError),
    "rsv2": (raw_header(0x80 | 0x20 | 0x1, 3), CriticalProtocolError),
    "rsv3": (raw_header(0x80 | 0x10 | 0x2, 3), CriticalProtocolError),
    **{
        f"opcode-{op:x}": (raw_header(0x80 | op, 3), CriticalProtocolError)
        for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)
    },
    "masked": (raw_header(0x81, 3, masked=True), CriticalProtocolError),
    "fragmented-ping": (raw_header(0x09, 3), CriticalProtocolError),
    "fragmented-close": (raw_header(0x08, 2), CriticalProtocolError),
    "fragmented-pong": (raw_header(0x0A, 0), CriticalProtocolError),
    "ping-126": (raw_header(0x89, 126), CriticalProtocolError),
    "close-65536": (raw_header(0x88, 65536), CriticalProtocolError),
    "pong-127": (raw_header(0x8A, 127), CriticalProtocolError),
    "length-2**63": (struct.pack("!BBQ", 0x82, 127, 1 << 63), PayloadTooLarge),
    "length-2**64-1": (struct.pack("!BBQ", 0x82, 127, (1 << 64) - 1), PayloadTooLarge),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_violation_reported_after_preceding_frames(name: str) -> None:
    header, kind = VIOLATIONS[name]
    reader = read_frames()
    # Only the header: the payload never arrives, yet the violation is reported.
    frames, error = reader.send(GOOD + header)
    assert frames == GOOD_FRAMES
    assert isinstance(error, kind)
    assert type(error) is kind
    with pytest.raises(StopIteration):
        reader.send(b"more")


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_violation_in_a_later_read(name: str) -> None:
    header, kind = VIOLATIONS[name]
    reader = read_frames()
    assert reader.send(GOOD) == (GOOD_FRAMES, None)
    frames, error = reader.send(header)
    assert frames == []
    assert type(error) is kind


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_violation_with_header_split(name: str) -> None:
    """The check happens as soon as the header completes, even byte by byte."""
    header, kind = VIOLATIONS[name]
    reader = read_frames()
    frames, error = feed_all(reader, [GOOD] + [header[i : i + 1] for i in range(len(header))])
    assert frames == GOOD_FRAMES
    assert type(error) is kind


def test_violation_codes() -> None:
    _, error = read_frames().send(raw_header(0x83, 0))
    assert error is not None and error.code == 1002
    _, error = read_frames().send(VIOLATIONS["length-2**63"][0])
    assert error is not None and error.code == 1009


def test_rsv1_still_forbidden_without_extension_but_rsv2_always() -> None:
    _, error = read_frames(allow_rsv1=True).send(raw_header(0x80 | 0x20 | 0x1, 0))
    assert isinstance(error, CriticalProtocolError)
    _, error = read_frames(allow_rsv1=False).send(raw_header(0x80 | 0x40 | 0x1, 0))
    assert isinstance(error, CriticalProtocolError)


def test_control_frame_of_125_is_fine() -> None:
    frames, error = read_frames().send(server_frame(Opcode.PING, b"p" * 125))
    assert error is None and frames == [Frame(Opcode.PING, b"p" * 125)]


def test_max_size() -> None:
    reader = read_frames(max_size=1000)
    frames, error = reader.send(server_frame(Opcode.BINARY, b"a" * 1000))
    assert error is None and frames == [Frame(Opcode.BINARY, b"a" * 1000)]
    frames, error = reader.send(server_frame(Opcode.TEXT, b"ok") + raw_header(0x82, 1001))
    assert frames == [Frame(Opcode.TEXT, b"ok")]
    assert isinstance(error, PayloadTooLarge)
    assert error.code == 1009


def test_max_size_rejects_a_huge_length_from_the_header_alone() -> None:
    reader = read_frames(max_size=1 << 20)
    frames, error = reader.send(raw_header(0x02, 1 << 40))
    assert frames == []
    assert isinstance(error, PayloadTooLarge)


def test_no_max_size_waits_for_a_long_payload() -> None:
    reader = read_frames(max_size=None)
    assert reader.send(raw_header(0x82, 1 << 20)) == ([], None)
    assert reader.send(b"\0" * (1 << 20)) == ([Frame(Opcode.BINARY, b"\0" * (1 << 20))], None)


def test_error_after_a_frame_completed_from_a_previous_read() -> None:
    """A frame whose payload completes in this read, then a violation, both reported."""
    reader = read_frames()
    data = server_frame(Opcode.BINARY, b"x" * 500)
    first, _ = reader.send(data[:100])
    frames, error = reader.send(data[100:] + raw_header(0x83, 0))
    assert coalesce(first + frames) == [Frame(Opcode.BINARY, b"x" * 500)]
    assert isinstance(error, CriticalProtocolError)


def test_missing_hint_tracks_a_payload_spanning_reads() -> None:
    missing = [0]
    reader = read_frames(missing=missing)
    data = bytes([0x82, 127]) + (300_000).to_bytes(8, "big") + b"a" * 1000
    frames, error = reader.send(data[:500])
    assert ([len(f.payload) for f in frames], error, missing[0]) == ([490], None, 300_000 - 490)
    frames, error = reader.send(data[500:] + b"b" * (300_000 - 1000 - 1))
    assert (error, missing[0]) == (None, 1)
    frames, error = reader.send(b"c" + bytes([0x81, 1]) + b"x")
    assert [(len(f.payload), f.fin) for f in frames] == [(1, True), (1, True)]
    assert missing[0] == 0


def test_protocol_read_size_grows_for_big_payloads() -> None:
    from test_protocol import frame, open_protocol

    from lomond.constants import PAYLOAD_READ_SIZE, READ_SIZE

    protocol = open_protocol()
    assert protocol.read_size == READ_SIZE
    big = frame(0x2, b"z" * (1 << 20))
    protocol.receive_data(big[:100])
    assert protocol.read_size == PAYLOAD_READ_SIZE
    protocol.receive_data(big[100 : -100_000])
    assert protocol.read_size == 100_000
    got = protocol.receive_data(big[-100_000:])
    assert len(got[0].data) == 1 << 20  # type: ignore[attr-defined]
    # Big frames tend to follow each other: read one more of that size (capped).
    assert protocol.read_size == PAYLOAD_READ_SIZE
    protocol.receive_data(frame(0x2, b"small"))
    assert protocol.read_size == READ_SIZE


def test_protocol_reads_follow_big_frame_boundaries() -> None:
    from test_protocol import frame, open_protocol

    from lomond.constants import READ_SIZE
    from lomond.reader import BIG_FRAME

    protocol = open_protocol()
    payload = bytes(range(256)) * 256  # 64 KiB: a 10-byte header
    big = frame(0x2, payload)
    # A read that ends 10 bytes into the next frame's payload's end...
    assert protocol.receive_data(big[:READ_SIZE]) == []
    # ... asks for exactly the rest of the payload, however small.
    assert protocol.read_size == len(big) - READ_SIZE
    [event] = protocol.receive_data(big[READ_SIZE:])
    assert event.data == payload  # type: ignore[attr-defined]
    # Then one frame of that size: a frame of that size comes whole.
    assert protocol.read_size == len(big)
    [event] = protocol.receive_data(big)
    assert event.data == payload  # type: ignore[attr-defined]
    # A header that came alone, then its payload alone: delivered as it is.
    assert protocol.receive_data(big[:10]) == []
    assert protocol.read_size == len(payload)
    alone = big[10:]
    [event] = protocol.receive_data(alone)
    assert event.data is alone  # type: ignore[attr-defined]
    # A header of another size and a smaller big frame: the hint follows it.
    medium = frame(0x1, b"m" * BIG_FRAME)
    assert protocol.receive_data(medium[:10]) == []
    assert protocol.read_size == BIG_FRAME - 6
    [event] = protocol.receive_data(medium[10:])
    assert event.text == "m" * BIG_FRAME  # type: ignore[attr-defined]
    assert protocol.read_size == 4 + BIG_FRAME
    # A small frame in progress: read ahead as usual.
    small = frame(0x2, b"s" * 1000)
    protocol.receive_data(small[:100])
    assert protocol.read_size == READ_SIZE
    [event] = protocol.receive_data(small[100:])
    assert protocol.read_size == READ_SIZE


@pytest.mark.parametrize("split", [1, 2, 3, 9, 10, 11, 5000, 65545])
def test_big_frames_split_anywhere_are_delivered_whole(split: int) -> None:
    from test_protocol import frame, open_protocol

    payloads = [bytes([i]) * (65536 + i) for i in range(3)]
    stream = b"".join(frame(0x2, p) for p in payloads) + frame(0x1, b"end")
    protocol = open_protocol()
    got = []
    pos = 0
    while pos < len(stream):
        # Follow the protocol's read size, but never past ``split`` bytes at once.
        size = min(protocol.read_size, split if pos < 3 * split else len(stream))
        got.extend(protocol.receive_data(stream[pos:pos + size]))
        pos += size
    assert [e.data for e in got[:3]] == payloads  # type: ignore[attr-defined]
    assert got[3].text == "end"  # type: ignore[attr-defined]


# -- the server side: client frames, masked ------------------------------------------


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a client sends it: masked with a random key."""
    return build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=True)


CLIENT_STREAM = b"".join(client_frame(f.opcode, f.payload, f.fin) for f in STREAM_FRAMES)


def test_server_side_unmasks_client_frames(masking: str) -> None:
    frames, error = read_frames(expect_masked=True).send(CLIENT_STREAM)
    assert error is None
    assert frames == STREAM_FRAMES
    assert all(type(frame.payload) is bytes for frame in frames)


def test_server_side_delivers_whole_frames_whatever_the_chunking(masking: str) -> None:
    reader = read_frames(expect_masked=True)
    chunks = [CLIENT_STREAM[i : i + 997] for i in range(0, len(CLIENT_STREAM), 997)]
    frames, error = feed_all(reader, chunks)
    assert error is None
    # Whole frames, never pieces: the same list as in one read.
    assert frames == STREAM_FRAMES


def test_server_side_missing_hint() -> None:
    hint = [0]
    reader = read_frames(expect_masked=True, missing=hint)
    data = client_frame(Opcode.BINARY, b"z" * 5000)
    assert reader.send(data[:1000]) == ([], None)
    assert hint[0] == len(data) - 1000
    assert reader.send(data[1000:]) == ([Frame(Opcode.BINARY, b"z" * 5000)], None)
    assert hint[0] == 0


def test_server_side_refuses_an_unmasked_frame() -> None:
    """RFC 6455 section 5.1: a server must fail on an unmasked client frame."""
    good = client_frame(Opcode.TEXT, b"good")
    frames, error = read_frames(expect_masked=True).send(good + server_frame(Opcode.TEXT, b"x"))
    assert frames == [Frame(Opcode.TEXT, b"good")]
    assert type(error) is CriticalProtocolError and error.code == 1002


def test_client_side_refuses_a_masked_frame() -> None:
    """RFC 6455 section 5.1: a client must fail on a masked server frame."""
    frames, error = read_frames().send(client_frame(Opcode.TEXT, b"x"))
    assert frames == [] and type(error) is CriticalProtocolError


@pytest.mark.parametrize("name", sorted(set(VIOLATIONS) - {"masked"}))
def test_server_side_header_violations(name: str) -> None:
    header, kind = VIOLATIONS[name]
    masked = bytes((header[0], header[1] | 0x80)) + header[2:]
    reader = read_frames(expect_masked=True)
    good = client_frame(Opcode.TEXT, b"good") + client_frame(Opcode.PING, b"p")
    frames, error = feed_all(reader, [good] + [masked[i : i + 1] for i in range(len(masked))])
    assert frames == GOOD_FRAMES
    assert type(error) is kind


def test_server_side_max_size_and_rsv1() -> None:
    reader = read_frames(max_size=10, allow_rsv1=True, expect_masked=True)
    frames, error = reader.send(client_frame(Opcode.BINARY, b"a" * 10, rsv1=True))
    assert error is None and frames == [Frame(Opcode.BINARY, b"a" * 10, rsv1=True)]
    _, error = reader.send(client_frame(Opcode.BINARY, b"a" * 11))
    assert isinstance(error, PayloadTooLarge)


# -- max_size on compressed frames ----------------------------------------------------


def test_compressed_wire_limit_is_generous_but_finite() -> None:
    from lomond.reader import compressed_wire_limit

    assert compressed_wire_limit(1000) == 1000 + 125 + 1024
    # Fixed-Huffman worst case (9 bits a byte) fits.
    assert compressed_wire_limit(16 << 20) >= (16 << 20) * 9 // 8


@pytest.mark.parametrize("side", ["client", "server"])
def test_compressed_frame_may_exceed_max_size_on_the_wire(side: str) -> None:
    """max_size is about the inflated message: a compressed frame a little
    bigger than max_size on the wire is let through (the inflater caps it)."""
    make = client_frame if side == "server" else server_frame
    reader = read_frames(max_size=1000, allow_rsv1=True, expect_masked=side == "server")
    frames, error = reader.send(make(Opcode.BINARY, b"c" * 1100, fin=False, rsv1=True))
    assert error is None and coalesce(frames)[0].payload == b"c" * 1100
    # A continuation of it (RSV1 only marks the first frame) also gets the wire limit.
    frames, error = reader.send(make(Opcode.CONTINUATION, b"d" * 1100))
    assert error is None and b"".join(bytes(f.payload) for f in frames) == b"d" * 1100
    # Past the wire limit, refused from the header alone.
    _, error = reader.send(raw_header(0x80 | 0x40 | 0x2, 1000 + 125 + 1025, side == "server"))
    assert isinstance(error, PayloadTooLarge)


@pytest.mark.parametrize("side", ["client", "server"])
def test_uncompressed_frame_keeps_the_exact_limit_with_deflate(side: str) -> None:
    make = client_frame if side == "server" else server_frame
    reader = read_frames(max_size=1000, allow_rsv1=True, expect_masked=side == "server")
    _, error = reader.send(make(Opcode.TEXT, b"t" * 1001))
    assert isinstance(error, PayloadTooLarge)


def test_continuation_keeps_the_exact_limit_without_deflate() -> None:
    reader = read_frames(max_size=1000)
    frames, error = reader.send(server_frame(Opcode.BINARY, b"x", fin=False))
    assert error is None and frames == [Frame(Opcode.BINARY, b"x", fin=False)]
    _, error = reader.send(raw_header(0x80, 1001))
    assert isinstance(error, PayloadTooLarge)
