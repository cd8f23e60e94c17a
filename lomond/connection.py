"""Opening the connection: DNS, TCP, an optional proxy tunnel, then TLS.

Every step is bounded by a deadline and can be interrupted through a
:class:`~lomond.transport.Wakeup`, so a stop during a slow connect is prompt.
All failures are raised as :class:`~lomond.errors.ConnectError` with a
one-line reason.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import time
from typing import Callable, Optional, Sequence, Tuple

from .errors import ConnectError
from .handshake import URL
from .proxy import Proxy, tunnel
from .transport import Wakeup, describe_os_error, wait_socket

SocketOption = Tuple[int, int, int]

# connect_ex() codes meaning "in progress" for a non-blocking socket
# (10035 is Windows' WSAEWOULDBLOCK).
_IN_PROGRESS = frozenset({0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, 10035})


def _default_ssl_context() -> ssl.SSLContext:
    # Certificates and host names are verified by default (RFC 6455 section
    # 10.6 leaves it to TLS; anything less would be a silent downgrade).
    return ssl.create_default_context()


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
    aborted: Callable[[], bool] = lambda: False,
) -> socket.socket:
    """A connected, non-blocking socket to ``url`` (TLS-wrapped for ``wss://``)."""
    deadline = time.monotonic() + connect_timeout
    if sock is None:
        host, port = (proxy.host, proxy.port) if proxy else (url.host, url.port)
        sock = _connect_tcp(host, port, deadline, source_address, socket_options, wakeup)
    else:
        sock.setblocking(False)
    try:
        if proxy is not None:
            tunnel(sock, proxy, url.host, url.port, agent, deadline, wakeup)
        if aborted():
            raise ConnectError("connection aborted")
        if url.secure and not isinstance(sock, ssl.SSLSocket):
            sock = _start_tls(sock, url.host, ssl_context, handshake_timeout, wakeup)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_tcp(
    host: str,
    port: int,
    deadline: float,
    source_address: Optional[Tuple[str, int]],
    socket_options: Sequence[SocketOption],
    wakeup: Optional[Wakeup],
) -> socket.socket:
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ConnectError(f"could not resolve {host!r}: {describe_os_error(error)}") from None
    last_error = "no addresses"
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            # Small messages must not wait for Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for level, option, value in socket_options:
                sock.setsockopt(level, option, value)
            if source_address is not None:
                sock.bind(source_address)
            error_code = sock.connect_ex(address)
            if error_code not in _IN_PROGRESS:
                raise OSError(error_code, os.strerror(error_code))
            if error_code:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectError(f"connect to {host}:{port} timed out")
                _, writable, woken = wait_socket(sock, wakeup, False, True, remaining)
                if woken:
                    raise ConnectError("connection aborted")
                if not writable:
                    raise ConnectError(f"connect to {host}:{port} timed out")
                error_code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error_code:
                    raise OSError(error_code, os.strerror(error_code))
            return sock
        except ConnectError:
            sock.close()
            raise
        except OSError as error:
            sock.close()
            last_error = describe_os_error(error)
    raise ConnectError(f"could not connect to {host}:{port}: {last_error}")


def _start_tls(
    sock: socket.socket,
    host: str,
    ssl_context: Optional[ssl.SSLContext],
    timeout: float,
    wakeup: Optional[Wakeup],
) -> ssl.SSLSocket:
    context = ssl_context or _default_ssl_context()
    try:
        tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    except (ssl.SSLError, ValueError, OSError) as error:
        raise ConnectError(f"TLS setup failed: {describe_os_error(error)}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            tls.do_handshake()
            return tls
        except ssl.SSLWantReadError:
            readable = True
        except ssl.SSLWantWriteError:
            readable = False
        except (ssl.SSLError, OSError) as error:
            tls.close()
            raise ConnectError(f"TLS handshake with {host} failed: {describe_os_error(error)}") from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            tls.close()
            raise ConnectError(f"TLS handshake with {host} timed out")
        _, _, woken = wait_socket(tls, wakeup, readable, not readable, remaining)
        if woken:
            tls.close()
            raise ConnectError("connection aborted")


__all__ = ["SocketOption", "open_connection"]
