"""The :class:`WebSocket` object: configuration, the event loop and sending."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from typing import (
    Any,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

from . import events
from .compression import PerMessageDeflate, offers_from_option
from .connection import SocketOption
from .constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_SIZE,
    DEFAULT_SEND_TIMEOUT,
    USER_AGENT,
)
from .errors import WebSocketClosed, WebSocketUnavailable
from .frame import Opcode
from .handshake import HeaderValue, check_header, check_protocols, parse_url
from .protocol import State
from .proxy import Proxy, select_proxy
from .session import WebsocketSession
from .status import Status

log = logging.getLogger("lomond")

Compress = Union[bool, PerMessageDeflate, Sequence[PerMessageDeflate], None]
Headers = Union[Mapping[str, str], Iterable[Tuple[HeaderValue, HeaderValue]], None]


class WebSocket:
    """A WebSocket client connection to ``url`` (RFC 6455).

    Construction does no I/O. Iterate over :meth:`connect` (or over the object
    itself) to connect and receive :mod:`events <lomond.events>`; send with the
    ``send_*`` methods from any thread once :class:`~lomond.events.Ready`
    arrived.

    :param url: a ``ws://`` or ``wss://`` URL (``ValueError`` otherwise).
        Credentials in it (``wss://user:pass@host/``) are sent as Basic
        ``Authorization`` and never shown in events or logs.
    :param proxies: ``{"http": url, "https": url}`` proxies for ``ws://`` and
        ``wss://``; ``None`` (default) detects them from the environment
        (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``); ``{}`` disables proxies.
    :param protocols: subprotocols to offer (RFC 6455 section 1.9).
    :param agent: the ``User-Agent`` header (default :data:`lomond.constants.USER_AGENT`).
    :param compress: ``True`` offers permessage-deflate (RFC 7692) with the
        default parameters; a :class:`~lomond.PerMessageDeflate` or a list of
        them sets the offer(s).
    :param headers: extra request headers (a mapping or ``(name, value)`` pairs),
        ``Origin`` for example. CR, LF and NUL are refused.
    :param max_size: the largest message accepted, in bytes after
        decompression (default 16 MiB, ``None`` for no limit). A larger one
        fails the connection with close code 1009.
    :param ssl_context: the ``ssl.SSLContext`` for ``wss://`` (default: system
        CAs, certificate and host name verified). Load a client certificate
        into it for mutual TLS.
    :param source_address: a ``(host, port)`` to bind the local end to.
    :param socket_options: ``(level, option, value)`` tuples applied with
        ``setsockopt`` before connecting (TCP keepalive, for example).
        ``TCP_NODELAY`` is always set.
    :param sock: an already-connected socket to use instead of connecting
        (for unusual transports); it is used once, for the next connection.
    :param send_timeout: seconds a send may wait for a server that stopped
        reading before :class:`~lomond.errors.TransportFail` (default 30).
    """

    def __init__(
        self,
        url: str,
        proxies: Optional[Mapping[str, str]] = None,
        protocols: Optional[Sequence[str]] = None,
        agent: Optional[str] = None,
        compress: Compress = False,
        *,
        headers: Headers = None,
        max_size: Optional[int] = DEFAULT_MAX_SIZE,
        ssl_context: Optional[ssl.SSLContext] = None,
        source_address: Optional[Tuple[str, int]] = None,
        socket_options: Sequence[SocketOption] = (),
        sock: Optional[socket.socket] = None,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self.url = parse_url(url)
        self.proxies = dict(proxies) if proxies is not None else None
        self.protocols: List[str] = check_protocols(protocols or [])
        self.agent = USER_AGENT if agent is None else agent
        if self.agent:
            check_header("User-Agent", self.agent)
        self.offers: List[PerMessageDeflate] = offers_from_option(compress)
        self.headers: List[Tuple[str, str]] = []
        if headers is not None:
            items = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in items:
                self.add_header(name, value)
        if max_size is not None and max_size < 1:
            raise ValueError("max_size must be a positive number of bytes, or None")
        self.max_size = max_size
        self.ssl_context = ssl_context
        self.source_address = source_address
        self.socket_options = list(socket_options)
        self._sock = sock
        self.send_timeout = send_timeout
        # Resolve explicit proxies now so that a bad proxy URL fails here,
        # not later inside the event loop.
        self._proxy: Optional[Proxy] = (
            select_proxy(self.url, self.proxies) if self.proxies is not None else None
        )
        self._lock = threading.Lock()
        self.session: Optional[WebsocketSession] = None
        self._close_requested = threading.Event()
        self._last_session: Optional[WebsocketSession] = None

    def __repr__(self) -> str:
        state = "connected" if self.session is not None else "disconnected"
        return f"<WebSocket {self.url.url!r} {state}>"

    # -- configuration -------------------------------------------------------------

    def add_header(self, header: HeaderValue, value: HeaderValue) -> None:
        """Add a header to the upgrade request (``str`` or ``bytes``; CR/LF/NUL refused)."""
        self.headers.append(check_header(header, value))

    @property
    def proxy(self) -> Optional[Proxy]:
        """The proxy the next connection will use (environment proxies are re-read each time)."""
        if self.proxies is None:
            return select_proxy(self.url, None)
        return self._proxy

    def take_socket(self) -> Optional[socket.socket]:
        """Hand the pre-connected socket (if any) to the session; it is used once."""
        sock, self._sock = self._sock, None
        return sock

    def build_request(self) -> bytes:
        """The upgrade request of the current session (as in Lomond 0.3)."""
        session = self.session
        if session is None:
            raise WebSocketUnavailable("the websocket is not connected")
        return session.protocol.request()

    # -- the event loop ------------------------------------------------------------

    def __iter__(self) -> Iterator[events.Event]:
        return self.connect()

    def connect(
        self,
        session_class: Type[WebsocketSession] = WebsocketSession,
        poll: float = 5.0,
        ping_rate: float = 30.0,
        ping_timeout: Optional[float] = None,
        auto_pong: bool = True,
        close_timeout: Optional[float] = 30.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> Iterator[events.Event]:
        """Connect, and yield events until the connection ends.

        :param poll: seconds between :class:`~lomond.events.Poll` events.
        :param ping_rate: seconds between automatic pings (0 disables them).
        :param ping_timeout: seconds to wait for a pong before
            :class:`~lomond.events.Unresponsive` and a disconnect (``None``: never).
        :param auto_pong: answer the server's pings (RFC 6455 section 5.5.2).
        :param close_timeout: seconds to wait for the server to complete the
            close handshake before dropping the connection (``None`` or 0: wait forever).
        :param connect_timeout: seconds for the TCP connect and any proxy CONNECT.
        :param handshake_timeout: seconds for TLS and the upgrade response.

        Nothing happens until the first event is requested. One connection at
        a time: iterating a second ``connect()`` while one runs raises
        :class:`~lomond.errors.WebSocketUnavailable`.
        """
        self._close_requested.clear()
        return self._connect(
            session_class, poll, ping_rate, ping_timeout, auto_pong, close_timeout,
            connect_timeout, handshake_timeout,
        )

    def _connect_for_persist(
        self, exit_event: threading.Event, **options: Any
    ) -> Iterator[events.Event]:
        """One connection for :func:`~lomond.persist.persist`; ``exit_event`` closes it."""
        options.setdefault("session_class", WebsocketSession)
        options.setdefault("poll", 5.0)
        options.setdefault("ping_rate", 30.0)
        options.setdefault("ping_timeout", None)
        options.setdefault("auto_pong", True)
        options.setdefault("close_timeout", 30.0)
        options.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        options.setdefault("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)
        return self._connect(exit_event=exit_event, **options)

    def _connect(
        self,
        session_class: Type[WebsocketSession],
        poll: float,
        ping_rate: float,
        ping_timeout: Optional[float],
        auto_pong: bool,
        close_timeout: Optional[float],
        connect_timeout: float,
        handshake_timeout: float,
        exit_event: Optional[threading.Event] = None,
    ) -> Iterator[events.Event]:
        with self._lock:
            if self.session is not None:
                raise WebSocketUnavailable("the websocket is already connected")
            session = self.session = session_class(self)
        self._last_session = session
        yield from session.run(
            poll=poll,
            ping_rate=ping_rate,
            ping_timeout=ping_timeout,
            auto_pong=auto_pong,
            close_timeout=close_timeout,
            connect_timeout=connect_timeout,
            handshake_timeout=handshake_timeout,
            exit_event=exit_event,
        )

    def _on_session_end(self, session: WebsocketSession) -> None:
        with self._lock:
            if self.session is session:
                self.session = None

    def reset(self) -> None:
        """Forget the finished session (kept for Lomond 0.3 compatibility)."""
        with self._lock:
            if self.session is not None and self.session.finished:
                self.session = None

    # -- state -----------------------------------------------------------------------

    def _protocol_state(self) -> Optional[State]:
        session = self.session
        return None if session is None else session.protocol.state

    @property
    def is_active(self) -> bool:
        """Connected, handshake done, and no close started: sends will be accepted."""
        session = self.session
        return (
            session is not None
            and session.protocol.state is State.OPEN
            and not session.finished
            and not session.protocol.close_sent
        )

    @property
    def is_closing(self) -> bool:
        """A Close frame was sent or received and the connection is not gone yet."""
        return self._protocol_state() is State.CLOSING

    @property
    def is_closed(self) -> bool:
        """Not connected: never connected, disconnected, or the close handshake is done."""
        session = self.session
        return session is None or session.finished or session.protocol.state is State.CLOSED

    @property
    def is_secure(self) -> bool:
        """Whether the URL is ``wss://`` (TLS)."""
        return self.url.secure

    @property
    def supports_compression(self) -> bool:
        """Whether permessage-deflate was negotiated on the current (or last) connection."""
        session = self.session or self._last_session
        return session is not None and session.protocol.deflate is not None

    @property
    def sent_close_time(self) -> Optional[float]:
        """Epoch time our Close frame was sent on the current connection, or ``None``."""
        session = self.session
        return None if session is None else session.sent_close_time

    # -- sending -----------------------------------------------------------------------

    def _session(self) -> WebsocketSession:
        session = self.session
        if session is None:
            if self._last_session is not None:
                raise WebSocketClosed("the websocket is closed")
            raise WebSocketUnavailable("the websocket is not connected")
        return session

    def send_text(self, text: str, compress: bool = True) -> None:
        """Send a text message (RFC 6455 section 5.6); ``compress`` applies if negotiated."""
        if not isinstance(text, str):
            raise TypeError("send_text() takes a str")
        session = self._session()
        session.send(session.protocol.send_data, Opcode.TEXT, text.encode("utf-8"), compress)

    def send_binary(self, data: Union[bytes, bytearray, memoryview], compress: bool = True) -> None:
        """Send a binary message (RFC 6455 section 5.6); ``compress`` applies if negotiated."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("send_binary() takes bytes")
        session = self._session()
        session.send(session.protocol.send_data, Opcode.BINARY, bytes(data), compress)

    def send_json(self, _obj: Any = ..., **kwargs: Any) -> None:
        """Send ``_obj`` (or the keyword arguments as an object) as JSON text.

        Raises ``TypeError`` if it cannot be encoded, or if both are given.
        """
        if _obj is ...:
            obj: Any = kwargs
        elif kwargs:
            raise TypeError("send_json() takes an object or keyword arguments, not both")
        else:
            obj = _obj
        try:
            text = json.dumps(obj)
        except (TypeError, ValueError) as error:
            raise TypeError(f"cannot encode as JSON: {error}") from None
        self.send_text(text)

    def send_ping(self, data: bytes = b"") -> None:
        """Send a Ping (at most 125 bytes; ``TypeError``/``ValueError`` otherwise)."""
        self._session().send_ping(data)

    def send_pong(self, data: bytes = b"") -> None:
        """Send a Pong (at most 125 bytes), solicited or not (RFC 6455 section 5.5.3)."""
        session = self._session()
        session.send(session.protocol.send_pong, data)

    def close(self, code: int = Status.NORMAL, reason: str = "goodbye") -> None:
        """Start the close handshake; safe from any thread and effective at once.

        The loop keeps delivering messages until the server answers (then
        :class:`~lomond.events.Closed` and :class:`~lomond.events.Disconnected`),
        or drops the connection after ``close_timeout``. Before the connection
        is ready, the attempt is abandoned. Outside a connection, it ends a
        :func:`~lomond.persist.persist` loop (also during its back-off wait).
        Calling it again does nothing.
        """
        self._close_requested.set()
        session = self.session
        if session is not None:
            session.close(code, reason)

    def force_disconnect(self) -> None:
        """Drop the connection without a close handshake (from any thread)."""
        session = self.session
        if session is not None:
            session.force_disconnect()

    # -- Lomond 0.3 hooks -----------------------------------------------------------

    def feed(self, data: bytes) -> Iterator[events.Event]:
        """Feed bytes received from the socket and yield the events (used by sessions)."""
        yield from self._session().protocol.receive_data(data)


__all__ = ["WebSocket"]
