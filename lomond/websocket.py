"""The :class:`WebSocket` object: configuration, the event loop and sending."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from . import events
from ._hints import WEBSOCKET_METHODS, missing_attribute
from .compression import PerMessageDeflate, offers_from_option
from .constants import (
    DEFAULT_CLOSE_REASON,
    DEFAULT_MAX_SIZE,
    DEFAULT_SEND_TIMEOUT,
    USER_AGENT,
)
from .driver import Session, SessionSettings
from .errors import WebSocketClosed, WebSocketUnavailable
from .frame import Opcode
from .handshake import HeaderValue, check_header, check_protocols, parse_url
from .options import DEFAULT_CONNECT, ConnectOptions, SocketOption
from .protocol import State, encode_close
from .proxy import Proxy, select_proxy
from .response import Response
from .status import Status
from .sync.session import WebsocketSession
from .tls import CAFile, make_ssl_context
from .trace import TraceFunc, Tracer
from .wakeup import StopSignal

log = logging.getLogger("lomond")

Compress = Union[bool, PerMessageDeflate, Sequence[PerMessageDeflate], None]
Headers = Union[Mapping[str, str], Iterable[Tuple[HeaderValue, HeaderValue]], None]

_BUFFER_TYPES = (bytes, bytearray, memoryview)

#: A driver type for :meth:`WebSocket.open_session`.
S = TypeVar("S", bound=Session)


#: Opcodes as plain ints for the send path (an IntEnum member is a slower attribute).
_TEXT = int(Opcode.TEXT)
_BINARY = int(Opcode.BINARY)


class WebSocketBase:
    """What both WebSocket classes share: settings, the connection seam, state and hooks.

    :class:`WebSocket` (an event loop in your thread) and
    :class:`lomond.asyncio.WebSocket` (an async iterator, awaitable sends)
    add how events are received and messages sent. Construction does no I/O.

    :param url: a ``ws://`` or ``wss://`` URL (RFC 6455 section 3);
        ``http://`` and ``https://`` are taken as ``ws://`` and ``wss://``, as
        browsers do (``ValueError`` for anything else).
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
    :param ssl_verify: ``False`` turns off certificate and host-name checks
        for ``wss://`` (insecure: for test servers only). Lomond 0.3.4.
    :param ssl_cafile: a PEM file of CA certificates to trust for ``wss://``
        instead of the system's. Lomond 0.3.4. An explicit ``ssl_context`` is
        used exactly as given: combining it with ``ssl_verify=False`` or an
        ``ssl_cafile`` is a ``ValueError`` (see :func:`lomond.tls.make_ssl_context`).
    :param trace: a callable that receives one small ``dict`` per step of
        each connection (see :mod:`lomond.trace`). Lomond 0.3.4.

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
        ssl_verify: bool = True,
        ssl_cafile: Optional[CAFile] = None,
        trace: Optional[TraceFunc] = None,
    ) -> None:
        self.url = parse_url(url)
        if proxies is not None and not isinstance(proxies, Mapping):
            raise TypeError("proxies must be a dict like {'http': url, 'https': url}, or None")
        self.proxies = dict(proxies) if proxies is not None else None
        self.protocols: List[str] = check_protocols(protocols or [])
        if agent is not None and not isinstance(agent, str):
            raise TypeError("agent must be a str or None")
        self.agent = USER_AGENT if agent is None else agent
        if self.agent:
            check_header("User-Agent", self.agent)
        self.offers: List[PerMessageDeflate] = offers_from_option(compress)
        self.headers: List[Tuple[str, str]] = []
        if headers is not None:
            items = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in items:
                self.add_header(name, value)
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1
        ):
            raise ValueError("max_size must be a positive number of bytes, or None")
        self.max_size = max_size
        if isinstance(send_timeout, bool) or not isinstance(send_timeout, (int, float)):
            raise TypeError("send_timeout must be a number of seconds")
        if not send_timeout > 0:
            raise ValueError("send_timeout must be more than 0 seconds")
        self.send_timeout = float(send_timeout)
        #: The context for ``wss://``: ``ssl_context`` as given, or one built
        #: from ``ssl_verify`` and ``ssl_cafile`` (``None``: the default, verifying).
        self.ssl_context = make_ssl_context(ssl_context, ssl_verify, ssl_cafile)
        self.ssl_verify = ssl_verify
        self.ssl_cafile = ssl_cafile
        if trace is not None and not callable(trace):
            raise TypeError(f"trace must be a callable taking one dict, not {trace!r}")
        self.trace = trace
        self.source_address = source_address
        self.socket_options = list(socket_options)
        self._sock = sock
        # Resolve explicit proxies now so that a bad proxy URL fails here,
        # not later inside the event loop.
        self._proxy: Optional[Proxy] = (
            select_proxy(self.url, self.proxies) if self.proxies is not None else None
        )
        self._lock = threading.Lock()
        #: The current connection's session, or ``None`` between connections.
        self.session: Optional[Session] = None
        self._last_session: Optional[Session] = None
        # Inside ``with``: an abandoned loop closes gracefully (see __exit__).
        self._entered = 0

    def __repr__(self) -> str:
        state = "connected" if self.session is not None else "disconnected"
        return f"<{type(self).__name__} {self.url.url!r} {state}>"

    if not TYPE_CHECKING:  # type checkers keep flagging unknown attributes

        def __getattr__(self, name: str) -> Any:
            # Only for missing attributes: websocket-client's send()/recv()
            # say what to use (lomond._hints).
            raise missing_attribute(self, name, WEBSOCKET_METHODS)

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

    def build_request(self) -> bytes:
        """The upgrade request of the current connection (as in Lomond 0.3)."""
        session = self.session
        if session is None:
            raise WebSocketUnavailable("the websocket is not connected")
        return session.protocol.request()

    def _settings(self, options: ConnectOptions, stop: Optional[StopSignal]) -> SessionSettings:
        sock, self._sock = self._sock, None  # a given socket serves one connection
        return SessionSettings(
            url=self.url,
            proxies=self.proxies,
            ssl_context=self.ssl_context,
            source_address=self.source_address,
            socket_options=tuple(self.socket_options),
            sock=sock,
            agent=self.agent,
            protocols=tuple(self.protocols),
            headers=tuple(self.headers),
            offers=tuple(self.offers),
            max_size=self.max_size,
            send_timeout=self.send_timeout,
            options=options,
            trace=self.trace,
            stop=stop,
            on_response=self._on_response,
            close_on_exit=self._entered > 0,
        )

    def open_session(
        self,
        factory: Callable[[SessionSettings, Callable[[Session], None]], S],
        options: ConnectOptions = DEFAULT_CONNECT,
        stop: Optional[StopSignal] = None,
    ) -> S:
        """Start a connection with a driver: ``factory(settings, on_end)`` (for runners).

        The seam between this object and what moves its bytes: the threaded
        :class:`~lomond.sync.session.WebsocketSession` (:meth:`WebSocket.connect`) or the
        :class:`~lomond.hub.session.HubSession` of a
        :class:`~lomond.handlers.hub.Hub`. The driver becomes :attr:`session`
        (sends go to it) until it calls ``on_end(driver)``. Raises
        :class:`~lomond.errors.WebSocketUnavailable` if a connection is live.
        """
        with self._lock:
            if self.session is not None:
                raise WebSocketUnavailable("the websocket is already connected")
            session = factory(self._settings(options, stop), self._ended)
            self.session = session
        self._last_session = session
        return session

    def _ended(self, session: Session) -> None:
        with self._lock:
            if self.session is session:
                self.session = None
        self.on_disconnect()

    def _on_response(self, response: Response) -> None:
        self.on_response(response)
        deflate = "permessage-deflate" if self.supports_compression else None
        self.process_extensions(frozenset([deflate]) if deflate else frozenset())

    def reset(self) -> None:
        """Forget the finished session (kept for Lomond 0.3 compatibility)."""
        with self._lock:
            if self.session is not None and self.session.finished:
                self.session = None

    # -- Lomond 0.3 hooks (override in a subclass) ----------------------------------

    def on_response(self, response: Response) -> None:
        """Called with the server's upgrade response (accepted or not)."""

    def process_extensions(self, extensions: FrozenSet[str]) -> None:
        """Called with the negotiated extension names once the response arrived."""

    def on_disconnect(self) -> None:
        """Called once a connection is over (its socket closed)."""

    def feed(self, data: bytes) -> Iterator[events.Event]:
        """Feed bytes as if received from the socket, and yield the events (Lomond 0.3).

        The current connection's protocol handles them; normal use never needs this.
        """
        if not isinstance(data, _BUFFER_TYPES):
            raise TypeError("feed() takes bytes")
        session = self._session()
        yield from session.protocol.receive_data(bytes(data))

    # -- state -----------------------------------------------------------------------

    @property
    def is_active(self) -> bool:
        """Connected, handshake done, and no close started: sends will be accepted."""
        session = self.session
        return session is not None and session.is_active

    @property
    def is_closing(self) -> bool:
        """A Close frame was sent or received and the connection is not gone yet."""
        session = self.session
        return session is not None and not session.finished and session.state is State.CLOSING

    @property
    def is_closed(self) -> bool:
        """Not connected: never connected, disconnected, or the close handshake is done."""
        session = self.session
        return session is None or session.finished or session.state is State.CLOSED

    @property
    def is_secure(self) -> bool:
        """Whether the URL is ``wss://`` (TLS)."""
        return self.url.secure

    @property
    def supports_compression(self) -> bool:
        """Whether permessage-deflate was negotiated on the current (or last) connection."""
        session = self.session or self._last_session
        return session is not None and session.supports_compression

    @property
    def sent_close_time(self) -> Optional[float]:
        """Epoch time our Close frame was sent on the current connection, or ``None``."""
        session = self.session
        return None if session is None else session.sent_close_time

    # -- sending -----------------------------------------------------------------------

    def _session(self) -> Session:
        session = self.session
        if session is None:
            if self._last_session is not None:
                raise WebSocketClosed("the websocket is closed")
            raise WebSocketUnavailable("the websocket is not connected")
        return session

    @staticmethod
    def _encode_text(text: str) -> bytes:
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes a str, not {type(text).__name__}")
        return text.encode("utf-8")

    @staticmethod
    def _encode_binary(data: Union[bytes, bytearray, memoryview]) -> bytes:
        if not isinstance(data, _BUFFER_TYPES):
            raise TypeError(f"send_binary() takes bytes, not {type(data).__name__}")
        return bytes(data)

    @staticmethod
    def _encode_json(_obj: Any, kwargs: Dict[str, Any]) -> str:
        """``send_json``'s text: ``ValueError`` for an object and keywords, ``TypeError`` if
        the value cannot be encoded (Lomond 0.3's rules)."""
        if _obj is ...:
            obj: Any = kwargs
        elif kwargs:
            raise ValueError("send_json() takes an object or keyword arguments, not both")
        else:
            obj = _obj
        try:
            return json.dumps(obj)
        except (TypeError, ValueError) as error:
            raise TypeError(f"cannot encode as JSON: {error}") from None

    def _request_close(
        self, code: Optional[int], reason: Union[str, bytes]
    ) -> Optional[Session]:
        """What every ``close()`` does: check the arguments (in the caller's thread)
        and start the close handshake. Returns the session, if a connection is live."""
        encode_close(code, reason)  # wrong arguments fail here, in the caller's thread
        if not isinstance(reason, str):
            reason = bytes(reason).decode("utf-8")  # checked to be UTF-8 just above
        session = self.session
        if session is not None:
            session.close(code, reason)
        elif self.trace is not None:
            Tracer(self.trace, self.url.url)("close_requested", code=code, reason=reason)
        return session

    def force_disconnect(self) -> None:
        """Drop the connection without a close handshake (from any thread)."""
        session = self.session
        if session is not None:
            session.force_disconnect()


