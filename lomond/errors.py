"""The exceptions lomond raises.

Every exception raised by the documented API derives from
:class:`WebSocketError`; socket, TLS and OS errors are caught and reported as
one of these (or as an event), never leaked.

.. not-runnable: the class hierarchy, not code

Hierarchy::

    WebSocketError
    ├── ConnectError            could not reach a WebSocket server
    ├── HandshakeError          the server's upgrade response was not acceptable
    │   ├── CompressionParameterError
    │   └── InvalidRequest      (server side) the client's upgrade request was not acceptable
    ├── ProtocolViolation       the peer broke RFC 6455 / RFC 7692 (carries a close code)
    │   ├── CriticalProtocolError   the byte stream itself is unusable
    │   └── PayloadTooLarge     a frame or message exceeds a limit (close code 1009)
    ├── FrameBuildError         the application asked to send an invalid frame
    ├── TransportFail           the socket failed while sending
    └── WebSocketUnavailable    the websocket cannot send now
        ├── WebSocketClosing    ... because a close handshake has started
        └── WebSocketClosed     ... because the connection is closed

Lomond 0.3 used the names ``ConnectFail`` and ``ProtocolError`` for both an
event and an exception. Here the exceptions are documented as
:class:`ConnectError` and :class:`ProtocolViolation`, so that an ``except``
clause reads differently from an ``isinstance`` check on an event; the 0.3
names remain importable from this module as aliases of the same classes
(:data:`ConnectFail` is :class:`ConnectError`, :data:`ProtocolError` is
:class:`ProtocolViolation`), so ``except ConnectFail`` in 0.3 code catches
every :class:`ConnectError`.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Any, Tuple

from .status import Status


class WebSocketError(Exception):
    """Base class of every exception lomond raises.

    The message is stored verbatim: braces or percent signs in it are never
    interpreted.
    """

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg

    def __str__(self) -> str:
        return self.msg


class ConnectError(WebSocketError):
    """An error connecting to the server: DNS, TCP, proxy, TLS or a handshake timeout."""


class HandshakeError(WebSocketError):
    """The server did not complete the opening handshake correctly (RFC 6455 section 4.2.2)."""


class CompressionParameterError(HandshakeError):
    """The server's ``permessage-deflate`` response is invalid (RFC 7692 section 7.1)."""


class InvalidRequest(HandshakeError):
    """A client's upgrade request is not acceptable (RFC 6455 section 4.2.1): the server side.

    ``status`` is the HTTP status to answer with: 400 (Bad Request), or 426
    (Upgrade Required) for a ``Sec-WebSocket-Version`` other than 13, whose
    answer carries the version the server speaks in ``headers`` (section 4.4).
    """

    def __init__(
        self, msg: str, status: int = 400, headers: Tuple[Tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(msg)
        self.status = status
        self.headers = headers

    def __reduce__(self) -> Tuple[Any, ...]:
        # Pickled with its status and headers (the default keeps the message only).
        return (type(self), (self.msg, self.status, self.headers))


class ProtocolViolation(WebSocketError):
    """The peer violated the protocol; the connection must be failed.

    ``code`` is the close code to send (RFC 6455 section 7.4.1): 1002 for a
    framing violation, 1007 for invalid UTF-8, 1009 for a message too large.
    """

    def __init__(self, msg: str, code: int = Status.PROTOCOL_ERROR) -> None:
        super().__init__(msg)
        self.code = int(code)


class CriticalProtocolError(ProtocolViolation):
    """A violation that leaves the byte stream unusable (a malformed frame header)."""


class PayloadTooLarge(ProtocolViolation):
    """A frame or an assembled message is larger than ``max_size`` (or than 2**63 - 1 bytes)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, Status.MESSAGE_TOO_LARGE)


#: Lomond 0.3's name for :class:`ConnectError` (the same class, not a subclass).
ConnectFail = ConnectError

#: Lomond 0.3's name for :class:`ProtocolViolation` (the same class, not a subclass).
ProtocolError = ProtocolViolation


class FrameBuildError(WebSocketError, ValueError):
    """The application asked for a frame RFC 6455 does not allow (section 5.5)."""


class TransportFail(WebSocketError):
    """The transport (socket) failed while sending, or a send timed out."""


class WebSocketUnavailable(WebSocketError):
    """The websocket cannot send: it is not connected (or no longer)."""


class WebSocketClosing(WebSocketUnavailable):
    """The websocket is closing (a Close frame was sent or received); sends are refused."""


class WebSocketClosed(WebSocketUnavailable):
    """The websocket is closed; sends are refused."""


def describe_os_error(error: BaseException) -> str:
    """A one-line description of a socket/TLS error for events and messages."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, socket.gaierror):
        return f"name resolution failed: {error.strerror or error}"
    if isinstance(error, OSError) and error.errno is not None:
        name = errno.errorcode.get(error.errno, str(error.errno))
        return f"{error.strerror or name} ({name})"
    return str(error) or type(error).__name__


__all__ = [
    "CompressionParameterError",
    "ConnectError",
    "ConnectFail",
    "CriticalProtocolError",
    "FrameBuildError",
    "HandshakeError",
    "InvalidRequest",
    "PayloadTooLarge",
    "ProtocolError",
    "ProtocolViolation",
    "TransportFail",
    "WebSocketClosed",
    "WebSocketClosing",
    "WebSocketError",
    "WebSocketUnavailable",
]
