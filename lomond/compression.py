"""permessage-deflate (RFC 7692): the offer, the negotiation and the frame transforms.

The extension is a pair of frame-to-frame transforms that sit between the
frame reader and message assembly: :meth:`Deflate.decode` inflates the
frames of a compressed message (capped at ``max_size`` bytes of output, so a
small compressed "bomb" never allocates its full size), and
:meth:`Deflate.encode` compresses an outgoing message.
"""

from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Sequence, Tuple, Union

import attrs

from .errors import CompressionParameterError, PayloadTooLarge, ProtocolViolation
from .frame import Frame, Opcode, Payload

EXTENSION_NAME = "permessage-deflate"

#: Appended to a message's compressed data before the final inflate, and
#: stripped from the compressor's output (RFC 7692 section 7.2.1 and 7.2.2).
_TAIL = b"\x00\x00\xff\xff"

_PARAMETERS = frozenset(
    [
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    ]
)

WindowBits = Union[bool, int, None]


def _check_client_bits(instance: object, attribute: object, value: WindowBits) -> None:
    if value is None or isinstance(value, bool):
        return
    if not isinstance(value, int) or not 8 <= value <= 15:
        raise ValueError("client_max_window_bits must be True, None or an int from 8 to 15")


def _check_server_bits(instance: object, attribute: object, value: Optional[int]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 15:
        raise ValueError("server_max_window_bits must be None or an int from 8 to 15")


@attrs.frozen
class PerMessageDeflate:
    """One permessage-deflate offer (RFC 7692 section 7.1).

    :param client_no_context_takeover: promise the server that this client
        compresses each message on its own (section 7.1.1.2).
    :param server_no_context_takeover: ask the server to compress each
        message on its own (section 7.1.1.1).
    :param client_max_window_bits: ``True`` offers the parameter without a
        value (the server may then pick the client's window), an int 8..15
        offers that limit, ``None`` or ``False`` leaves it out (section 7.1.2.2).
    :param server_max_window_bits: ``None`` leaves it out, an int 8..15 asks
        the server to use a window no larger than that (section 7.1.2.1).
    """

    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    client_max_window_bits: WindowBits = attrs.field(default=True, validator=_check_client_bits)
    server_max_window_bits: Optional[int] = attrs.field(
        default=None, validator=_check_server_bits
    )

    def header_value(self) -> str:
        """This offer as one element of ``Sec-WebSocket-Extensions``."""
        parts = [EXTENSION_NAME]
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_max_window_bits is True:
            parts.append("client_max_window_bits")
        elif self.client_max_window_bits:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        return "; ".join(parts)


def offers_from_option(compress: object) -> List[PerMessageDeflate]:
    """Turn the ``compress=`` argument of :class:`~lomond.WebSocket` into a list of offers."""
    if compress is None or compress is False:
        return []
    if compress is True:
        return [PerMessageDeflate()]
    if isinstance(compress, PerMessageDeflate):
        return [compress]
    if isinstance(compress, (list, tuple)):
        offers = list(compress)
        for offer in offers:
            if not isinstance(offer, PerMessageDeflate):
                raise TypeError("compress= list items must be PerMessageDeflate offers")
        return offers
    raise TypeError("compress= must be a bool, a PerMessageDeflate or a list of them")


def build_offer_header(offers: Sequence[PerMessageDeflate]) -> str:
    """The ``Sec-WebSocket-Extensions`` value for ``offers``, in preference order."""
    return ", ".join(offer.header_value() for offer in offers)


def _split_outside_quotes(text: str, separator: str) -> List[str]:
    parts: List[str] = []
    current: List[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise CompressionParameterError("unterminated quoted string in Sec-WebSocket-Extensions")
    parts.append("".join(current))
    return parts


def parse_extensions(values: Sequence[str]) -> List[Tuple[str, List[Tuple[str, Optional[str]]]]]:
    """Parse ``Sec-WebSocket-Extensions`` header values (RFC 6455 section 9.1)."""
    extensions: List[Tuple[str, List[Tuple[str, Optional[str]]]]] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            if not element.strip():
                continue
            pieces = _split_outside_quotes(element, ";")
            name = pieces[0].strip().lower()
            if not name:
                raise CompressionParameterError("empty extension name in Sec-WebSocket-Extensions")
            params: List[Tuple[str, Optional[str]]] = []
            for piece in pieces[1:]:
                key, eq, raw = piece.partition("=")
                key = key.strip().lower()
                if not key:
                    raise CompressionParameterError(f"empty parameter in extension {name!r}")
                param_value: Optional[str] = None
                if eq:
                    param_value = raw.strip()
                    if len(param_value) >= 2 and param_value[0] == param_value[-1] == '"':
                        param_value = param_value[1:-1]
                params.append((key, param_value))
            extensions.append((name, params))
    return extensions


def _bits(name: str, value: Optional[str]) -> int:
    if value is None:
        raise CompressionParameterError(f"{name} needs a value from 8 to 15")
    if not (value.isdigit() and value.isascii()) or not 8 <= int(value) <= 15:
        raise CompressionParameterError(f"{name}={value!r} is not a window size from 8 to 15")
    return int(value)


def _agree(
    offer: PerMessageDeflate, params: Dict[str, Optional[str]]
) -> Tuple[bool, bool, int, int]:
    """Check the server's parameters against one offer; return the agreed settings."""
    for name in ("server_no_context_takeover", "client_no_context_takeover"):
        if name in params and params[name] is not None:
            raise CompressionParameterError(f"{name} must not have a value")
    server_bits = 15
    if "server_max_window_bits" in params:
        server_bits = _bits("server_max_window_bits", params["server_max_window_bits"])
        if offer.server_max_window_bits is not None and server_bits > offer.server_max_window_bits:
            raise CompressionParameterError(
                f"server_max_window_bits={server_bits} exceeds the offered "
                f"{offer.server_max_window_bits}"
            )
    elif offer.server_max_window_bits is not None:
        # Section 7.1.2.1: the server must accept a limit it was asked for.
        raise CompressionParameterError("server ignored the offered server_max_window_bits")
    offered = offer.client_max_window_bits
    offered_bits = offered if isinstance(offered, int) and not isinstance(offered, bool) else None
    client_bits = offered_bits or 15
    if "client_max_window_bits" in params:
        if offered is None or offered is False:
            raise CompressionParameterError(
                "server sent client_max_window_bits, which was not offered"
            )
        client_bits = _bits("client_max_window_bits", params["client_max_window_bits"])
        if offered_bits is not None and client_bits > offered_bits:
            raise CompressionParameterError(
                f"client_max_window_bits={client_bits} exceeds the offered {offered_bits}"
            )
    client_no_context = offer.client_no_context_takeover or "client_no_context_takeover" in params
    server_no_context = "server_no_context_takeover" in params
    if offer.server_no_context_takeover and not server_no_context:
        # Section 7.1.1.1: a server that accepts this offer must include it.
        raise CompressionParameterError("server ignored the offered server_no_context_takeover")
    return client_no_context, server_no_context, client_bits, server_bits


def negotiate(
    offers: Sequence[PerMessageDeflate], values: Sequence[str], max_size: Optional[int]
) -> Optional[Deflate]:
    """Validate the server's ``Sec-WebSocket-Extensions`` against our offers (RFC 7692 section 5).

    Returns the agreed :class:`Deflate`, or ``None`` if the server accepted
    no extension. Raises :class:`CompressionParameterError` on an unknown,
    duplicate or invalid parameter, on an extension that was not offered,
    or on a response that fits none of the offers.
    """
    extensions = parse_extensions(values)
    if not extensions:
        return None
    if len(extensions) > 1:
        names = ", ".join(name for name, _ in extensions)
        raise CompressionParameterError(f"server accepted more than one extension: {names}")
    name, param_list = extensions[0]
    if name != EXTENSION_NAME or not offers:
        raise CompressionParameterError(
            f"server selected extension {name!r}, which was not offered"
        )
    params: Dict[str, Optional[str]] = {}
    for key, value in param_list:
        if key not in _PARAMETERS:
            raise CompressionParameterError(f"unknown permessage-deflate parameter {key!r}")
        if key in params:
            raise CompressionParameterError(f"duplicate permessage-deflate parameter {key!r}")
        params[key] = value
    first_error: Optional[CompressionParameterError] = None
    for offer in offers:
        try:
            client_no_context, server_no_context, client_bits, server_bits = _agree(offer, params)
        except CompressionParameterError as error:
            first_error = first_error or error
            continue
        return Deflate(
            client_no_context_takeover=client_no_context,
            server_no_context_takeover=server_no_context,
            client_max_window_bits=client_bits,
            server_max_window_bits=server_bits,
            max_size=max_size,
        )
    assert first_error is not None
    raise first_error


class Deflate:
    """The negotiated permessage-deflate transforms for one connection (RFC 7692 section 7)."""

    name = EXTENSION_NAME

    def __init__(
        self,
        client_no_context_takeover: bool = False,
        server_no_context_takeover: bool = False,
        client_max_window_bits: int = 15,
        server_max_window_bits: int = 15,
        max_size: Optional[int] = None,
        level: int = zlib.Z_DEFAULT_COMPRESSION,
        server_side: bool = False,
    ) -> None:
        self.client_no_context_takeover = client_no_context_takeover
        self.server_no_context_takeover = server_no_context_takeover
        self.client_max_window_bits = client_max_window_bits
        self.server_max_window_bits = server_max_window_bits
        self.max_size = max_size
        self.level = level
        #: ``True`` when this end is the server: it then compresses under the
        #: ``server_*`` parameters and inflates under the ``client_*`` ones.
        self.server_side = server_side
        if server_side:
            own_no_context, own_bits = server_no_context_takeover, server_max_window_bits
            self._peer_no_context = client_no_context_takeover
        else:
            own_no_context, own_bits = client_no_context_takeover, client_max_window_bits
            self._peer_no_context = server_no_context_takeover
        # A window of 15 bits inflates any stream made with a smaller one.
        self._inflater = zlib.decompressobj(-15)
        self._inflater_used = False
        self._inflating = False
        self._produced = 0
        # zlib cannot make a raw stream with a 256-byte window (it silently
        # uses 512), which a peer holding us to 8 bits could not inflate;
        # sending uncompressed is always allowed, so we do that instead.
        self.can_compress = own_bits > 8
        self._wbits = own_bits
        self._deflater = (
            zlib.compressobj(level, zlib.DEFLATED, -own_bits) if self.can_compress else None
        )
        # Without context takeover each message is compressed on its own:
        # a full flush forgets the window, so nothing later refers back.
        self._no_context = own_no_context
        self._flush_mode = zlib.Z_FULL_FLUSH if own_no_context else zlib.Z_SYNC_FLUSH

    def __repr__(self) -> str:
        return (
            f"Deflate(client_no_context_takeover={self.client_no_context_takeover}, "
            f"server_no_context_takeover={self.server_no_context_takeover}, "
            f"client_max_window_bits={self.client_max_window_bits}, "
            f"server_max_window_bits={self.server_max_window_bits})"
        )

    # -- incoming ----------------------------------------------------------

    def decode(self, frame: Frame) -> Frame:
        """Inflate ``frame`` if it belongs to a compressed message (RFC 7692 section 6.2)."""
        opcode = frame.opcode
        if opcode >= 0x8 or opcode == Opcode.CONTINUATION:
            if frame.rsv1:
                kind = "control" if opcode >= 0x8 else "continuation"
                raise ProtocolViolation(f"RSV1 set on a {kind} frame")
            if opcode >= 0x8 or not self._inflating:
                return frame
        elif frame.rsv1:
            if self._peer_no_context and self._inflater_used:
                self._inflater = zlib.decompressobj(-15)
            self._inflater_used = True
            self._inflating = True
            self._produced = 0
        else:
            self._inflating = False
            return frame
        payload = frame.payload
        if not frame.fin:
            return Frame(opcode, self._inflate(payload), False)
        self._inflating = False
        if type(payload) is bytes and len(payload) < _JOIN_TAIL_BELOW:
            # A small last frame (the usual whole small message): its payload
            # and the flush marker in one call, one object fewer.
            return Frame(opcode, self._inflate(payload + _TAIL), True)
        data = self._inflate(payload)
        tail = self._inflate(_TAIL)
        if tail:
            data += tail
        return Frame(opcode, data, True)

    def _inflate(self, data: Payload) -> bytes:
        max_size = self.max_size
        try:
            if max_size is None:
                out = self._inflater.decompress(data)
            else:
                remaining = max_size - self._produced
                # Asking for one byte more than allowed tells an over-limit
                # message apart without inflating the rest of it.
                out = self._inflater.decompress(data, remaining + 1)
                if len(out) > remaining:
                    raise PayloadTooLarge(
                        f"message inflates to more than the {max_size} byte limit"
                    )
        except zlib.error as error:
            raise ProtocolViolation(f"invalid compressed data: {error}") from None
        self._produced += len(out)
        return out

    # -- outgoing ----------------------------------------------------------

    def encode(self, frame: Frame) -> Frame:
        """Compress a whole outgoing Text or Binary message (RFC 7692 section 7.2.1).

        A message of at least :data:`UNCOMPRESSED_FALLBACK_SIZE` bytes that
        deflate would make bigger (random or already compressed data) goes
        out uncompressed, RSV1 off (section 6: an endpoint may always send a
        message uncompressed), so that a peer whose size limit the message
        fits is not sent a bigger frame. A smaller message grows by a few
        bytes at most and is sent compressed.

        The peer's inflater must see exactly the compressed data the shared
        compressor produced, or later messages that refer back into the
        window would inflate wrongly. Without context takeover that holds:
        each message ends with a full flush, after which nothing refers to
        it, so discarding its output is safe. With context takeover the
        compressor is copied before such a message and the copy replaces it
        when the output is discarded.
        """
        deflater = self._deflater
        if deflater is None or frame.opcode >= 0x8:
            return frame
        payload = frame.payload
        size = len(payload)
        may_fall_back = size >= UNCOMPRESSED_FALLBACK_SIZE
        keep = deflater.copy() if may_fall_back and not self._no_context else None
        data = deflater.compress(payload) + deflater.flush(self._flush_mode)
        if data.endswith(_TAIL):
            data = data[:-4]
        if may_fall_back and len(data) >= size:
            if keep is not None:
                self._deflater = keep
            return frame
        return Frame(frame.opcode, data, frame.fin, rsv1=True)


#: Below this size a last frame's payload is inflated together with the
#: flush marker (one call); above it, copying the payload to append four
#: bytes would cost more than the second call.
_JOIN_TAIL_BELOW = 4096

#: Size from which :meth:`Deflate.encode` sends a message uncompressed when
#: deflate would make it bigger. Below it the growth is a few dozen bytes at
#: most (5 per stored block), which can push no peer over its size limit,
#: and with context takeover undoing the compression needs a copy of the
#: compressor, which costs about as much as compressing the message. It also
#: keeps the Autobahn fuzzing server's cases 12.5.x compressed: that server
#: (kosoku) fails on an uncompressed message in a compressed session
#: ("Strings must be encoded before hashing"), which RFC 7692 section 6
#: allows and real servers accept.
UNCOMPRESSED_FALLBACK_SIZE = 64 * 1024


def negotiate_server(
    values: Sequence[str], max_size: Optional[int] = None
) -> Tuple[Optional[Deflate], Optional[str]]:
    """Answer a client's ``Sec-WebSocket-Extensions`` offers as a server (RFC 7692 section 5).

    Returns ``(deflate, header_value)`` for the first permessage-deflate
    offer this end can accept, or ``(None, None)`` when there is none (then
    the connection simply goes uncompressed). A malformed or unacceptable
    offer is skipped, as section 5.1 allows. The answer echoes the client's
    ``server_no_context_takeover`` and ``server_max_window_bits`` requests
    (which a server must honour) and its ``client_no_context_takeover``,
    and repeats a ``client_max_window_bits`` value that the client set.
    """
    try:
        extensions = parse_extensions(values)
    except CompressionParameterError:
        return None, None
    for name, param_list in extensions:
        if name != EXTENSION_NAME:
            continue
        params: Dict[str, Optional[str]] = {}
        try:
            for key, value in param_list:
                if key not in _PARAMETERS or key in params:
                    raise CompressionParameterError(f"bad parameter {key!r}")
                params[key] = value
            for flag in ("server_no_context_takeover", "client_no_context_takeover"):
                if params.get(flag, None) is not None:
                    raise CompressionParameterError(f"{flag} must not have a value")
            server_bits = 15
            if "server_max_window_bits" in params:
                server_bits = _bits("server_max_window_bits", params["server_max_window_bits"])
            client_bits = 15
            if params.get("client_max_window_bits") is not None:
                client_bits = _bits("client_max_window_bits", params["client_max_window_bits"])
        except CompressionParameterError:
            continue
        answer = [EXTENSION_NAME]
        server_no_context = "server_no_context_takeover" in params
        client_no_context = "client_no_context_takeover" in params
        if server_no_context:
            answer.append("server_no_context_takeover")
        if client_no_context:
            answer.append("client_no_context_takeover")
        if "server_max_window_bits" in params:
            answer.append(f"server_max_window_bits={server_bits}")
        if params.get("client_max_window_bits") is not None:
            answer.append(f"client_max_window_bits={client_bits}")
        deflate = Deflate(
            client_no_context_takeover=client_no_context,
            server_no_context_takeover=server_no_context,
            client_max_window_bits=client_bits,
            server_max_window_bits=server_bits,
            max_size=max_size,
            server_side=True,
        )
        return deflate, "; ".join(answer)
    return None, None
