"""Events yielded by :meth:`lomond.websocket.WebSocket.connect`.

Every event has a ``name`` (a class-level string, also the key used by
:mod:`lomond.handlers`) and ``received_time`` (epoch seconds when it was
generated). Events are immutable; compare them by type with ``isinstance``
or by ``name``. New event types may be added in later versions: ignore the
ones you do not know.

.. not-runnable: the order of the events, not code

The order of a connection's events is::

    Connecting
    ConnectFail                                   (could not connect; the end)
    Connected -> Rejected -> Disconnected         (handshake refused)
    Connected -> ConnectFail -> Disconnected      (no usable answer to the upgrade)
    Connected -> Ready -> (Text | Binary | Ping | Pong | Poll | ProtocolError | Unresponsive)*
              -> [Closing | Closed] -> Disconnected

so every ``Connected`` is matched by exactly one ``Disconnected``, and at most
one of ``Closing`` (the server started the close) or ``Closed`` (the client
started it and the server answered) is delivered.
"""

from __future__ import annotations

import json as _json
import time
from typing import TYPE_CHECKING, Any, Callable, ClassVar, FrozenSet, Optional

import attrs

if TYPE_CHECKING:
    from .response import Response

_REPR_LIMIT = 40
#: The payload fields a repr clips (a message can be 16 MiB). Reasons and error
#: texts are never clipped: they are what a reader of the log needs.
_PAYLOAD_FIELDS = frozenset({"text", "data", "message"})


def _short(value: Any) -> str:
    """A repr clipped so that a 16 MiB message cannot flood a log line."""
    if isinstance(value, (bytes, bytearray, memoryview, str)) and len(value) > _REPR_LIMIT:
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:_REPR_LIMIT]!r}... ({len(value)} {unit})"
    return repr(value)


@attrs.frozen(repr=False, eq=False)
class Event:
    """Base class of every event."""

    name: ClassVar[str] = "event"
    #: Epoch time (``time.time()``) at which the event was generated.
    received_time: float = attrs.field(factory=time.time, kw_only=True)

    def _repr_fields(self) -> str:
        return ", ".join(
            f"{a.name}="
            + (_short(value) if a.name in _PAYLOAD_FIELDS else repr(value))
            for a in attrs.fields(type(self))
            if a.name != "received_time"
            for value in (getattr(self, a.name),)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._repr_fields()})"


@attrs.frozen(repr=False, eq=False)
class Connecting(Event):
    """About to open a connection to ``url``."""

    name: ClassVar[str] = "connecting"
    url: str


@attrs.frozen(repr=False, eq=False)
class ConnectFail(Event):
    """The connection could not be made, or the upgrade got no usable answer.

    ``reason`` says why (for TLS failures, the verification error).
    """

    name: ClassVar[str] = "connect_fail"
    reason: str


@attrs.frozen(repr=False, eq=False)
class Connected(Event):
    """TCP (and TLS) connected; the upgrade request is being sent.

    ``proxy`` is the proxy URL used, without credentials, or ``None``.
    """

    name: ClassVar[str] = "connected"
    url: str
    proxy: Optional[str] = None


@attrs.frozen(repr=False, eq=False)
class Rejected(Event):
    """The server answered the upgrade, but not acceptably (RFC 6455 section 4.2.2).

    ``response`` is the server's :class:`~lomond.response.Response`;
    ``reason`` describes what was wrong.
    """

    name: ClassVar[str] = "rejected"
    response: Response
    reason: str


@attrs.frozen(repr=False, eq=False)
class Ready(Event):
    """The upgrade succeeded; messages may be sent.

    ``protocol`` is the subprotocol the server chose (or ``None``);
    ``extensions`` the set of negotiated extension names.
    """

    name: ClassVar[str] = "ready"
    response: Response
    protocol: Optional[str]
    extensions: FrozenSet[str]


@attrs.frozen(repr=False, eq=False)
class Text(Event):
    """A complete text message (RFC 6455 section 5.6), already validated as UTF-8."""

    name: ClassVar[str] = "text"
    text: str

    @property
    def json(self) -> Any:
        """The text decoded with :func:`json.loads` (which may raise ``ValueError``)."""
        return _json.loads(self.text)


@attrs.frozen(repr=False, eq=False)
class Binary(Event):
    """A complete binary message (RFC 6455 section 5.6)."""

    name: ClassVar[str] = "binary"
    data: bytes


