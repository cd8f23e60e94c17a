"""The sans-I/O core of RFC 6455, for either end: bytes in, events and bytes out.

:class:`Protocol` holds every rule both ends share (frame parsing, message
assembly, UTF-8 validation, control frames, the close handshake and failing
the connection; RFC 6455 sections 5 and 7), parameterized by its
:class:`Side`. :class:`ClientProtocol` adds the client's opening handshake
(it sends the upgrade request and checks the answer) and
:class:`ServerProtocol` the server's (it checks the request and answers it).
None of them touches a socket, so that any driver (the threaded session, a
loop serving many connections, a test server) only moves bytes and runs
timers:

- :meth:`~Protocol.receive_data` and :meth:`~Protocol.receive_eof` take what
  the socket delivered and return the events it completes;
- the protocol's own output (a server's answer to the upgrade request, the
  automatic Pong, the echo of the peer's Close, the Close that fails the
  connection) waits in a queue that :meth:`~Protocol.data_to_send` empties.
  A driver calls it after it has handled the events of one
  :meth:`~Protocol.receive_data` call, so a handler for
  :class:`~lomond.events.Closing` may still send before the echo goes out
  (RFC 6455 section 5.5.1 lets the endpoint finish sending first);
- :attr:`~Protocol.should_close` says when the driver must close the
  transport, and :meth:`~Protocol.finish` gives the final events
  (``Disconnected``, preceded by ``ConnectFail`` if the upgrade never
  completed);
- every ``send_*`` method returns the bytes to write.

The side decides, once, at construction: a client masks every frame it
sends and fails on a masked frame, a server sends unmasked frames and fails
on an unmasked one (section 5.1, close code 1002); after a completed close
handshake the server closes the TCP connection first (section 7.1.1), so its
:attr:`~Protocol.should_close` becomes true then, while a client waits for
the server's end of stream. The events are the same for both ends
(:class:`~lomond.events.Text`, :class:`~lomond.events.Binary`,
:class:`~lomond.events.Ping`, :class:`~lomond.events.Pong`,
:class:`~lomond.events.Closing` when the peer starts the close,
:class:`~lomond.events.Closed` when it answers ours,
:class:`~lomond.events.ProtocolError`, :class:`~lomond.events.Disconnected`);
their documentation speaks of the server because the client is lomond's
usual end: for a :class:`ServerProtocol` the peer is the client.

.. not-runnable: a fragment: ``sock`` is a socket the server accepted

A server's opening handshake::

    protocol = ServerProtocol(compress=True)
    for event in protocol.receive_data(sock.recv(4096)):   # [] until the request is whole
        if isinstance(event, UpgradeRequest):
            if event.request.target == "/chat":
                protocol.accept(subprotocol=None)           # queues the 101 answer
            else:
                protocol.reject(404, "no such chat room")   # queues a 404
        # a request that is not a valid upgrade: ConnectFail, and a 400 is queued
    sock.sendall(protocol.data_to_send())
    if protocol.should_close:                               # rejected
        sock.close()

None of them holds a lock: the driver serializes the ``send_*`` calls and
:meth:`~Protocol.data_to_send` (they share the compressor and the close
state), and calls ``receive_*`` from one thread.

A violation by the peer never raises out of :meth:`~Protocol.receive_data`:
it ends the event list with a :class:`~lomond.events.ProtocolError`
carrying the close code, after every event that was valid before it, and
the protocol ignores further input.
"""

from __future__ import annotations

import codecs
import struct
from enum import Enum
from time import time as _time
from typing import Any, ClassVar, List, Optional, Sequence, Tuple, Union

import attrs