class WebSocket(WebSocketBase):
    """A WebSocket client connection to ``url`` (RFC 6455), driven in your thread.

    Construction does no I/O; its parameters are :class:`WebSocketBase`'s.
    Iterate over :meth:`connect` (or over the object itself) to connect and
    receive :mod:`events <lomond.events>`; send with the ``send_*`` methods
    from any thread once :class:`~lomond.events.Ready` arrived. For asyncio,
    :class:`lomond.asyncio.WebSocket` takes the same parameters.

    A ``WebSocket`` is also a context manager: leaving ``with WebSocket(url)
    as websocket:`` closes a live connection gracefully (bounded by its
    ``close_timeout``) and releases the socket.
    """

    # -- the event loop ------------------------------------------------------------

    def __iter__(self) -> Iterator[events.Event]:
        return self.connect()

    def __enter__(self) -> WebSocket:
        self._entered += 1
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """Close a live connection gracefully (within its ``close_timeout``) and release it."""
        self._entered -= 1
        session = self.session
        if session is None:
            return
        session.close(Status.NORMAL, DEFAULT_CLOSE_REASON)
        # A loop suspended in this thread is run to its end (the close
        # handshake, bounded by close_timeout); one running in another thread
        # is given the same time, then the socket is dropped.
        session.drain()
        close_timeout = session.settings.options.close_timeout
        if not session.wait_finished(close_timeout + 1.0 if close_timeout else None):
            session.force_disconnect("the with block ended")
            session.wait_finished(1.0)

    def connect(
        self,
        session_class: Type[WebsocketSession] = WebsocketSession,
        poll: float = DEFAULT_CONNECT.poll,
        ping_rate: float = DEFAULT_CONNECT.ping_rate,
        ping_timeout: Optional[float] = DEFAULT_CONNECT.ping_timeout,
        auto_pong: bool = DEFAULT_CONNECT.auto_pong,
        close_timeout: Optional[float] = DEFAULT_CONNECT.close_timeout,
        connect_timeout: float = DEFAULT_CONNECT.connect_timeout,
        handshake_timeout: float = DEFAULT_CONNECT.handshake_timeout,
        *,
        stop: Optional[StopSignal] = None,
    ) -> Iterator[events.Event]:
        """Connect, and yield events until the connection ends.

        The options are those of :class:`~lomond.options.ConnectOptions`
        (checked here: a wrong type is a ``TypeError``, a negative time a
        ``ValueError``):

        :param session_class: the driver class (Lomond 0.3's extension
            point; leave it as the default).
        :param poll: seconds between :class:`~lomond.events.Poll` events; the
            first comes right after :class:`~lomond.events.Ready`.
        :param ping_rate: seconds between automatic pings (RFC 6455 section
            5.5.2), the first right after Ready (0 disables them).
        :param ping_timeout: seconds to wait for a pong before
            :class:`~lomond.events.Unresponsive` and a disconnect (``None``: never).
        :param auto_pong: answer the server's pings (RFC 6455 section 5.5.2).
        :param close_timeout: seconds to wait for the server to complete the
            close handshake before dropping the connection (``None`` or 0: wait forever).
        :param connect_timeout: seconds for the TCP connect and any proxy CONNECT.
        :param handshake_timeout: seconds for TLS and the upgrade response.
        :param stop: a :class:`~lomond.wakeup.StopSignal`; setting it (from
            any thread, or a signal handler) closes the connection gracefully,
            or abandons it before Ready, at once.

        Nothing happens until the first event is requested. One connection at
        a time: iterating a second ``connect()`` while one runs raises
        :class:`~lomond.errors.WebSocketUnavailable`.
        """
        options = ConnectOptions(
            poll=poll,
            ping_rate=ping_rate,
            ping_timeout=ping_timeout,
            auto_pong=auto_pong,
            close_timeout=close_timeout,
            connect_timeout=connect_timeout,
            handshake_timeout=handshake_timeout,
        )
        if stop is not None and not isinstance(stop, StopSignal):
            raise TypeError("stop must be a lomond.wakeup.StopSignal")
        return self._connect(session_class, options, stop)

    def _connect(
        self,
        session_class: Type[WebsocketSession],
        options: ConnectOptions,
        stop: Optional[StopSignal],
    ) -> Iterator[events.Event]:
        # Settings are taken when iteration starts: proxies from the
        # environment are read for each connection.
        session = self.open_session(session_class, options, stop)
        yield from session.run()

    # -- sending ----------------------------------------------------------------------

    def send_text(self, text: str, compress: bool = True) -> None:
        """Send a text message (RFC 6455 section 5.6); ``compress`` applies if negotiated."""
        # The common case (a live session, a str) without the helpers' calls:
        # a small send is a few microseconds, and each call is a tenth of one.
        session = self.session
        if session is None:
            session = self._session()  # raises
        payload = text.encode("utf-8") if type(text) is str else self._encode_text(text)
        session.send_message(_TEXT, payload, compress)

    def send_binary(self, data: Union[bytes, bytearray, memoryview], compress: bool = True) -> None:
        """Send a binary message (RFC 6455 section 5.6); ``compress`` applies if negotiated."""
        session = self.session
        if session is None:
            session = self._session()  # raises
        if type(data) is not bytes:
            data = self._encode_binary(data)
        session.send_message(_BINARY, data, compress)

    def send_json(self, _obj: Any = ..., **kwargs: Any) -> None:
        """Send ``_obj`` (or the keyword arguments as an object) as JSON text.

        Raises ``ValueError`` if both are given (as Lomond 0.3 did), and
        ``TypeError`` if the value cannot be encoded.
        """
        self.send_text(self._encode_json(_obj, kwargs))

    def send_ping(self, data: bytes = b"") -> None:
        """Send a Ping (RFC 6455 section 5.5.2).

        At most 125 bytes: a longer one is a :class:`~lomond.errors.FrameBuildError`
        (a ``ValueError``); anything but bytes a ``TypeError``.
        """
        self._session().send_control(Opcode.PING, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Send a Pong (at most 125 bytes), solicited or not (RFC 6455 section 5.5.3)."""
        self._session().send_control(Opcode.PONG, data)

    def close(
        self, code: Optional[int] = Status.NORMAL, reason: Union[str, bytes] = DEFAULT_CLOSE_REASON
    ) -> None:
        """Start the close handshake; safe from any thread and effective at once.

        ``reason`` is a ``str`` or UTF-8 ``bytes`` (Lomond 0.3's default was
        ``b"goodbye"``); ``code=None`` sends a Close without a status code
        (and so without the reason). The loop keeps delivering messages until
        the server answers (then :class:`~lomond.events.Closed` and
        :class:`~lomond.events.Disconnected`), or drops the connection after
        ``close_timeout``. Before the connection is ready, the attempt is
        abandoned. Outside a connection it does nothing. It ends the current
        connection only: a :func:`~lomond.persist.persist` loop reconnects
        after its back-off, as in Lomond 0.3.4 (its ``exit_event`` ends the
        loop). Calling it again does nothing.

        A code that must not be sent (RFC 6455 section 7.4.1: 1005, 1006,
        1015, anything outside 1000-1003, 1007-1014 and 3000-4999) is a
        :class:`~lomond.errors.FrameBuildError` (a ``ValueError``); a reason
        longer than 123 bytes in UTF-8 is cut to fit the 125-byte control
        frame (RFC 6455 section 5.5), at a character boundary.
        """
        self._request_close(code, reason)


__all__ = ["WebSocket", "WebSocketBase"]
