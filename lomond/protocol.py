"""The sans-I/O client side of RFC 6455: bytes in, events and bytes out.

:class:`ClientProtocol` never touches a socket, and it owns every rule of the
protocol, so that any driver (the threaded session, a loop serving many
connections) only moves bytes and runs timers:

- :meth:`~ClientProtocol.receive_data` and :meth:`~ClientProtocol.receive_eof`
  take what the socket delivered and return the events it completes;
- the protocol's own replies (the automatic Pong, the echo of the server's
  Close, the Close that fails the connection) wait in a queue that
  :meth:`~ClientProtocol.data_to_send` empties. A driver calls it after it
  has handled the events of one :meth:`~ClientProtocol.receive_data` call,
  so a handler for :class:`~lomond.events.Closing` may still send before
  the echo goes out (RFC 6455 section 5.5.1 lets the endpoint finish
  sending first);
- :attr:`~ClientProtocol.should_close` says when the driver must close the
  transport, and :meth:`~ClientProtocol.finish` gives the final events
  (``Disconnected``, preceded by ``ConnectFail`` if the upgrade never
  completed);
- every ``send_*`` method returns the bytes to write.

It holds no locks: the driver serializes the ``send_*`` calls and
:meth:`~ClientProtocol.data_to_send` (they share the compressor and the
close state), and calls ``receive_*`` from one thread.

A violation by the server never raises out of :meth:`~ClientProtocol.receive_data`:
it ends the event list with a :class:`~lomond.events.ProtocolError`
carrying the close code, after every event that was valid before it, and
the protocol ignores further input.
"""

from __future__ import annotations

import codecs
import struct
from enum import Enum
from typing import List, Optional, Sequence, Tuple, Union

from . import events
from .compression import Deflate, PerMessageDeflate, build_offer_header, negotiate
from .constants import (
    DEFAULT_MAX_SIZE,
    MAX_RESPONSE_HEADER_SIZE,
    PAYLOAD_READ_SIZE,
    READ_SIZE,
)
from .errors import (
    FrameBuildError,
    HandshakeError,
    PayloadTooLarge,
    ProtocolViolation,
    WebSocketClosed,
    WebSocketClosing,
    WebSocketUnavailable,
)
from .frame import MAX_CONTROL_PAYLOAD, Frame, Opcode, build_frame
from .handshake import URL, build_request, check_response, make_key
from .reader import FrameReader, read_frames
from .response import Response
from .status import Status, is_valid_close_code

_unpack_code = struct.Struct("!H").unpack_from
_pack_code = struct.Struct("!H").pack
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

#: A close reason is limited so the Close payload stays within 125 bytes.
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2


class State(Enum):
    """Connection state (RFC 6455 sections 4 and 7)."""

    CONNECTING = "connecting"
    OPEN = "open"
    #: A Close frame was sent or received, not both yet.
    CLOSING = "closing"
    #: The close handshake completed, or the connection failed.
    CLOSED = "closed"