def _message_factory(cls: Any, field: str) -> Any:
    """A constructor of ``cls`` for the receive path: ``make(value, received_time)``.

    The same object the attrs ``__init__`` makes (the same slots set, the
    class's validation is none), in two slot writes instead of its generic
    frozen-instance machinery: a 16-byte message is delivered in about a
    microsecond, and ``__init__`` took a third of it. The protocol passes
    one ``received_time`` for every message of one read: they arrived
    together.
    """
    new = object.__new__
    set_time = Event.__dict__["received_time"].__set__
    set_value = cls.__dict__[field].__set__

    def make(value: Any, received_time: float) -> Any:
        event = new(cls)
        set_time(event, received_time)
        set_value(event, value)
        return event

    return make


#: ``new_text(text, received_time)``: a :class:`Text` for the receive path.
new_text: Callable[[str, float], Text] = _message_factory(Text, "text")
#: ``new_binary(data, received_time)``: a :class:`Binary` for the receive path.
new_binary: Callable[[bytes, float], Binary] = _message_factory(Binary, "data")


@attrs.frozen(repr=False, eq=False)
class Ping(Event):
    """A Ping frame from the server (RFC 6455 section 5.5.2).

    With ``auto_pong`` (the default) lomond answers it with a Pong.
    """

    name: ClassVar[str] = "ping"
    data: bytes


@attrs.frozen(repr=False, eq=False)
class Pong(Event):
    """A Pong frame from the server (RFC 6455 section 5.5.3), solicited or not."""

    name: ClassVar[str] = "pong"
    data: bytes


@attrs.frozen(repr=False, eq=False)
class Poll(Event):
    """Generated every ``poll`` seconds while connected, for periodic work."""

    name: ClassVar[str] = "poll"


@attrs.frozen(repr=False, eq=False)
class Unresponsive(Event):
    """No Pong arrived within ``ping_timeout`` seconds; a Disconnected follows."""

    name: ClassVar[str] = "unresponsive"


@attrs.frozen(repr=False, eq=False)
class ProtocolError(Event):
    """The server violated the protocol (RFC 6455 section 7.1.7: the connection is failed).

    ``error`` describes the violation. A Close frame with ``code`` (1002,
    1007 or 1009) is sent, unless one was sent already, and the connection
    is dropped without waiting for the answer. ``critical`` is true when the
    byte stream itself is broken (a bad frame header), so nothing after the
    violation could be read; false for a bad message in a well-formed frame.
    """

    name: ClassVar[str] = "protocol_error"
    error: str
    critical: bool
    code: int = 1002


@attrs.frozen(repr=False, eq=False)
class Closing(Event):
    """The server sent a Close frame (RFC 6455 section 5.5.1).

    No more messages will arrive. Handlers may still send while handling this
    event; afterwards lomond echoes the Close and waits for the server to drop
    the connection. ``code`` is ``None`` when the frame carried no status code.
    """

    name: ClassVar[str] = "closing"
    code: Optional[int]
    reason: str


@attrs.frozen(repr=False, eq=False)
class Closed(Event):
    """The server answered our Close frame; the close handshake is complete."""

    name: ClassVar[str] = "closed"
    code: Optional[int]
    reason: str


@attrs.frozen(repr=False, eq=False)
class Disconnected(Event):
    """The connection is gone; the last event of every connection that reached Connected.

    ``graceful`` is true only when the close handshake completed.
    """

    name: ClassVar[str] = "disconnected"
    reason: str = "closed"
    graceful: bool = False


@attrs.frozen(repr=False, eq=False)
class BackOff(Event):
    """:func:`lomond.persist.persist` waits ``delay`` seconds before reconnecting."""

    name: ClassVar[str] = "back_off"
    delay: float


@attrs.frozen(repr=False, eq=False)
class UnknownMessage(Event):
    """Kept for compatibility with Lomond 0.3; never generated.

    A frame with a reserved opcode fails the connection (RFC 6455 section 5.2)
    and is reported as :class:`ProtocolError`.
    """

    name: ClassVar[str] = "unknown"
    message: bytes


#: Every concrete event class, by ``name``.
EVENT_TYPES = {
    cls.name: cls
    for cls in (
        Connecting, ConnectFail, Connected, Rejected, Ready, Text, Binary, Ping, Pong,
        Poll, Unresponsive, ProtocolError, Closing, Closed, Disconnected, BackOff,
        UnknownMessage,
    )
}

__all__ = [
    "EVENT_TYPES", "BackOff", "Binary", "Closed", "Closing", "ConnectFail", "Connected",
    "Connecting", "Disconnected", "Event", "Ping", "Poll", "Pong", "ProtocolError", "Ready",
    "Rejected", "Text", "UnknownMessage", "Unresponsive",
]