from . import events
from .compression import (
    Deflate,
    PerMessageDeflate,
    build_offer_header,
    negotiate,
    negotiate_server,
)
from .constants import (
    DEFAULT_MAX_SIZE,
    MAX_REQUEST_HEADER_SIZE,
    MAX_RESPONSE_HEADER_SIZE,
    PAYLOAD_READ_SIZE,
    READ_SIZE,
)
from .errors import (
    FrameBuildError,
    HandshakeError,
    InvalidRequest,
    PayloadTooLarge,
    ProtocolViolation,
    WebSocketClosed,
    WebSocketClosing,
    WebSocketUnavailable,
)
from .frame import MAX_CONTROL_PAYLOAD, Frame, Opcode, build_frame
from .handshake import (
    URL,
    build_rejection,
    build_request,
    build_response,
    check_request,
    check_response,
    make_key,
)
from .reader import FrameReader, read_frames
from .request import Request
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


#: A module global: reading it is cheaper than the enum's class attribute.
_OPEN = State.OPEN


def encode_close(code: Optional[int], reason: Union[str, bytes] = "") -> bytes:
    """The payload of a Close frame (RFC 6455 section 5.5.1).

    ``code`` must be one an endpoint may send (not 1005, 1006 or 1015), or
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



class Side(Enum):
    """Which end of a connection a :class:`Protocol` is (RFC 6455 section 5.1).

    The client masks the frames it sends, the server must not; each end
    fails the connection (close code 1002) on a frame masked the wrong way.
    """

    CLIENT = "client"
    SERVER = "server"


@attrs.frozen(repr=False, eq=False)
class UpgradeRequest(events.Event):
    """A server's first event: the client's upgrade request is whole and valid.

    ``request`` has passed :func:`~lomond.handshake.check_request` (RFC 6455
    section 4.2.1). The application answers it with
    :meth:`ServerProtocol.accept` or :meth:`ServerProtocol.reject`; a request
    that is not a valid upgrade never gets here, it is answered by the
    protocol itself (see :class:`ServerProtocol`).
    """

    name: ClassVar[str] = "upgrade_request"
    request: Request


class Protocol:
    """One WebSocket connection's protocol state, after the opening handshake, for either side.

    Used directly, it starts open: for a connection whose opening handshake
    was done elsewhere (by a web framework, say), with ``deflate`` the
    permessage-deflate transforms agreed there (RFC 7692; their
    ``server_side`` must match ``side``) or ``None``. :class:`ClientProtocol`
    and :class:`ServerProtocol` start with the handshake instead.

    ``max_size`` caps an assembled message in bytes (``None``: no cap);
    ``auto_pong`` queues a Pong for every Ping received (RFC 6455 section
    5.5.2).
    """

    #: Whether the connection starts with an opening handshake, which the
    #: subclass's ``_receive_handshake`` reads; a plain Protocol starts open.
    _handshake_first: ClassVar[bool] = False

    def __init__(
        self,
        side: Side,
        *,
        max_size: Optional[int] = DEFAULT_MAX_SIZE,
        auto_pong: bool = True,
        deflate: Optional[Deflate] = None,
    ) -> None:
        if not isinstance(side, Side):
            raise TypeError(f"side must be a Side, not {type(side).__name__}")
        if deflate is not None and deflate.server_side is (side is Side.CLIENT):
            # Each end compresses and inflates under its own parameters.
            raise ValueError(f"deflate is for the other side: server_side={deflate.server_side}")
        # The side as a flag: the send paths pass it on as build_frame's
        # ``mask`` argument as it is, so they test nothing per frame. It is
        # the only instance attribute the side needs (``side`` is computed
        # from it): CPython 3.11 stops sharing an instance's attribute keys
        # at 30 names, and each attribute read on the hot path then costs
        # a dict lookup (a test keeps ClientProtocol below that).
        self._client = side is Side.CLIENT
        self.max_size = max_size
        self.auto_pong = auto_pong
        self.state = State.CONNECTING
        #: The subprotocol agreed in the opening handshake, or ``None``.
        self.protocol: Optional[str] = None
        #: The permessage-deflate transforms agreed, or ``None``.
        self.deflate: Optional[Deflate] = None
        #: Set when a Close frame was sent / received (RFC 6455 section 7.1).
        self.close_sent = False
        self.close_received = False
        #: The violation that failed the connection, if any.
        self.failure: Optional[ProtocolViolation] = None
        #: Whether the peer closed its end of the stream.
        self.eof_received = False
        # Replies the protocol owes the peer, emptied by data_to_send(): the
        # answer to an upgrade request and Pongs now, the echo of the peer's
        # Close and the failing Close built only then (a Closing handler may
        # still send before them).
        self._replies: List[bytes] = []
        self._echo_pending = False
        self._fail_pending = False
        # Why the transport must close (set once there is nothing more to
        # exchange), and whether that end is a graceful one.
        self._end: Optional[Tuple[str, bool]] = None
        # The opening handshake's bytes (a subclass's); the bytes after the
        # header block until the frame reader takes them.
        self._header_buffer = bytearray()
        self._reader: Optional[FrameReader] = None
        # Payload bytes the frame in progress still lacks, and the reader's
        # hint about big frames (see read_frames; kept by the reader).
        self._missing = [0, 0]
        # The fragmented message in progress (RFC 6455 section 5.4).
        self._message_opcode: Optional[int] = None
        # Its pieces: decoded text for a Text message, payloads for Binary.
        self._parts: List[Any] = []
        self._message_size = 0
        self._utf8: Optional[codecs.IncrementalDecoder] = None
        self._received_close_code: Optional[int] = None
        if not self._handshake_first:
            self._open(deflate)

    @property
    def side(self) -> Side:
        """This end of the connection: :attr:`Side.CLIENT` or :attr:`Side.SERVER`."""
        return Side.CLIENT if self._client else Side.SERVER

    @property
    def _peer(self) -> str:
        return "server" if self._client else "client"

    def _open(self, deflate: Optional[Deflate]) -> None:
        """The opening handshake is done: frames may flow (RFC 6455 section 4, end)."""
        self.state = State.OPEN
        self.deflate = deflate
        # The reader for this side, chosen once: a server's requires and
        # removes the client's masking (RFC 6455 section 5.3).
        self._reader = read_frames(
            self.max_size, allow_rsv1=deflate is not None, missing=self._missing,
            expect_masked=not self._client,
        )

    # -- opening handshake -------------------------------------------------

    def _receive_handshake(self, data: bytes) -> List[events.Event]:
        """Bytes received during the opening handshake (``state`` is CONNECTING)."""
        raise NotImplementedError

    def _take_header_block(self, data: bytes, limit: int, what: str) -> Optional[bytes]:
        """Buffer ``data`` until an HTTP header block is whole; return it, or ``None`` until then.

        What follows the block stays in the buffer. Raises
        :class:`HandshakeError` once the block is over ``limit`` bytes, with
        or without its end, so a peer cannot make us buffer without bound.
        """
        buffer = self._header_buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if (len(buffer) if end == -1 else end + 4) > limit:
            raise HandshakeError(f"{what} header block exceeds {limit} bytes")
        if end == -1:
            return None
        block = bytes(buffer[: end + 4])
        del buffer[: end + 4]
        return block

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
        While big frames (:data:`~lomond.reader.BIG_FRAME` bytes or more)
        arrive, reads follow their boundaries: exactly the rest of a payload,
        then one frame of the last one's size, so that a frame that fits one
        read arrives whole in it (see :func:`~lomond.reader.read_frames`).
        """
        missing, big = self._missing
        if missing:
            if big or missing > READ_SIZE:
                return missing if missing < PAYLOAD_READ_SIZE else PAYLOAD_READ_SIZE
            return READ_SIZE
        if big:
            return big if big < PAYLOAD_READ_SIZE else PAYLOAD_READ_SIZE
        return READ_SIZE

    def receive_data(self, data: bytes) -> List[events.Event]:
        """Feed bytes received from the peer; return the events they complete."""
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
        if not frames:
            return
        deflate = self.deflate
        append = out.append
        # The messages of one read arrived together: one timestamp for all.
        now = _time()
        new_text = events.new_text
        new_binary = events.new_binary
        for frame in frames:
            if deflate is not None:
                frame = deflate.decode(frame)
            opcode = frame.opcode
            if opcode >= 0x8:
                if opcode == Opcode.PING:
                    payload = bytes(frame.payload)
                    append(events.Ping(payload))
                    if self.auto_pong:
                        # Answered even after our Close, until the peer's
                        # arrives: only data frames stop once a Close is sent
                        # (RFC 6455 section 5.5.1).
                        self._replies.append(
                            build_frame(Opcode.PONG, payload, True, False, self._client)
                        )
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
                if opcode == 1:  # Opcode.TEXT, as a constant: this runs per message
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError as error:
                        raise self._bad_utf8(error) from None
                    append(new_text(text, now))
                else:
                    append(new_binary(data, now))
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
            self._parts = []
            self._utf8 = _Utf8Decoder() if opcode == Opcode.TEXT else None
        payload = frame.payload
        self._message_size += len(payload)
        if self.max_size is not None and self._message_size > self.max_size:
            raise PayloadTooLarge(f"message exceeds max_size={self.max_size} bytes")
        if self._utf8 is not None:
            # Decoding each fragment as it arrives fails the connection at the
            # first invalid byte instead of after the whole message.
            try:
                self._parts.append(self._utf8.decode(payload, frame.fin))
            except UnicodeDecodeError as error:
                raise self._bad_utf8(error) from None
        else:
            self._parts.append(payload)
        if not frame.fin:
            return None
        is_text = self._message_opcode == Opcode.TEXT
        self._message_opcode = None
        self._utf8 = None
        parts, self._parts = self._parts, []
        if is_text:
            return events.Text("".join(parts))
        return events.Binary(b"".join(parts))

    @staticmethod
    def _bad_utf8(error: UnicodeDecodeError) -> ProtocolViolation:
        return ProtocolViolation(f"invalid UTF-8 in text message: {error.reason}",
                                 Status.INVALID_PAYLOAD)

    def _receive_close(self, payload: bytes, out: List[events.Event]) -> None:
        code, reason = decode_close(payload)
        self.close_received = True
        self._received_close_code = code
        if self.close_sent:
            self._close_handshake_done()
            out.append(events.Closed(code, reason))
        else:
            # RFC 6455 section 5.5.1: answer with a Close echoing the code,
            # once the Closing handlers had their chance to send.
            self.state = State.CLOSING
            self._echo_pending = True
            out.append(events.Closing(code, reason))

    def _close_handshake_done(self) -> None:
        """Both Close frames were exchanged (RFC 6455 section 7.1.1)."""
        self.state = State.CLOSED
        if not self._client and self._end is None:
            # The server closes the TCP connection first, so the client
            # can reuse its port at once (TIME_WAIT stays on the server).
            self._end = ("closed", True)

    def _fail(self, violation: ProtocolViolation, out: List[events.Event]) -> None:
        # RFC 6455 section 7.1.7: send a Close with the violation's code
        # unless one was sent already, then drop the connection. The
        # event's ``critical`` says which of the two happens on the wire.
        self.failure = violation
        self._fail_pending = not self.close_sent
        self._end = (f"protocol error: {violation}", False)
        out.append(events.ProtocolError(str(violation), not self._fail_pending, violation.code))

    def receive_eof(self) -> List[events.Event]:
        """The peer closed its end of the stream; return the events that follow.

        During the upgrade that is a :class:`~lomond.events.ConnectFail`;
        afterwards there is no event, but :attr:`should_close` becomes true
        and :meth:`finish` reports whether the close was graceful.
        """
        self.eof_received = True
        if self._end is not None:
            return []
        peer = self._peer
        if self.state is State.CONNECTING:
            return self._handshake_failed(f"{peer} closed the connection during the handshake")
        if self.handshake_complete:
            self._end = ("closed", True)
        elif self.close_sent:
            self._end = (f"{peer} closed the connection without answering our close", False)
        else:
            self._end = (f"{peer} closed the connection without a close frame", False)
        return []

    # -- replies and the end of the connection -------------------------------

    def data_to_send(self, include_close: bool = True) -> bytes:
        """The protocol's own output owed to the peer (``b""`` if none), once.

        A server's answer to the upgrade request, Pongs for received Pings,
        then the echo of the peer's Close, or the Close that fails the
        connection after a violation (RFC 6455 sections 4.2.2, 5.5.1, 5.5.2
        and 7.1.7). Call it after the events of each :meth:`receive_data`
        call were handled, under the same serialization as the ``send_*``
        methods. With ``include_close=False`` the Close is left for later: a
        driver may answer a Ping as soon as its handlers ran, before later
        events of the same data (Autobahn 5.6 expects the Pong before the
        echo of a message that followed the Ping), while a Close still waits
        for its Closing handlers.
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
            replies.append(build_frame(
                Opcode.CLOSE, encode_close(failure.code, str(failure)), True, False, self._client
            ))
        if not replies:
            return b""
        self._replies = []
        return b"".join(replies)

    @property
    def replies_pending(self) -> bool:
        """Whether :meth:`data_to_send` has something (cheap: a driver checks it per read).

        Only ``receive_*`` (and a server's ``accept``/``reject``) queue
        replies, so the receiving thread may ask without holding the lock
        that serializes sends.
        """
        return bool(self._replies) or self._echo_pending or self._fail_pending

    @property
    def should_close(self) -> bool:
        """Whether the driver should close the transport now (after :meth:`data_to_send`).

        True after end of stream, a rejected or failed upgrade, or a protocol
        violation. After a clean close handshake the server closes TCP first
        (RFC 6455 section 7.1.1): for a server this becomes true as soon as
        both Close frames were exchanged, while a client waits for the
        server's end of stream, which :meth:`receive_eof` then reports.
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

    # -- sending (the driver serializes these calls) -----------------------

    def _check_can_send(self) -> None:
        if self.state is State.CONNECTING:
            raise WebSocketUnavailable(
                "the websocket is not ready yet: send once Ready arrives" if self._client
                else "the websocket is not open yet: accept() the upgrade request first"
            )
        # A violation alone does not stop sends: messages delivered before
        # the ProtocolError event may still be answered until data_to_send()
        # takes the failing Close.
        if self.state is State.CLOSED:
            raise WebSocketClosed("the websocket is closed")
        if self.close_sent:
            raise WebSocketClosing("the websocket is closing")

    def send_data(self, opcode: int, payload: bytes, compress: bool = True) -> bytes:
        """A complete Text or Binary message as one frame (RFC 6455 section 5.6).

        Sending stays possible after the peer's Close until it is echoed,
        so a Closing handler can still reply.
        """
        if self.state is not _OPEN or self.close_sent:
            self._check_can_send()  # raises, unless sending is still allowed
        if compress and self.deflate is not None:
            frame = self.deflate.encode(Frame(opcode, payload))
            return build_frame(frame.opcode, frame.payload, True, frame.rsv1, self._client)
        return build_frame(opcode, payload, True, False, self._client)

    def _control(self, opcode: int, data: bytes) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"control frame data must be bytes, not {type(data).__name__}")
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise FrameBuildError(
                f"control frame payload is {len(data)} bytes; the limit is 125 (RFC 6455 5.5)"
            )
        self._check_can_send()
        return build_frame(opcode, bytes(data), True, False, self._client)

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
        if self.close_received:
            self._close_handshake_done()
        else:
            self.state = State.CLOSING
        return build_frame(Opcode.CLOSE, payload, True, False, self._client)

    @property
    def handshake_complete(self) -> bool:
        """Whether both Close frames have been exchanged."""
        return self.close_sent and self.close_received


