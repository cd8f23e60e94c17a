"""Opening the connection: DNS, TCP, an optional proxy tunnel, then TLS.

Every step is bounded by a deadline and can be interrupted: a
:class:`~lomond.wakeup.Wakeup` (woken by ``close()`` from another thread, or
by a :class:`~lomond.wakeup.StopSignal`) ends a wait at once, and the
``aborted`` callback then says whether to give up. Nothing is polled. All
failures are raised as :class:`~lomond.errors.ConnectError` with a one-line
reason that never contains proxy credentials.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import ssl
import time
from typing import Callable, Optional, Sequence, Tuple

from ..constants import MAX_RESPONSE_HEADER_SIZE
from ..driver import SessionSettings
from ..errors import ConnectError, describe_os_error
from ..handshake import URL, bracket_host
from ..lifecycle import Lifecycle
from ..options import SocketOption
from ..proxy import Proxy, connect_request, connect_status, select_proxy
from ..trace import Tracer
from ..wakeup import Wakeup

log = logging.getLogger("lomond.connect")

# connect_ex() codes meaning "in progress" for a non-blocking socket
# (10035 is Windows' WSAEWOULDBLOCK).
_IN_PROGRESS = frozenset({0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, 10035})


def _default_ssl_context() -> ssl.SSLContext:
    # Certificates and host names are verified by default (RFC 6455 section
    # 10.6 leaves it to TLS; anything less would be a silent downgrade).
    return ssl.create_default_context()


def _never() -> bool:
    return False


def host_port(host: str, port: int) -> str:
    """``host:port`` for messages, an IPv6 address in brackets."""
    return f"{bracket_host(host)}:{port}"


def open_connection(
    url: URL,
    *,
    proxy: Optional[Proxy],
    ssl_context: Optional[ssl.SSLContext],
    connect_timeout: float,
    handshake_timeout: float,
    source_address: Optional[Tuple[str, int]] = None,
    socket_options: Sequence[SocketOption] = (),
    sock: Optional[socket.socket] = None,
    agent: Optional[str] = None,
    wakeup: Optional[Wakeup] = None,
    aborted: Callable[[], bool] = _never,
    on_handshake: Optional[Callable[[float], None]] = None,
    trace: Optional[Tracer] = None,
) -> socket.socket:
    """A connected, non-blocking socket to ``url`` (TLS-wrapped for ``wss://``).

    ``connect_timeout`` bounds the TCP connect and the proxy's CONNECT answer
    together (name resolution is not bounded); ``handshake_timeout`` bounds
    the TLS handshake. ``on_handshake``, if given, is called with the
    ``time.monotonic()`` at which that handshake budget started (once TCP and
    any tunnel are up), so the caller can hold the HTTP upgrade to the same
    budget: TLS and the upgrade together within ``handshake_timeout``.

    With a pre-connected ``sock`` there is no TCP connect and no proxy (the
    socket already leads to the server); ``socket_options`` are applied to it
    and TLS is started on it for ``wss://`` unless it is an ``ssl.SSLSocket``.
    The socket is owned from here on: it is closed if anything fails.
    ``trace`` gets the ``tcp_connected``, ``proxy_tunnel`` and ``tls_wrapped`` steps.
    """
    deadline = time.monotonic() + connect_timeout
    if sock is None:
        if proxy is not None:
            host, port, what = proxy.host, proxy.port, f"the proxy {proxy.display_url}"
        else:
            host, port, what = url.host, url.port, host_port(url.host, url.port)
        sock = _connect_tcp(
            host, port, what, deadline, source_address, socket_options, wakeup, aborted
        )
    else:
        proxy = None
        prepare_socket(sock, socket_options)
    try:
        if trace is not None:
            trace("tcp_connected", address=peer_address(sock))
        if proxy is not None:
            _tunnel(sock, proxy, url.host, url.port, agent, deadline, wakeup, aborted)
            if trace is not None:
                trace("proxy_tunnel", proxy=proxy.display_url)
        if aborted():
            raise ConnectError("connection aborted")
        handshake_started = time.monotonic()
        if on_handshake is not None:
            on_handshake(handshake_started)
        if url.secure and not isinstance(sock, ssl.SSLSocket):
            sock = _start_tls(
                sock, url.host, ssl_context, handshake_started + handshake_timeout, wakeup, aborted
            )
            if trace is not None:
                cipher = sock.cipher()
                trace("tls_wrapped", version=sock.version(), cipher=cipher[0] if cipher else None)
    except BaseException:
        sock.close()
        raise
    return sock


def open_for(
    settings: SessionSettings, lifecycle: Lifecycle, wakeup: Optional[Wakeup]
) -> Tuple[socket.socket, Optional[str]]:
    """Open the connection ``settings`` describe, for ``lifecycle``: the step every driver shares.

    Returns the socket and the proxy's display URL (for the ``Connected``
    event). ``wakeup`` interrupts a wait, ``lifecycle.aborted()`` says
    whether to give up. Raises :class:`~lomond.errors.ConnectError`, and
    only that, in every driver: anything unexpected is logged with its
    traceback and reported as a ConnectError too, so that it reaches the
    application as a ``ConnectFail`` event whichever thread connected.
    """
    try:
        return _open_for(settings, lifecycle, wakeup)
    except ConnectError:
        raise
    except Exception as error:
        log.error("unexpected error while connecting to %s", settings.url.url, exc_info=True)
        raise ConnectError(f"could not connect: {describe_os_error(error)}") from error


def _open_for(
    settings: SessionSettings, lifecycle: Lifecycle, wakeup: Optional[Wakeup]
) -> Tuple[socket.socket, Optional[str]]:
    if lifecycle.aborted():
        raise ConnectError("connection aborted")
    proxy: Optional[Proxy] = None
    # A pre-connected socket already leads to the server: no proxy.
    if settings.sock is None:
        proxy = select_proxy(settings.url, settings.proxies)
    trace = lifecycle.trace
    if trace is not None:
        trace("connect_start", proxy=proxy.display_url if proxy else None)
    sock = open_connection(
        settings.url,
        proxy=proxy,
        ssl_context=settings.ssl_context,
        connect_timeout=settings.options.connect_timeout,
        handshake_timeout=settings.options.handshake_timeout,
        source_address=settings.source_address,
        socket_options=settings.socket_options,
        sock=settings.sock,
        agent=settings.agent,
        wakeup=wakeup,
        aborted=lifecycle.aborted,
        on_handshake=lifecycle.timers.handshake_started,
        trace=trace,
    )
    return sock, proxy.display_url if proxy is not None else None


def peer_address(sock: socket.socket) -> Optional[str]:
    """The connected peer as ``host:port`` (for the trace), or ``None``."""
    try:
        address = sock.getpeername()
    except OSError:
        return None
    return host_port(address[0], address[1]) if isinstance(address, tuple) else None


def prepare_socket(sock: socket.socket, socket_options: Sequence[SocketOption]) -> None:
    """A given, connected socket: non-blocking, ``socket_options``, ``TCP_NODELAY`` if TCP.

    Closes it and raises :class:`~lomond.errors.ConnectError` if an option fails.
    """
    try:
        sock.setblocking(False)
        for level, option, value in socket_options:
            sock.setsockopt(level, option, value)
    except OSError as error:
        sock.close()
        raise ConnectError(f"could not set up the socket: {describe_os_error(error)}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not TCP (a socketpair, a UNIX socket): Nagle does not apply


def _wait(
    sock: socket.socket,
    wakeup: Optional[Wakeup],
    readable: bool,
    deadline: float,
    aborted: Callable[[], bool],
) -> bool:
    """Wait until ``sock`` is readable (or writable); ``False`` once ``deadline`` passes.

    Raises ``ConnectError("connection aborted")`` as soon as ``aborted()`` is
    true: it is looked at before waiting and whenever ``wakeup`` fires (a stop
    request wakes it), never on a timer.
    """
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ if readable else selectors.EVENT_WRITE)
        if wakeup is not None:
            selector.register(wakeup.fileno(), selectors.EVENT_READ)
        while True:
            if aborted():
                raise ConnectError("connection aborted")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready = False
            for key, _ in selector.select(remaining):
                if key.fileobj is sock:
                    ready = True
                elif wakeup is not None:
                    wakeup.drain()  # a stop request sets what aborted() looks at
            if ready and not aborted():
                return True


def _connect_tcp(
    host: str,
    port: int,
    what: str,
    deadline: float,
    source_address: Optional[Tuple[str, int]],
    socket_options: Sequence[SocketOption],
    wakeup: Optional[Wakeup],
    aborted: Callable[[], bool],
) -> socket.socket:
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ConnectError(f"could not resolve {host!r}: {describe_os_error(error)}") from None
    last_error = "no addresses"
    for family, kind, proto, _, address in addresses:
        sock, last_error = new_tcp_socket(family, kind, proto, socket_options, source_address)
        if sock is None:
            continue
        try:
            error_code = sock.connect_ex(address)
            if error_code not in _IN_PROGRESS:
                raise OSError(error_code, os.strerror(error_code))
            if error_code:
                if not _wait(sock, wakeup, False, deadline, aborted):
                    raise ConnectError(f"connecting to {what} timed out")
                error_code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error_code:
                    raise OSError(error_code, os.strerror(error_code))
            return sock
        except BaseException as error:
            sock.close()
            if not isinstance(error, OSError):
                raise
            last_error = describe_os_error(error)
    raise ConnectError(f"could not connect to {what}: {last_error}")


def new_tcp_socket(
    family: int,
    kind: int,
    proto: int,
    socket_options: Sequence[SocketOption],
    source_address: Optional[Tuple[str, int]],
) -> Tuple[Optional[socket.socket], str]:
    """A non-blocking TCP socket, not connected yet: ``TCP_NODELAY``, the options, the bind.

    Returns the socket, or ``None`` and why it could not be set up (try the
    next address). Raises :class:`~lomond.errors.ConnectError` if no socket
    can be created at all (out of descriptors or memory). Both drivers'
    connects use it (:mod:`lomond.sync.connect`, :mod:`lomond.asyncio.connect`).
    """
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        # Out of descriptors (EMFILE) or memory: say so, as a ConnectError.
        raise ConnectError(f"could not create a socket: {describe_os_error(error)}") from None
    step = "set up the socket"
    try:
        sock.setblocking(False)
        # Small messages must not wait for Nagle's algorithm.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = "set a socket option"
        for level, option, value in socket_options:
            sock.setsockopt(level, option, value)
        if source_address is not None:
            step = f"bind to {host_port(*source_address)}"
            sock.bind(source_address)
    except OSError as error:
        sock.close()
        return None, f"could not {step}: {describe_os_error(error)}"
    except BaseException:
        sock.close()
        raise
    return sock, ""


#: The hint added when the server seems to speak plain HTTP on a wss:// port.
PLAIN_SERVER_HINT = "is the server plain ws://? (the URL says wss://)"
#: What a server that answers the TLS hello in plain text did: one wording,
#: whether lomond's peek at its first bytes or OpenSSL noticed first.
PLAIN_ANSWER = f"the server answered in plain text, not TLS: {PLAIN_SERVER_HINT}"
#: OpenSSL's words for a record that is not TLS (a plain "HTTP/1.1 400 ..."),
#: across OpenSSL versions.
NOT_TLS_ERRORS = (
    "WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "record layer failure",
    "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST", "http request",
)


def _peek_answer(tls: ssl.SSLSocket) -> Optional[bytes]:
    """The first bytes the server sent, without consuming them; ``None`` if none yet.

    ``b""`` means the server closed the connection. The TLS socket refuses
    ``MSG_PEEK``, so this peeks through a duplicate of its descriptor.
    """
    flags = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)
    try:
        with socket.socket(fileno=os.dup(tls.fileno())) as raw:
            raw.setblocking(False)  # the descriptor is shared: it already is
            return raw.recv(5, flags)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return None  # let the handshake itself report the failure


CLOSED_ON_HELLO = (
    f"the server closed the connection without answering the TLS hello: {PLAIN_SERVER_HINT}"
)


def closed_on_us(error: OSError) -> bool:
    """Whether a handshake error means the peer closed the connection (EOF or reset)."""
    return isinstance(error, (ssl.SSLEOFError, ConnectionResetError)) or (
        "UNEXPECTED_EOF" in str(error)
    )


def _not_tls(answer: bytes) -> bool:
    """Whether ``answer`` cannot start a TLS record (RFC 8446 section 5.1: types 20-24)."""
    return not 20 <= answer[0] <= 24


def _start_tls(
    sock: socket.socket,
    host: str,
    ssl_context: Optional[ssl.SSLContext],
    deadline: float,
    wakeup: Optional[Wakeup],
    aborted: Callable[[], bool],
) -> ssl.SSLSocket:
    """TLS over ``sock`` with SNI and verification for ``host`` (the target, not a proxy).

    A server that answers the TLS hello in plain text (an HTTP error), closes
    the connection on it, or never answers it, is probably a plain ``ws://``
    server: the error then says so (:data:`PLAIN_SERVER_HINT`). A plain-text
    answer always reads :data:`PLAIN_ANSWER`, whichever of lomond's peek and
    OpenSSL saw it first (what it sent is logged at DEBUG on ``lomond.connect``).
    """
    context = ssl_context or _default_ssl_context()
    try:
        tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    except (ssl.SSLError, ValueError, OSError) as error:
        raise ConnectError(f"TLS setup failed: {describe_os_error(error)}") from None
    answered = False  # whether the server sent anything yet
    try:
        while True:
            if not answered:
                answer = _peek_answer(tls)
                if answer == b"":
                    raise ConnectError(f"TLS handshake with {host} failed: {CLOSED_ON_HELLO}")
                if answer:
                    if _not_tls(answer):
                        log.debug("TLS hello to %s answered with %r...", host, answer)
                        raise ConnectError(f"TLS handshake with {host} failed: {PLAIN_ANSWER}")
                    answered = True
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                readable = True
            except ssl.SSLWantWriteError:
                readable = False
            except (ssl.SSLError, OSError) as error:
                text = describe_os_error(error)
                if any(marker in str(error) for marker in NOT_TLS_ERRORS):
                    # The answer reached OpenSSL before a peek could see it:
                    # the same words as the peek's, OpenSSL's in the log.
                    log.debug("TLS hello to %s: %s", host, text)
                    text = PLAIN_ANSWER
                elif not answered and closed_on_us(error):
                    # The close came before a peek could see it.
                    text = CLOSED_ON_HELLO
                raise ConnectError(f"TLS handshake with {host} failed: {text}") from None
            if not _wait(tls, wakeup, readable, deadline, aborted):
                if not answered:
                    raise ConnectError(
                        f"TLS handshake with {host} timed out: no answer to the TLS hello: "
                        f"{PLAIN_SERVER_HINT}"
                    )
                raise ConnectError(f"TLS handshake with {host} timed out")
    except BaseException:
        tls.close()
        raise


def _tunnel(
    sock: socket.socket,
    proxy: Proxy,
    host: str,
    port: int,
    agent: Optional[str],
    deadline: float,
    wakeup: Optional[Wakeup],
    aborted: Callable[[], bool],
) -> None:
    """Open a CONNECT tunnel to ``host:port`` through ``proxy`` (RFC 7231 section 4.3.6)."""
    request = connect_request(proxy, host, port, agent)
    view = memoryview(request)
    while view:
        try:
            view = view[sock.send(view) :]
            continue
        except BlockingIOError:
            pass
        except OSError as error:
            raise ConnectError(
                f"proxy {proxy.display_url} connection failed: {describe_os_error(error)}"
            ) from None
        if not _wait(sock, wakeup, False, deadline, aborted):
            raise ConnectError(f"timed out sending CONNECT to the proxy {proxy.display_url}")
    while True:
        head = _read_head(sock, proxy, deadline, wakeup, aborted)
        if connect_status(proxy, host, port, head) >= 200:
            return  # 1xx responses are interim: the real answer follows


def _read_head(
    sock: socket.socket,
    proxy: Proxy,
    deadline: float,
    wakeup: Optional[Wakeup],
    aborted: Callable[[], bool],
) -> bytes:
    """Read one response header block, and not one byte more.

    Bytes after the blank line belong to the tunnel (or to an error body we
    ignore), so the block is found with ``MSG_PEEK`` and only it is consumed.
    """
    data = b""
    while True:
        try:
            peeked = sock.recv(4096, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            if not _wait(sock, wakeup, True, deadline, aborted):
                raise ConnectError(
                    f"timed out waiting for the proxy {proxy.display_url} to answer CONNECT"
                ) from None
            continue
        except OSError as error:
            raise ConnectError(
                f"proxy {proxy.display_url} connection failed: {describe_os_error(error)}"
            ) from None
        if not peeked:
            raise ConnectError(f"proxy {proxy.display_url} closed the connection during CONNECT")
        start = max(0, len(data) - 3)
        end = (data + peeked).find(b"\r\n\r\n", start)
        wanted = len(peeked) if end < 0 else end + 4 - len(data)
        try:
            data += sock.recv(wanted)
        except OSError as error:
            raise ConnectError(
                f"proxy {proxy.display_url} connection failed: {describe_os_error(error)}"
            ) from None
        if end >= 0 and len(data) == end + 4:
            return data[:-4]
        if len(data) > MAX_RESPONSE_HEADER_SIZE:
            raise ConnectError(f"proxy {proxy.display_url} sent a header block over 64 KiB")


__all__ = [
    "CLOSED_ON_HELLO", "NOT_TLS_ERRORS", "PLAIN_ANSWER", "PLAIN_SERVER_HINT", "closed_on_us",
    "host_port", "new_tcp_socket", "open_connection", "open_for", "peer_address", "prepare_socket",
]
