"""WebSocket frames (RFC 6455 section 5): a small value class that builds itself.

Parsing lives in :mod:`lomond.reader`; this module holds the frame type, the
opcodes and the client-side serializer.
"""

from __future__ import annotations

import os
import struct
from enum import IntEnum
from typing import Iterator, Union

import attrs

from . import accel
from .errors import FrameBuildError

#: A frame payload: ``bytes``, or a view of received data (the reader
#: delivers the pieces of a large frame as memoryviews to avoid copies).
#: Code that needs ``bytes`` converts explicitly.
Payload = Union[bytes, bytearray, memoryview]

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack

#: Masking keys are drawn from ``os.urandom`` this many bytes at a time.
_KEY_BLOCK = 4096


def _key_pool() -> Iterator[bytes]:
    """A fresh supply of 4-byte masking keys from one ``os.urandom`` call.

    One system call per 1,024 frames instead of one per frame (about a
    tenth of a small send). The keys are as unpredictable as before (RFC
    6455 sections 5.3 and 10.3 ask for a strong source of entropy): the
    same ``os.urandom`` bytes, each used once. ``next()`` on a list
    iterator is one atomic step under the GIL, so threads sending at once
    never get the same key; a forked child drops the parent's pool
    (:func:`_forget_keys`) so two processes never share keys.
    """
    block = os.urandom(_KEY_BLOCK)
    return iter([block[i:i + 4] for i in range(0, _KEY_BLOCK, 4)])


_keys: Iterator[bytes] = iter(())


def _forget_keys() -> None:
    global _keys
    _keys = iter(())


def mask_key() -> bytes:
    """A fresh, unpredictable 4-byte masking key (RFC 6455 section 5.3)."""
    global _keys
    key = next(_keys, None)
    if key is None:
        # Two threads may both refill: each takes keys from its own pool, and
        # the pool that loses the assignment is never drawn from again.
        pool = _key_pool()
        key = next(pool)
        _keys = pool
    return key


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_keys)


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
    from ``os.urandom`` (drawn a block at a time, :func:`mask_key`), a
    cryptographically secure source, so that a hostile
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
    # mask_key() inlined: this is every client send's path.
    key = next(_keys, None)
    if key is None:
        key = mask_key()
    return accel.masked_frame(header, key, payload)


__all__ = [
    "KNOWN_OPCODES", "MAX_CONTROL_PAYLOAD", "Frame", "Opcode", "Payload", "build_frame",
    "mask_key",
]