def encode_close(code: Optional[int], reason: Union[str, bytes] = "") -> bytes:
    """The payload of a Close frame (RFC 6455 section 5.5.1).

    ``code`` must be one a client may send (not 1005, 1006 or 1015), or
    ``None`` for a Close without a status code (a reason cannot be sent
    without a code, so it is left out, as Lomond 0.3 did). ``reason`` is a
    ``str`` or UTF-8 ``bytes``; it is cut, at a character boundary, to fit
    the 125-byte limit.
    """
    if isinstance(reason, (bytes, bytearray)):
        try:
            reason = bytes(reason).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameBuildError("a close reason must be UTF-8 (RFC 6455 5.5.1)") from None
    elif not isinstance(reason, str):
        raise TypeError(f"a close reason must be str or UTF-8 bytes, not {type(reason).__name__}")
    if code is None:
        return b""
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"a close code must be an int or None, not {type(code).__name__}")
    if not is_valid_close_code(code):
        raise FrameBuildError(f"{code!r} is not a close code that may be sent (RFC 6455 7.4)")
    data = reason.encode("utf-8")
    if len(data) > MAX_CLOSE_REASON:
        data = data[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return _pack_code(code) + data


def decode_close(payload: bytes) -> Tuple[Optional[int], str]:
    """Parse a received Close payload, raising :class:`ProtocolViolation` if it is invalid.

    An empty payload means no status code (reported as ``None``); a 1-byte
    payload, a code that may not appear on the wire (RFC 6455 section 7.4)
    and a reason that is not UTF-8 (code 1007) are violations.
    """
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise ProtocolViolation("close frame with a 1-byte payload")
    code = _unpack_code(payload)[0]
    if not is_valid_close_code(code):
        raise ProtocolViolation(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("close reason is not valid UTF-8", Status.INVALID_PAYLOAD) from None
    return code, reason


class ClientProtocol:
    """One WebSocket connection's protocol state, from the upgrade request to the close.

    ``offers`` are permessage-deflate offers (RFC 7692); ``max_size`` caps an
    assembled message in bytes (``None``: no cap); ``auto_pong`` queues a
    Pong for every Ping received (RFC 6455 section 5.5.2).
    """

    def __init__(
        self,
        url: URL,
        *,
        protocols: Sequence[str] = (),
        agent: Optional[str] = None,
        headers: Sequence[Tuple[str, str]] = (),
        offers: Sequence[PerMessageDeflate] = (),
        max_size: Optional[int] = DEFAULT_MAX_SIZE,
        key: Optional[bytes] = None,
        auto_pong: bool = True,
    ) -> None:
        self.url = url
        self.key = key or make_key()
        self.protocols = list(protocols)
        self.agent = agent
        self.headers = list(headers)
        self.offers = list(offers)
        self.max_size = max_size
        self.auto_pong = auto_pong
        self.state = State.CONNECTING
        self.response: Optional[Response] = None
        self.protocol: Optional[str] = None
        self.deflate: Optional[Deflate] = None
        #: Set when a Close frame was sent / received (RFC 6455 section 7.1).
        self.close_sent = False
        self.close_received = False
        #: The violation that failed the connection, if any.
        self.failure: Optional[ProtocolViolation] = None
        #: Whether the server closed its end of the stream.
        self.eof_received = False
        # Replies the protocol owes the server, emptied by data_to_send():
        # Pongs now, the echo of the server's Close and the failing Close
        # built only then (a Closing handler may still send before them).
        self._replies: List[bytes] = []
        self._echo_pending = False
        self._fail_pending = False
        # Why the transport must close (set once there is nothing more to
        # exchange), and whether that end is a graceful one.
        self._end: Optional[Tuple[str, bool]] = None
        self._header_buffer = bytearray()
        self._reader: Optional[FrameReader] = None
        # Payload bytes the frame in progress still lacks (kept by the reader).
        self._missing = [0]
        # The fragmented message in progress (RFC 6455 section 5.4).
        self._message_opcode: Optional[int] = None
        # Its pieces: decoded text for a Text message, payloads for Binary.
        self._text_parts: List[str] = []
        self._data_parts: List[Union[bytes, bytearray, memoryview]] = []
        self._message_size = 0
        self._utf8: Optional[codecs.IncrementalDecoder] = None
        self._received_close_code: Optional[int] = None

    # -- opening handshake -------------------------------------------------

    def request(self) -> bytes:
        """The upgrade request to send first (RFC 6455 section 4.1)."""
        extensions = None
        if self.offers:
            extensions = build_offer_header(self.offers)
        return build_request(
            self.url, self.key, self.agent, self.protocols, extensions, self.headers
        )

    def _receive_handshake(self, data: bytes) -> List[events.Event]:
        self._header_buffer += data
        end = self._header_buffer.find(b"\r\n\r\n")
        if end == -1:
            if len(self._header_buffer) > MAX_RESPONSE_HEADER_SIZE:
                return self._handshake_failed(
                    f"response header block exceeds {MAX_RESPONSE_HEADER_SIZE} bytes"
                )
            return []
        if end + 4 > MAX_RESPONSE_HEADER_SIZE:
            return self._handshake_failed(
                f"response header block exceeds {MAX_RESPONSE_HEADER_SIZE} bytes"
            )
        header_data = bytes(self._header_buffer[: end + 4])
        rest = bytes(self._header_buffer[end + 4 :])
        self._header_buffer = bytearray()
        try:
            response = Response(header_data)
        except HandshakeError as error:
            return self._handshake_failed(f"invalid response to the upgrade request: {error}")
        self.response = response
        try:
            self.protocol = check_response(response, self.key, self.protocols)
            self.deflate = self._negotiate(response)
        except HandshakeError as error:
            self.state = State.CLOSED
            self._end = ("handshake rejected", False)
            return [events.Rejected(response, str(error))]
        self.state = State.OPEN
        self._reader = read_frames(
            self.max_size, allow_rsv1=self.deflate is not None, missing=self._missing
        )
        extensions = frozenset([self.deflate.name]) if self.deflate is not None else frozenset()
        ready: List[events.Event] = [events.Ready(response, self.protocol, extensions)]
        if rest:
            ready.extend(self._receive_frames(rest))
        return ready

    def _negotiate(self, response: Response) -> Optional[Deflate]:
        values = [value for name, value in response.raw_headers
                  if name.lower() == "sec-websocket-extensions"]
        if not values:
            return None
        if not self.offers:
            raise HandshakeError("server selected an extension that was not offered")
        return negotiate(self.offers, values, self.max_size)

    def _handshake_failed(self, reason: str) -> List[events.Event]:
        self.state = State.CLOSED
        self._end = (reason, False)
        return [events.ConnectFail(reason)]

    # -- receiving ---------------------------------------------------------

    @property
    def read_size(self) -> int:
        """How many bytes the next read should ask for.

        :data:`READ_SIZE` normally; more, up to :data:`PAYLOAD_READ_SIZE`,
        while a large payload is known to be on its way, so that a big
        message takes fewer reads (and fewer passes through the event loop).
        """
        missing = self._missing[0]
        if missing <= READ_SIZE:
            return READ_SIZE
        return missing if missing < PAYLOAD_READ_SIZE else PAYLOAD_READ_SIZE

    def receive_data(self, data: bytes) -> List[events.Event]:
        """Feed bytes received from the server; return the events they complete."""
        if self.state is State.CONNECTING:
            return self._receive_handshake(data)
        if self.close_received or self.failure is not None or self._reader is None:
            # RFC 6455 section 5.5.1: nothing after the peer's Close is data.
            return []
        return self._receive_frames(data)

    def _receive_frames(self, data: bytes) -> List[events.Event]:
        assert self._reader is not None
        frames, error = self._reader.send(data)
        out: List[events.Event] = []
        try:
            self._process(frames, out)
            # A malformed frame after the peer's Close is not data (RFC 6455
            # section 5.5.1): the close stays graceful.
            if error is not None and not self.close_received:
                raise error
        except ProtocolViolation as violation:
            self._fail(violation, out)
        return out

    def _process(self, frames: List[Frame], out: List[events.Event]) -> None:
        deflate = self.deflate
        append = out.append
        for frame in frames:
            if deflate is not None:
                frame = deflate.decode(frame)
            opcode = frame.opcode
            if opcode >= 0x8:
                if opcode == Opcode.PING:
                    payload = bytes(frame.payload)
                    append(events.Ping(payload))
                    if self.auto_pong:
                        # Answered even after our Close, until the server's
                        # arrives: only data frames stop once a Close is sent
                        # (RFC 6455 section 5.5.1).
                        self._replies.append(build_frame(Opcode.PONG, payload))
                elif opcode == Opcode.PONG:
                    append(events.Pong(bytes(frame.payload)))
                else:
                    self._receive_close(bytes(frame.payload), out)
                    return
            elif opcode and frame.fin and self._message_opcode is None:
                # The common case, a whole message in one frame: no assembly.
                # The reader delivers a whole frame as bytes (only pieces of
                # a frame are views), so this is one cheap type check.
                data = frame.payload
                if type(data) is not bytes:
                    data = bytes(data)
                if opcode == Opcode.TEXT:
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError as error:
                        raise self._bad_utf8(error) from None
                    append(events.Text(text))
                else:
                    append(events.Binary(data))
            else:
                message = self._assemble(frame)
                if message is not None:
                    append(message)

    def _assemble(self, frame: Frame) -> Optional[events.Event]:
        opcode = frame.opcode
        if opcode == Opcode.CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolViolation("continuation frame without a message to continue")
        else:
            if self._message_opcode is not None:
                raise ProtocolViolation("new data frame before the fragmented message finished")
            self._message_opcode = opcode
            self._message_size = 0
            self._text_parts = []
            self._data_parts = []
            self._utf8 = _Utf8Decoder() if opcode == Opcode.TEXT else None
        payload = frame.payload
        self._message_size += len(payload)
        if self.max_size is not None and self._message_size > self.max_size:
            raise PayloadTooLarge(f"message exceeds max_size={self.max_size} bytes")
        if self._utf8 is not None:
            # Decoding each fragment as it arrives fails the connection at the
            # first invalid byte instead of after the whole message.
            try:
                self._text_parts.append(self._utf8.decode(payload, frame.fin))
            except UnicodeDecodeError as error:
                raise self._bad_utf8(error) from None
        else:
            self._data_parts.append(payload)
        if not frame.fin:
            return None
        is_text = self._message_opcode == Opcode.TEXT
        self._message_opcode = None
        self._utf8 = None
        if is_text:
            text, self._text_parts = "".join(self._text_parts), []
            return events.Text(text)
        data, self._data_parts = b"".join(self._data_parts), []
        return events.Binary(data)

    @staticmethod
    def _bad_utf8(error: UnicodeDecodeError) -> ProtocolViolation:
        return ProtocolViolation(f"invalid UTF-8 in text message: {error.reason}",
                                 Status.INVALID_PAYLOAD)

    def _receive_close(self, payload: bytes, out: List[events.Event]) -> None:
        code, reason = decode_close(payload)
        self.close_received = True
        self._received_close_code = code
        if self.close_sent:
            self.state = State.CLOSED
            out.append(events.Closed(code, reason))
        else:
            # RFC 6455 section 5.5.1: answer with a Close echoing the code,
            # once the Closing handlers had their chance to send.
            self.state = State.CLOSING
            self._echo_pending = True
            out.append(events.Closing(code, reason))

    def _fail(self, violation: ProtocolViolation, out: List[events.Event]) -> None:
        # RFC 6455 section 7.1.7: send a Close with the violation's code
        # unless one was sent already, then drop the connection. The
        # event's ``critical`` says which of the two happens on the wire.
        self.failure = violation
        self._fail_pending = not self.close_sent
        self._end = (f"protocol error: {violation}", False)
        out.append(events.ProtocolError(str(violation), not self._fail_pending, violation.code))

    def receive_eof(self) -> List[events.Event]:
        """The server closed its end of the stream; return the events that follow.

        During the upgrade that is a :class:`~lomond.events.ConnectFail`;
        afterwards there is no event, but :attr:`should_close` becomes true
        and :meth:`finish` reports whether the close was graceful.
        """
        self.eof_received = True
        if self._end is not None:
            return []
        if self.state is State.CONNECTING:
            return self._handshake_failed("server closed the connection during the handshake")
        if self.handshake_complete:
            self._end = ("closed", True)
        elif self.close_sent:
            self._end = ("server closed the connection without answering our close", False)
        else:
            self._end = ("server closed the connection without a close frame", False)
        return []

    # -- replies and the end of the connection -------------------------------

    def data_to_send(self, include_close: bool = True) -> bytes:
        """The protocol's own replies owed to the server (``b""`` if none), once.

        Pongs for received Pings, then the echo of the server's Close, or the
        Close that fails the connection after a violation (RFC 6455 sections
        5.5.1, 5.5.2 and 7.1.7). Call it after the events of each
        :meth:`receive_data` call were handled, under the same serialization
        as the ``send_*`` methods. With ``include_close=False`` only the
        Pongs are returned: a driver may answer a Ping as soon as its
        handlers ran, before later events of the same data (Autobahn 5.6
        expects the Pong before the echo of a message that followed the Ping),
        while a Close still waits for its Closing handlers.
        """
        replies = self._replies
        if not include_close:
            self._replies = []
            return b"".join(replies)
        if self._echo_pending:
            self._echo_pending = False
            if not self.close_sent:
                replies.append(self.send_close(self._received_close_code, ""))
        if self._fail_pending:
            self._fail_pending = False
            failure = self.failure
            assert failure is not None
            self.close_sent = True
            self.state = State.CLOSED
            replies.append(build_frame(Opcode.CLOSE, encode_close(failure.code, str(failure))))
        if not replies:
            return b""
        self._replies = []
        return b"".join(replies)

    @property
    def replies_pending(self) -> bool:
        """Whether :meth:`data_to_send` has something (cheap: a driver checks it per read).

        Only ``receive_*`` queue replies, so the receiving thread may ask
        without holding the lock that serializes sends.
        """
        return bool(self._replies) or self._echo_pending or self._fail_pending

    @property
    def should_close(self) -> bool:
        """Whether the driver should close the transport now (after :meth:`data_to_send`).

        True after end of stream, a rejected or failed upgrade, or a protocol
        violation. After a clean close handshake the client still waits for
        the server to close TCP first (RFC 6455 section 7.1.1), which
        :meth:`receive_eof` then reports.
        """
        return self._end is not None

    def finish(self, reason: Optional[str] = None, graceful: bool = False) -> List[events.Event]:
        """The connection's last events, once the driver closed the transport.

        Without ``reason`` the protocol's own account is used (see
        :attr:`should_close`). A driver that ends the connection for its own
        reason (a timeout, a failed socket, a stop request) passes it, with
        whether that counts as graceful. Before the upgrade completed the
        end is reported as :class:`~lomond.events.ConnectFail` first, so every
        ``Connected`` still gets its ``Disconnected``.
        """
        out: List[events.Event] = []
        if reason is None:
            reason, graceful = self._end or ("closed", False)
        elif self.state is State.CONNECTING:
            out.append(events.ConnectFail(reason))
            graceful = False
        if self._end is None:
            self._end = (reason, graceful)
        self.state = State.CLOSED
        out.append(events.Disconnected(reason, graceful=graceful))
        return out

    # -- sending (the session serializes these calls) ----------------------

    def _check_can_send(self) -> None:
        if self.state is State.CONNECTING:
            raise WebSocketUnavailable("the websocket is not ready yet: send once Ready arrives")
        # A violation alone does not stop sends: messages delivered before
        # the ProtocolError event may still be answered until data_to_send()
        # takes the failing Close.
        if self.state is State.CLOSED:
            raise WebSocketClosed("the websocket is closed")
        if self.close_sent:
            raise WebSocketClosing("the websocket is closing")

    def send_data(self, opcode: int, payload: bytes, compress: bool = True) -> bytes:
        """A complete Text or Binary message as one frame (RFC 6455 section 5.6).

        Sending stays possible after the server's Close until it is echoed,
        so a Closing handler can still reply.
        """
        self._check_can_send()
        if compress and self.deflate is not None:
            frame = self.deflate.encode(Frame(opcode, payload))
            return build_frame(frame.opcode, frame.payload, rsv1=frame.rsv1)
        return build_frame(opcode, payload)

    def _control(self, opcode: int, data: bytes) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"control frame data must be bytes, not {type(data).__name__}")
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise FrameBuildError(
                f"control frame payload is {len(data)} bytes; the limit is 125 (RFC 6455 5.5)"
            )
        self._check_can_send()
        return build_frame(opcode, bytes(data))

    def send_ping(self, data: bytes = b"") -> bytes:
        """A Ping frame (RFC 6455 section 5.5.2)."""
        return self._control(Opcode.PING, data)

    def send_pong(self, data: bytes = b"") -> bytes:
        """A Pong frame (RFC 6455 section 5.5.3)."""
        return self._control(Opcode.PONG, data)

    def send_close(
        self, code: Optional[int] = Status.NORMAL, reason: Union[str, bytes] = ""
    ) -> bytes:
        """A Close frame (RFC 6455 section 5.5.1): starts or completes the close handshake.

        ``code=None`` sends a Close without a status code.
        """
        payload = encode_close(code, reason)
        self._check_can_send()
        self.close_sent = True
        self.state = State.CLOSED if self.close_received else State.CLOSING
        return build_frame(Opcode.CLOSE, payload)

    @property
    def handshake_complete(self) -> bool:
        """Whether both Close frames have been exchanged."""
        return self.close_sent and self.close_received


__all__ = ["ClientProtocol", "State", "decode_close", "encode_close"]
