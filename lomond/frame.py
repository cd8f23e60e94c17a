"""WebSocket frames (RFC 6455 section 5): a small value class that builds itself.

Parsing lives in :mod:`lomond.reader`; this module holds the frame type, the
opcodes and the client-side serializer.
"""

from __future__ import annotations

import os
import struct
from enum import IntEnum
from typing import Union

import attrs

from . import accel
from .errors import FrameBuildError

#: A frame payload: ``bytes``, or a view of received data (the reader
#: delivers the pieces of a large frame as memoryviews to avoid copies).
#: Code that needs ``bytes`` converts explicitly.
Payload = Union[bytes, bytearray, memoryview]

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 section 5.2); 3-7 and 11-15 are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


#: Opcodes defined by RFC 6455; any other value fails the connection.
KNOWN_OPCODES = frozenset(int(op) for op in Opcode)

#: Largest payload of a control frame (RFC 6455 section 5.5).
MAX_CONTROL_PAYLOAD = 125


@attrs.define(slots=True)
class Frame:
    """One WebSocket frame.

    ``rsv1`` is the "compressed" bit when permessage-deflate is negotiated
    (RFC 7692 section 6); RSV2 and RSV3 are never valid here and so have no
    field: the reader rejects them.
    """

    opcode: int
    payload: Payload = b""
    fin: bool = True
    rsv1: bool = False

    @property
    def is_control(self) -> bool:
        """Close, Ping or Pong."""
        return self.opcode >= 0x8

    def validate(self) -> None:
        """Raise :class:`FrameBuildError` if RFC 6455 forbids sending this frame.

        Control frames must not be fragmented and carry at most 125 bytes
        (section 5.5); the opcode must be a defined one (section 5.2).
        """
        if self.opcode not in KNOWN_OPCODES:
            raise FrameBuildError(f"reserved opcode {self.opcode:#x}")
        if self.opcode >= 0x8:
            if not self.fin:
                raise FrameBuildError("control frames cannot be fragmented")
            if len(self.payload) > MAX_CONTROL_PAYLOAD:
                raise FrameBuildError(
                    f"control frame payload is {len(self.payload)} bytes; the limit is 125"
                )

    def serialize(self, mask: bool = True) -> bytes:
        """The frame as bytes (RFC 6455 section 5.2).

        ``mask=True`` (a client) masks it with a fresh random key (section
        5.3); a server sends ``mask=False``: its frames must not be masked.
        """
        return build_frame(self.opcode, self.payload, fin=self.fin, rsv1=self.rsv1, mask=mask)


def build_frame(
    opcode: int, payload: Payload, fin: bool = True, rsv1: bool = False, mask: bool = True
) -> bytes:
    """Serialize one frame (RFC 6455 section 5.2).

    Client-to-server frames (``mask=True``) are masked with a 4-byte key
    from ``os.urandom``, a cryptographically secure source, so that a hostile
    page cannot predict the bytes on the wire (section 10.3). Server-to-client
    frames (``mask=False``) are sent as they are (section 5.1).
    """
    length = len(payload)
    byte0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = bytes((byte0, mask_bit | length))
    elif length < 0x10000:
        header = _PACK_16(byte0, mask_bit | 126, length)
    else:
        header = _PACK_64(byte0, mask_bit | 127, length)
    if not mask:
        return header + bytes(payload)
    return accel.masked_frame(header, os.urandom(4), payload)


__all__ = ["KNOWN_OPCODES", "MAX_CONTROL_PAYLOAD", "Frame", "Opcode", "Payload", "build_frame"]
