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

from . import accel
from .errors import CriticalProtocolError, PayloadTooLarge, ProtocolViolation
from .frame import KNOWN_OPCODES, MAX_CONTROL_PAYLOAD, Frame

ReadResult = Tuple[List[Frame], Optional[ProtocolViolation]]
FrameReader = Generator[ReadResult, Union[bytes, bytearray, memoryview], None]

_unpack16 = struct.Struct("!H").unpack_from
_unpack64 = struct.Struct("!Q").unpack_from


#: A frame payload from which the reader suggests reading the next frame's
#: header alone, then its payload alone (see :func:`read_frames`).
BIG_FRAME = 16 * 1024


def compressed_wire_limit(max_size: int) -> int:
    """The largest wire payload accepted for a frame of a compressed message.

    ``max_size`` limits a message *after* decompression, and inflation is
    capped at it (:meth:`lomond.compression.Deflate.decode`), so the wire
    length of a compressed frame is not what the limit is about: deflate can
    make incompressible data bigger. zlib grows it by a few bytes per 16 KiB
    block, but any valid compressor may use fixed Huffman codes, whose worst
    case is 9 bits per byte: ``max_size + max_size // 8`` covers that, and
    1 KiB more covers block headers and the flush marker of a small limit.
    The cap still stops a hostile length before anything is buffered.
    """
    return max_size + max_size // 8 + 1024


