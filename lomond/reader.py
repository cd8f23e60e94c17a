"""The frame reader: one generator that turns received bytes into frames.

It checks everything that can be checked from a frame header (RFC 6455
section 5.2) as soon as the header is complete, before waiting for the
payload: reserved bits, reserved opcodes, masking, fragmented or oversized
control frames, the 2**63 length limit and ``max_size``. A hostile length is
therefore rejected without buffering anything.
"""

from __future__ import annotations

import struct
from typing import Generator, List, Optional, Tuple, Union

from .errors import CriticalProtocolError, PayloadTooLarge, ProtocolViolation
from .frame import KNOWN_OPCODES, MAX_CONTROL_PAYLOAD, Frame

ReadResult = Tuple[List[Frame], Optional[ProtocolViolation]]
FrameReader = Generator[ReadResult, Union[bytes, bytearray, memoryview], None]

_unpack16 = struct.Struct("!H").unpack_from
_unpack64 = struct.Struct("!Q").unpack_from


def read_frames(
    max_size: Optional[int] = None,
    allow_rsv1: bool = False,
    missing: Optional[List[int]] = None,
) -> FrameReader:
    """A primed generator: ``reader.send(data)`` returns ``(frames, error)``.

    ``frames`` are the frames completed so far, in order. ``error`` is
    ``None``, or the :class:`CriticalProtocolError` / :class:`PayloadTooLarge`
    raised by the first bad header after those frames; the stream is unusable
    from there, so the generator finishes after reporting it. Returning the
    good frames alongside the error means nothing valid that arrived before a
    violation is lost.

    A data frame whose payload spans reads is delivered in pieces, as the
    bytes arrive: the first piece has the frame's opcode and RSV1, later ones
    are continuation frames, and only the last carries the frame's FIN. A
    message is the concatenation of its frames' payloads, so this changes no
    message, but lets the protocol validate UTF-8 (and inflate, and count
    ``max_size``) as the bytes come in rather than when the frame ends
    (Autobahn 6.4.3). Piece payloads are memoryviews of the received data,
    so a large payload is still copied once, when the message is assembled.
    Control frames (at most 125 bytes) are always delivered whole.

    ``max_size`` caps a single frame's payload; ``allow_rsv1`` is true when an
    extension (permessage-deflate) gives RSV1 a meaning. If ``missing`` (a
    one-item list) is given, the reader keeps in it how many payload bytes
    the frame in progress still lacks, so the caller can size its next read.
    """
    reader = _frame_reader(max_size, allow_rsv1, missing if missing is not None else [0])
    next(reader)
    return reader


def _frame_reader(max_size: Optional[int], allow_rsv1: bool, hint: List[int]) -> FrameReader:
    rsv_forbidden = 0x30 if allow_rsv1 else 0x70
    # A header split across reads: its first bytes, prepended to the next data.
    head = b""
    # A frame whose header is parsed but whose payload spans reads: opcode,
    # FIN and RSV1 of its next piece (for a control frame, of the whole
    # frame, whose pieces are collected here and joined at the end).
    partial: Optional[Tuple[int, bool, bool]] = None
    started = False  # whether a piece of the ``partial`` data frame was delivered
    pieces: List[memoryview] = []
    missing = 0  # payload bytes still to come for ``partial``
    frames: List[Frame] = []
    error: Optional[ProtocolViolation] = None
    while error is None:
        data = yield frames, None
        frames = []
        if not isinstance(data, bytes):
            data = bytes(data)  # pieces keep views: the data must not change later
        if head:
            data = head + data
            head = b""
        view = memoryview(data)
        end = len(view)
        pos = 0
        if partial is not None and end:
            opcode, fin, rsv1 = partial
            take = end if end < missing else missing
            missing -= take
            if opcode >= 0x8:
                pieces.append(view[:take])
                if not missing:
                    frames.append(Frame(opcode, b"".join(pieces), fin, rsv1))
                    pieces = []
            elif started or missing:
                frames.append(Frame(opcode, view[:take], fin and not missing, rsv1))  # type: ignore[arg-type]
                partial = (0, fin, False)  # the rest of the payload continues it
                started = True
            else:
                # The header came alone and now the whole payload: one frame.
                frames.append(Frame(opcode, view[:take].tobytes(), fin, rsv1))
            hint[0] = missing
            if missing:
                continue
            pos = take
            partial = None
            started = False
        # Parse every complete frame in the buffer in one pass: a burst of
        # small messages costs one generator resume, not one per frame.
        try:
            while True:
                available = end - pos
                if available < 2:
                    break
                byte0 = view[pos]
                byte1 = view[pos + 1]
                if byte0 & rsv_forbidden:
                    raise CriticalProtocolError(
                        f"reserved bits {byte0 & 0x70:#04x} set without a negotiated extension"
                    )
                opcode = byte0 & 0x0F
                if opcode not in KNOWN_OPCODES:
                    raise CriticalProtocolError(f"reserved opcode {opcode:#x}")
                if byte1 & 0x80:
                    raise CriticalProtocolError("server frames must not be masked")
                length = byte1 & 0x7F
                fin = bool(byte0 & 0x80)
                if length < 126:
                    start = pos + 2
                elif length == 126:
                    if available < 4:
                        break
                    length = _unpack16(view, pos + 2)[0]
                    start = pos + 4
                else:
                    if available < 10:
                        break
                    length = _unpack64(view, pos + 2)[0]
                    if length >> 63:
                        raise PayloadTooLarge("frame length has its most significant bit set")
                    start = pos + 10
                if opcode >= 0x8:
                    if not fin:
                        raise CriticalProtocolError("fragmented control frame")
                    if length > MAX_CONTROL_PAYLOAD:
                        raise CriticalProtocolError(
                            f"control frame payload of {length} bytes; the limit is 125"
                        )
                elif max_size is not None and length > max_size:
                    raise PayloadTooLarge(f"frame of {length} bytes exceeds max_size={max_size}")
                stop = start + length
                if stop > end:
                    rsv1 = bool(byte0 & 0x40)
                    missing = stop - end
                    hint[0] = missing
                    pos = end
                    if opcode >= 0x8:
                        partial = (opcode, fin, rsv1)
                        pieces = [view[start:]]
                    elif start < end:
                        frames.append(Frame(opcode, view[start:], False, rsv1))  # type: ignore[arg-type]
                        partial = (0, fin, False)
                        started = True
                    else:
                        partial = (opcode, fin, rsv1)
                    break
                frames.append(Frame(opcode, view[start:stop].tobytes(), fin, bool(byte0 & 0x40)))
                pos = stop
        except ProtocolViolation as violation:
            error = violation
        else:
            if pos < end:
                head = view[pos:].tobytes()
    yield frames, error


__all__ = ["FrameReader", "ReadResult", "read_frames"]
