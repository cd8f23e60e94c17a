"""Frames (RFC 6455 section 5): building, masking and validation.

Client frames are parsed back here with a small independent parser written
from section 5.2, so that the serializer is not only checked against
lomond's own reader (which, being a client's, refuses masked frames).
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
from typing import List, NamedTuple

import pytest

import lomond.frame
from lomond.errors import FrameBuildError
from lomond.frame import (
    KNOWN_OPCODES,
    MAX_CONTROL_PAYLOAD,
    Frame,
    Opcode,
    build_frame,
    mask_key,
)
from lomond.reader import read_frames

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


class Parsed(NamedTuple):
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    key: bytes
    payload: bytes
    length_field: int  # 7-bit length: <126, 126 or 127


def parse_frame(data: bytes) -> Parsed:
    """Parse exactly one frame (RFC 6455 section 5.2), unmasking the payload."""
    byte0, byte1 = data[0], data[1]
    length = byte1 & 0x7F
    pos = 2
    field = length
    if length == 126:
        (length,) = struct.unpack("!H", data[2:4])
        pos = 4
    elif length == 127:
        (length,) = struct.unpack("!Q", data[2:10])
        pos = 10
    masked = bool(byte1 & 0x80)
    key = b""
    if masked:
        key = data[pos : pos + 4]
        pos += 4
    payload = data[pos:]
    assert len(payload) == length, "frame length field does not match the bytes that follow"
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return Parsed(bool(byte0 & 0x80), (byte0 >> 4) & 0x7, byte0 & 0x0F, masked, key, payload, field)


@pytest.mark.parametrize("length", LENGTHS)
def test_masked_round_trip(masking: str, length: int) -> None:
    payload = os.urandom(length)
    data = build_frame(Opcode.BINARY, payload)
    parsed = parse_frame(data)
    assert parsed.fin and parsed.rsv == 0 and parsed.opcode == Opcode.BINARY
    assert parsed.masked and len(parsed.key) == 4
    assert parsed.payload == payload
    header = 2 + (0 if length < 126 else 2 if length < 65536 else 8)
    assert len(data) == header + 4 + length


@pytest.mark.parametrize(
    ("length", "field", "header_size"),
    [(0, 0, 2), (125, 125, 2), (126, 126, 4), (65535, 126, 4), (65536, 127, 10)],
)
def test_length_encodings(masking: str, length: int, field: int, header_size: int) -> None:
    """7-bit up to 125, 16-bit up to 65535, 64-bit beyond (section 5.2, minimal encoding)."""
    data = build_frame(Opcode.TEXT, b"a" * length)
    parsed = parse_frame(data)
    assert parsed.length_field == field
    assert len(data) == header_size + 4 + length
    unmasked = build_frame(Opcode.TEXT, b"a" * length, mask=False)
    assert len(unmasked) == header_size + length
    assert unmasked[1] & 0x80 == 0


@pytest.mark.parametrize("length", LENGTHS)
def test_unmasked_frames_parse_with_the_reader(length: int) -> None:
    payload = os.urandom(length)
    frames, error = read_frames().send(build_frame(Opcode.BINARY, payload, mask=False))
    assert error is None
    assert frames == [Frame(Opcode.BINARY, payload, True, False)]


def test_same_payload_gives_different_bytes(masking: str) -> None:
    """A fresh random key per frame (section 5.3): equal payloads do not repeat on the wire."""
    payload = b"the same payload"
    frames = {build_frame(Opcode.TEXT, payload) for _ in range(20)}
    assert len(frames) == 20
    keys = {parse_frame(f).key for f in frames}
    assert len(keys) == 20
    assert all(parse_frame(f).payload == payload for f in frames)


def test_masking_key_comes_from_os_urandom(masking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    requested = []

    def fake_urandom(n: int) -> bytes:
        requested.append(n)
        return b"\x37\xfa\x21\x3d" * (n // 4)

    monkeypatch.setattr(os, "urandom", fake_urandom)
    monkeypatch.setattr(lomond.frame, "_keys", iter(()))  # draw a fresh pool
    # RFC 6455 section 5.7: "A single-frame masked text message".
    assert build_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("818537fa213d7f9f4d5158")
    assert build_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("818537fa213d7f9f4d5158")
    # One os.urandom call for a block of keys, not one per frame.
    assert requested == [lomond.frame._KEY_BLOCK]


def test_masking_keys_are_consecutive_slices_of_urandom_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocks: List[bytes] = []

    def counting_urandom(n: int) -> bytes:
        start = len(blocks) * (n // 4)
        blocks.append(b"".join((start + i).to_bytes(4, "big") for i in range(n // 4)))
        return blocks[-1]

    monkeypatch.setattr(os, "urandom", counting_urandom)
    monkeypatch.setattr(lomond.frame, "_keys", iter(()))
    per_block = lomond.frame._KEY_BLOCK // 4
    keys = [mask_key() for _ in range(per_block + 3)]
    # Each key is used once: the first block, then a second one.
    assert keys == [i.to_bytes(4, "big") for i in range(per_block + 3)]
    assert len(blocks) == 2


def test_a_forked_child_forgets_the_parents_masking_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: b"\x01\x02\x03\x04" * (n // 4))
    monkeypatch.setattr(lomond.frame, "_keys", iter(()))
    assert mask_key() == b"\x01\x02\x03\x04"  # a pool is drawn
    # What os.register_at_fork runs in a child: the pool is dropped.
    lomond.frame._forget_keys()
    monkeypatch.setattr(os, "urandom", lambda n: b"\x05\x06\x07\x08" * (n // 4))
    assert mask_key() == b"\x05\x06\x07\x08"


def test_threads_drawing_masking_keys_never_share_one(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = itertools.count()

    def unique_urandom(n: int) -> bytes:
        return b"".join(next(counter).to_bytes(4, "big") for _ in range(n // 4))

    monkeypatch.setattr(os, "urandom", unique_urandom)
    monkeypatch.setattr(lomond.frame, "_keys", iter(()))
    drawn: List[List[bytes]] = [[] for _ in range(8)]

    def draw(out: List[bytes]) -> None:
        for _ in range(3000):
            out.append(mask_key())

    threads = [threading.Thread(target=draw, args=(out,)) for out in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [key for out in drawn for key in out]
    assert len(every) == len(set(every)) == 8 * 3000


def test_exact_bytes_of_a_long_masked_frame(masking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: b"\x01\x02\x03\x04" * (n // 4))
    monkeypatch.setattr(lomond.frame, "_keys", iter(()))
    payload = bytes(range(256)) * 2  # 512 bytes: 16-bit length
    data = build_frame(Opcode.BINARY, payload, fin=False)
    expected_payload = bytes(b ^ (1, 2, 3, 4)[i % 4] for i, b in enumerate(payload))
    assert data == b"\x02\xfe\x02\x00\x01\x02\x03\x04" + expected_payload


def test_unmasked_ping_exact_bytes() -> None:
    # RFC 6455 section 5.7: "Unmasked Ping request and masked Ping response".
    assert build_frame(Opcode.PING, b"Hello", mask=False) == bytes.fromhex("890548656c6c6f")


def test_fin_and_rsv1_bits(masking: str) -> None:
    parsed = parse_frame(build_frame(Opcode.TEXT, b"x", fin=False, rsv1=True))
    assert not parsed.fin
    assert parsed.rsv == 0b100
    assert parsed.opcode == Opcode.TEXT
    parsed = parse_frame(build_frame(Opcode.CONTINUATION, b"x"))
    assert parsed.fin and parsed.rsv == 0 and parsed.opcode == 0


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_build_frame_accepts_buffers(masking: str, kind: type) -> None:
    data = build_frame(Opcode.BINARY, kind(b"buffer"))
    assert parse_frame(data).payload == b"buffer"
    assert build_frame(Opcode.BINARY, kind(b"buffer"), mask=False) == b"\x82\x06buffer"


def test_frame_serialize_masks_by_default(masking: str) -> None:
    frame = Frame(Opcode.TEXT, b"abc")
    parsed = parse_frame(frame.serialize())
    assert parsed.masked and parsed.payload == b"abc"
    assert frame.serialize(mask=False) == b"\x81\x03abc"


# -- validation ---------------------------------------------------------------


def test_control_opcodes() -> None:
    assert Frame(Opcode.PING).is_control and Frame(Opcode.CLOSE).is_control
    assert not Frame(Opcode.TEXT).is_control and not Frame(Opcode.CONTINUATION).is_control


def test_known_opcodes() -> None:
    assert KNOWN_OPCODES == {0, 1, 2, 8, 9, 10}
    assert MAX_CONTROL_PAYLOAD == 125


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_fragmented_control_frame_is_invalid(opcode: int) -> None:
    with pytest.raises(FrameBuildError, match="fragmented"):
        Frame(opcode, b"", fin=False).validate()


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_control_payload_limit(opcode: int) -> None:
    Frame(opcode, b"x" * 125).validate()
    with pytest.raises(FrameBuildError, match="125"):
        Frame(opcode, b"x" * 126).validate()


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_invalid(opcode: int) -> None:
    with pytest.raises(FrameBuildError, match="reserved opcode"):
        Frame(opcode, b"").validate()


@pytest.mark.parametrize("opcode", [0, 1, 2])
def test_data_frames_may_be_fragmented_and_large(opcode: int) -> None:
    Frame(opcode, b"x" * 70000, fin=False).validate()


def test_frame_build_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Frame(Opcode.PING, b"x" * 200).validate()


def test_frame_equality_and_defaults() -> None:
    frame = Frame(Opcode.TEXT)
    assert frame.payload == b"" and frame.fin and not frame.rsv1
    assert Frame(1, b"a") == Frame(1, b"a", True, False)
    assert Frame(1, b"a") != Frame(1, b"a", fin=False)