def read_frames(
    max_size: Optional[int] = None,
    allow_rsv1: bool = False,
    missing: Optional[List[int]] = None,
    expect_masked: bool = False,
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

    ``max_size`` caps a single frame's payload exactly, except, when
    ``allow_rsv1`` is true (permessage-deflate gives RSV1 a meaning), for a
    frame that may carry compressed data (RSV1 set, or a continuation):
    those are capped at :func:`compressed_wire_limit`, since the limit
    applies to the inflated message, which the inflater and message assembly
    measure. If ``missing`` (a list) is given, the reader keeps in its first
    item how many payload bytes the frame in progress still lacks, so the
    caller can size its next read. The client's reader also keeps a second
    item (appended if the list has one), non-zero while frames of
    :data:`BIG_FRAME` bytes or more arrive: for a big frame in progress, its
    header size; after data that ended with a big frame, that frame's whole
    size (header and payload). Big frames tend to follow each other, often
    of one size; a caller that then reads exactly the missing payload, then
    one such frame, keeps its reads on frame boundaries, so each payload is
    whole in one read (no pieces to assemble and join). A payload that
    arrives alone in a read is delivered as it is, without a copy.
    :attr:`lomond.protocol.Protocol.read_size` does this.

    ``expect_masked`` selects the side: ``False`` (a client reading server
    frames) fails on a masked frame, ``True`` (a server reading client
    frames) fails on an unmasked one and unmasks the payload (RFC 6455
    sections 5.1 and 5.3). A server's reader delivers every frame whole
    (payload ``bytes``), never in pieces. The side is chosen here, once, so
    the client's per-frame loop has no server branch.
    """
    hint = missing if missing is not None else [0]
    reader = (
        _masked_frame_reader(max_size, allow_rsv1, hint)
        if expect_masked
        else _frame_reader(max_size, allow_rsv1, hint)
    )
    next(reader)
    return reader


def _frame_reader(max_size: Optional[int], allow_rsv1: bool, hint: List[int]) -> FrameReader:
    if len(hint) < 2:
        hint.append(0)
    rsv_forbidden = 0x30 if allow_rsv1 else 0x70
    partial_length = 0  # the payload length of the ``partial`` frame
    wire_limit = compressed_wire_limit(max_size) if max_size is not None else 0
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
        if type(data) is not bytes:
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
                frames.append(Frame(opcode, view[:take], fin and not missing, rsv1))
                partial = (0, fin, False)  # the rest of the payload continues it
                started = True
            else:
                # The header came alone and now the whole payload: one frame.
                # A read of exactly the payload (see ``hint``) is the payload:
                # it is delivered as it is, without a copy.
                frames.append(Frame(opcode, data if take == end else view[:take].tobytes(),
                                    fin, rsv1))
            hint[0] = missing
            if missing:
                continue
            pos = take
            partial = None
            started = False
            length = partial_length
        else:
            length = -1
        # Parse every complete frame in the buffer in one pass: a burst of
        # small messages costs one generator resume, not one per frame.
        try:
            while True:
                available = end - pos
                if available < 2:
                    break
                # Indexing and slicing the bytes object, not the view: both
                # are cheaper on bytes, and a small payload is copied either way.
                byte0 = data[pos]
                byte1 = data[pos + 1]
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
                fin = byte0 >= 0x80  # the FIN bit is the top bit of a byte
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
                elif (
                    max_size is not None
                    and length > max_size
                    and _over_limit(byte0, opcode, length, allow_rsv1, max_size, wire_limit)
                ):
                    raise PayloadTooLarge(f"frame of {length} bytes exceeds max_size={max_size}")
                stop = start + length
                if stop > end:
                    rsv1 = bool(byte0 & 0x40)
                    missing = stop - end
                    hint[0] = missing
                    # A big frame in progress: read exactly its payload next.
                    hint[1] = start - pos if length >= BIG_FRAME else 0
                    partial_length = length
                    pos = end
                    if opcode >= 0x8:
                        partial = (opcode, fin, rsv1)
                        pieces = [view[start:]]
                    elif start < end:
                        frames.append(Frame(opcode, view[start:], False, rsv1))
                        partial = (0, fin, False)
                        started = True
                    else:
                        partial = (opcode, fin, rsv1)
                    break
                frames.append(Frame(opcode, data[start:stop], fin, (byte0 & 0x40) != 0))
                pos = stop
        except ProtocolViolation as violation:
            error = violation
        else:
            if pos < end:
                head = view[pos:].tobytes()
                hint[1] = 0
            elif partial is None:
                # The data ended with a big frame: more are likely, often of
                # the same size. Reading exactly one such frame next keeps
                # reads on frame boundaries, so each payload is whole in one
                # read: no pieces to assemble and join.
                hint[1] = (
                    (2 if length < 126 else 4 if length < 0x10000 else 10) + length
                    if length >= BIG_FRAME else 0
                )
            # (a frame in progress set hint[1] when its header was parsed)
    yield frames, error


def _over_limit(
    byte0: int, opcode: int, length: int, allow_rsv1: bool, max_size: int, wire_limit: int
) -> bool:
    """Whether a data frame longer than ``max_size`` must be refused.

    Only called once ``length > max_size``, so the common case pays nothing.
    A frame that may hold compressed data (RSV1 set on a first frame, or any
    continuation, since only the first frame of a message carries RSV1) is
    measured after inflation instead; a continuation of an uncompressed
    message is still counted exactly when the message is assembled.
    """
    if allow_rsv1 and (byte0 & 0x40 or not opcode):
        return length > wire_limit
    return True


def _masked_frame_reader(
    max_size: Optional[int], allow_rsv1: bool, hint: List[int]
) -> FrameReader:
    """The server side of :func:`read_frames`: client frames, masked, delivered whole.

    Its header checks repeat the client loop's on purpose: sharing them
    through a function would add a call per frame to the client's hot path
    (about 7% of a 16-byte message), and a flag tested per frame would add a
    branch to it. ``tests/test_reader.py`` runs the same bad headers through
    both sides, so the two copies cannot drift apart unnoticed.
    """
    rsv_forbidden = 0x30 if allow_rsv1 else 0x70
    wire_limit = compressed_wire_limit(max_size) if max_size is not None else 0

    def parse(view: memoryview, frames: List[Frame]) -> int:
        """Append the complete frames at the start of ``view``; return the bytes used.

        Each payload is unmasked straight out of the view: copied once.
        """
        end = len(view)
        pos = 0
        while True:
            available = end - pos
            if available < 2:
                return pos
            byte0 = view[pos]
            byte1 = view[pos + 1]
            if byte0 & rsv_forbidden:
                raise CriticalProtocolError(
                    f"reserved bits {byte0 & 0x70:#04x} set without a negotiated extension"
                )
            opcode = byte0 & 0x0F
            if opcode not in KNOWN_OPCODES:
                raise CriticalProtocolError(f"reserved opcode {opcode:#x}")
            if not byte1 & 0x80:
                raise CriticalProtocolError("client frames must be masked")
            length = byte1 & 0x7F
            fin = bool(byte0 & 0x80)
            if length < 126:
                start = pos + 2
            elif length == 126:
                if available < 4:
                    return pos
                length = _unpack16(view, pos + 2)[0]
                start = pos + 4
            else:
                if available < 10:
                    return pos
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
            elif (
                max_size is not None
                and length > max_size
                and _over_limit(byte0, opcode, length, allow_rsv1, max_size, wire_limit)
            ):
                raise PayloadTooLarge(f"frame of {length} bytes exceeds max_size={max_size}")
            stop = start + 4 + length
            if stop > end:
                hint[0] = stop - end
                return pos
            key = view[start:start + 4].tobytes()
            frames.append(Frame(opcode, accel.mask(key, view[start + 4:stop]), fin,
                                bool(byte0 & 0x40)))
            pos = stop
            hint[0] = 0

    # The start of an incomplete frame, kept for the next read.
    buffer = bytearray()
    frames: List[Frame] = []
    error: Optional[ProtocolViolation] = None
    while error is None:
        data = yield frames, None
        frames = []
        try:
            with memoryview(data) as view:
                if buffer:
                    # Complete the pending frame with just the bytes it lacks
                    # (all of them while its header is incomplete), so a big
                    # read is not copied into the buffer as a whole.
                    take = hint[0] or len(view)
                    buffer += view[:take]
                    view = view[take:]
                    with memoryview(buffer) as pending:
                        used = parse(pending, frames)
                    del buffer[:used]
                if not buffer:
                    used = parse(view, frames)
                    buffer += view[used:]
        except ProtocolViolation as violation:
            error = violation
    yield frames, error


__all__ = ["BIG_FRAME", "FrameReader", "ReadResult", "compressed_wire_limit", "read_frames"]