class ClientProtocol(Protocol):
    """The client's end of one connection, from the upgrade request to the close.

    ``url`` is the parsed URL (:func:`~lomond.handshake.parse_url`);
    ``protocols`` the subprotocols to offer, ``agent`` the ``User-Agent``,
    ``headers`` extra request headers, ``offers`` permessage-deflate offers
    (RFC 7692), ``key`` the ``Sec-WebSocket-Key`` (a fresh one by default).
    ``max_size`` caps an assembled message in bytes (``None``: no cap);
    ``auto_pong`` queues a Pong for every Ping received (RFC 6455 section
    5.5.2). Send :meth:`request` first; the events begin with
    :class:`~lomond.events.Ready` (or ``Rejected``/``ConnectFail``).
    """

    _handshake_first = True

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
        super().__init__(Side.CLIENT, max_size=max_size, auto_pong=auto_pong)
        self.url = url
        self.key = key or make_key()
        self.protocols = list(protocols)
        self.agent = agent
        self.headers = list(headers)
        self.offers = list(offers)
        #: The server's answer to the upgrade request, once it arrived.
        self.response: Optional[Response] = None

    def request(self) -> bytes:
        """The upgrade request to send first (RFC 6455 section 4.1)."""
        extensions = None
        if self.offers:
            extensions = build_offer_header(self.offers)
        return build_request(
            self.url, self.key, self.agent, self.protocols, extensions, self.headers
        )

    def _receive_handshake(self, data: bytes) -> List[events.Event]:
        try:
            header_data = self._take_header_block(data, MAX_RESPONSE_HEADER_SIZE, "response")
        except HandshakeError as error:
            return self._handshake_failed(str(error))
        if header_data is None:
            return []
        rest = bytes(self._header_buffer)
        self._header_buffer = bytearray()
        try:
            response = Response(header_data)
        except HandshakeError as error:
            return self._handshake_failed(f"invalid response to the upgrade request: {error}")
        self.response = response
        try:
            self.protocol = check_response(response, self.key, self.protocols)
            deflate = self._negotiate(response)
        except HandshakeError as error:
            self.state = State.CLOSED
            self._end = ("handshake rejected", False)
            return [events.Rejected(response, str(error))]
        self._open(deflate)
        extensions = frozenset([deflate.name]) if deflate is not None else frozenset()
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


class ServerProtocol(Protocol):
    """The server's end of one connection, from the upgrade request to the close.

    The opening handshake (RFC 6455 section 4.2): :meth:`receive_data`
    returns ``[]`` until the request's header block is whole (at most
    ``max_request_size`` bytes, or it is answered with 431), then either

    - ``[UpgradeRequest(request)]``: a valid upgrade request (checked by
      :func:`~lomond.handshake.check_request`), also kept in
      :attr:`request`. The application answers it with :meth:`accept`
      (a 101 answer, permessage-deflate agreed if the client offered it and
      ``compress`` is true; RFC 7692) or :meth:`reject` (an HTTP error);
    - ``[ConnectFail(reason)]``: not a valid upgrade (or not HTTP at all).
      The protocol has queued the HTTP error itself (400, or 426 for a
      version other than 13) and :attr:`should_close` is true.

    Either answer is queued for :meth:`data_to_send`. After :meth:`accept`
    the connection is open and behaves as every :class:`Protocol`: the
    events are :class:`~lomond.events.Text`, :class:`~lomond.events.Binary`,
    and so on, with the client as the peer. ``max_size`` and ``auto_pong``
    are as for :class:`Protocol`.
    """

    _handshake_first = True

    def __init__(
        self,
        *,
        compress: bool = False,
        max_size: Optional[int] = DEFAULT_MAX_SIZE,
        auto_pong: bool = True,
        max_request_size: int = MAX_REQUEST_HEADER_SIZE,
    ) -> None:
        super().__init__(Side.SERVER, max_size=max_size, auto_pong=auto_pong)
        self.compress = compress
        self.max_request_size = max_request_size
        #: The client's upgrade request once its header block arrived (also
        #: when it was not a valid upgrade, if it was HTTP at all).
        self.request: Optional[Request] = None
        # The key of a valid request, which accept() answers.
        self._key: Optional[bytes] = None

    def _receive_handshake(self, data: bytes) -> List[events.Event]:
        if self._key is not None:
            # The request waits for accept() or reject(). A client must not
            # send before the answer (RFC 6455 section 4.1); what it sent
            # anyway is kept, and read once the connection is open.
            self._header_buffer += data
            return []
        if not self._header_buffer and data[:1] and not data[:1].isalpha():
            # Every HTTP method starts with a letter. Anything else (a TLS
            # hello from a wss:// client, say) is answered at once: the
            # client sees a plain-text answer instead of waiting for its
            # timeout.
            return self._refuse(400, "this is a plain ws:// server, not an HTTP request")
        try:
            header_data = self._take_header_block(data, self.max_request_size, "request")
        except HandshakeError as error:
            return self._refuse(431, str(error))
        if header_data is None:
            return []
        try:
            self.request = request = Request(header_data)
        except HandshakeError as error:
            return self._refuse(400, str(error))
        try:
            self._key = check_request(request)
        except InvalidRequest as error:
            return self._refuse(error.status, str(error), error.headers)
        return [UpgradeRequest(request)]

    def _refuse(
        self, status: int, reason: str, headers: Sequence[Tuple[str, str]] = ()
    ) -> List[events.Event]:
        self.reject(status, reason, headers)
        assert self._end is not None
        return [events.ConnectFail(self._end[0])]

    def accept(
        self, subprotocol: Optional[str] = None, headers: Sequence[Tuple[str, str]] = ()
    ) -> List[events.Event]:
        """Accept the upgrade request: queue the 101 answer (RFC 6455 section 4.2.2).

        ``subprotocol`` must be one the client offered (``None``: none);
        ``headers`` are extra response headers. permessage-deflate is agreed
        when the client offered it and ``compress`` is true (RFC 7692
        section 5, :func:`~lomond.compression.negotiate_server`). The
        connection is open from here: sends are allowed. Returns the events
        of any frames that came behind the request (usually none).
        """
        request = self.request
        if self.state is not State.CONNECTING or self._key is None or request is None:
            raise WebSocketUnavailable("there is no valid upgrade request to accept")
        if subprotocol is not None and subprotocol not in request.get_list(
            "sec-websocket-protocol"
        ):
            raise ValueError(f"the client did not offer the subprotocol {subprotocol!r}")
        deflate: Optional[Deflate] = None
        answer: Optional[str] = None
        if self.compress:
            offers = [value for name, value in request.raw_headers
                      if name.lower() == "sec-websocket-extensions"]
            if offers:
                deflate, answer = negotiate_server(offers, self.max_size)
        self._replies.append(build_response(self._key, subprotocol, answer, headers))
        self.protocol = subprotocol
        self._open(deflate)
        rest = bytes(self._header_buffer)
        self._header_buffer = bytearray()
        return self._receive_frames(rest) if rest else []

    def reject(
        self, status: int, reason: str = "", headers: Sequence[Tuple[str, str]] = ()
    ) -> None:
        """Refuse the upgrade: queue an HTTP error answer, then close (RFC 6455 section 4.2.2).

        ``status`` is a 3xx, 4xx or 5xx code; ``reason`` goes in a short
        ``text/plain`` body; ``headers`` are extra response headers (a
        ``Location``, a ``WWW-Authenticate`` challenge). :attr:`should_close`
        is true from here: close the connection after :meth:`data_to_send`.
        """
        if self.state is not State.CONNECTING:
            raise WebSocketUnavailable("the upgrade request was already answered")
        self._replies.append(build_rejection(status, reason, headers))
        self.state = State.CLOSED
        self._end = (f"upgrade rejected with {status}" + (f": {reason}" if reason else ""), False)
        self._header_buffer = bytearray()


__all__ = [
    "ClientProtocol", "Protocol", "ServerProtocol", "Side", "State", "UpgradeRequest",
    "decode_close", "encode_close",
]
