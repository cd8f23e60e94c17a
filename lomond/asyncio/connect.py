"""Opening a connection on asyncio: DNS, TCP, an optional proxy tunnel, then TLS.

The asyncio counterpart of :mod:`lomond.sync.connect`, with the same steps,
bounds and messages: ``connect_timeout`` for the TCP connect and a proxy's
answer to CONNECT, ``handshake_timeout`` for TLS (and, in the lifecycle, the
upgrade). The socket is prepared by :func:`~lomond.sync.connect.new_tcp_socket`
(options, bind, ``TCP_NODELAY``), connected with ``loop.sock_connect``, and
handed with its TLS to ``loop.create_connection``; the proxy's request and
answer are :mod:`lomond.proxy`'s. A stop request cancels the task that runs
this (:class:`~lomond.asyncio.session.AsyncioSession`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from typing import Callable, Optional, Tuple, TypeVar

from ..constants import MAX_RESPONSE_HEADER_SIZE
from ..driver import SessionSettings
from ..errors import ConnectError, describe_os_error
from ..lifecycle import Lifecycle
from ..proxy import Proxy, connect_request, connect_status, select_proxy
from ..sync.connect import (
    CLOSED_ON_HELLO,
    NOT_TLS_ERRORS,
    PLAIN_ANSWER,
    closed_on_us,
    host_port,
    new_tcp_socket,
    peer_address,
    prepare_socket,
)

log = logging.getLogger("lomond.connect")

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def open_async(
    settings: SessionSettings, lifecycle: Lifecycle, protocol_factory: Callable[[], P]
) -> Tuple[asyncio.Transport, P, Optional[str]]:
    """Open the connection ``settings`` describe: ``(transport, protocol, proxy URL)``.

    Raises :class:`~lomond.errors.ConnectError` and only that (an unexpected
    exception is logged with its traceback and reported as one), as
    :func:`lomond.sync.connect.open_for` does.
    """
    try:
        return await _open(settings, lifecycle, protocol_factory)
    except ConnectError:
        raise
    except Exception as error:
        log.error("unexpected error while connecting to %s", settings.url.url, exc_info=True)
        raise ConnectError(f"could not connect: {describe_os_error(error)}") from error


async def _open(
    settings: SessionSettings, lifecycle: Lifecycle, protocol_factory: Callable[[], P]
) -> Tuple[asyncio.Transport, P, Optional[str]]:
    if lifecycle.aborted():
        raise ConnectError("connection aborted")
    loop = asyncio.get_running_loop()
    url = settings.url
    options = settings.options
    trace = lifecycle.trace
    proxy: Optional[Proxy] = None
    # A pre-connected socket already leads to the server: no proxy.
    if settings.sock is None:
        proxy = select_proxy(url, settings.proxies)
    if trace is not None:
        trace("connect_start", proxy=proxy.display_url if proxy else None)
    deadline = loop.time() + options.connect_timeout
    if settings.sock is None:
        if proxy is not None:
            host, port, what = proxy.host, proxy.port, f"the proxy {proxy.display_url}"
        else:
            host, port, what = url.host, url.port, host_port(url.host, url.port)
        sock = await _connect_tcp(loop, host, port, what, deadline, settings)
    else:
        sock = settings.sock
        if isinstance(sock, ssl.SSLSocket):
            raise ConnectError(
                "the asyncio driver does TLS itself: pass the plain connected socket as sock="
            )
        prepare_socket(sock, settings.socket_options)
    try:
        if trace is not None:
            trace("tcp_connected", address=peer_address(sock))
        if proxy is not None:
            await _tunnel(loop, sock, proxy, url.host, url.port, settings.agent, deadline)
            if trace is not None:
                trace("proxy_tunnel", proxy=proxy.display_url)
        if lifecycle.aborted():
            raise ConnectError("connection aborted")
        lifecycle.timers.handshake_started(loop.time())
        context: Optional[ssl.SSLContext] = None
        if url.secure:
            context = settings.ssl_context or ssl.create_default_context()
        transport, protocol = await _start(
            loop, sock, protocol_factory, context, url.host, options.handshake_timeout
        )
    except BaseException:
        sock.close()
        raise
    if trace is not None and context is not None:
        tls = transport.get_extra_info("ssl_object")
        cipher = tls.cipher() if tls is not None else None
        trace(
            "tls_wrapped", version=tls.version() if tls is not None else None,
            cipher=cipher[0] if cipher else None,
        )
    return transport, protocol, proxy.display_url if proxy is not None else None


async def _connect_tcp(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    what: str,
    deadline: float,
    settings: SessionSettings,
) -> socket.socket:
    try:
        addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ConnectError(f"could not resolve {host!r}: {describe_os_error(error)}") from None
    last_error = "no addresses"
    for family, kind, proto, _, address in addresses:
        sock, last_error = new_tcp_socket(
            family, kind, proto, settings.socket_options, settings.source_address
        )
        if sock is None:
            continue
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), deadline - loop.time())
            return sock
        except asyncio.TimeoutError:
            sock.close()
            raise ConnectError(f"connecting to {what} timed out") from None
        except BaseException as error:
            sock.close()
            if not isinstance(error, OSError):
                raise
            if error.errno is not None:
                # asyncio's own words ("Connect call failed (address)") would
                # make the reason differ from the threaded driver's.
                error = OSError(error.errno, os.strerror(error.errno))
            last_error = describe_os_error(error)
    raise ConnectError(f"could not connect to {what}: {last_error}")


async def _tunnel(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    proxy: Proxy,
    host: str,
    port: int,
    agent: Optional[str],
    deadline: float,
) -> None:
    """Open a CONNECT tunnel to ``host:port`` through ``proxy`` (RFC 7231 section 4.3.6)."""
    failed = f"proxy {proxy.display_url} connection failed"
    try:
        await asyncio.wait_for(
            loop.sock_sendall(sock, connect_request(proxy, host, port, agent)),
            deadline - loop.time(),
        )
    except asyncio.TimeoutError:
        raise ConnectError(f"timed out sending CONNECT to the proxy {proxy.display_url}") from None
    except OSError as error:
        raise ConnectError(f"{failed}: {describe_os_error(error)}") from None
    buffer = b""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head, buffer = buffer[:end], buffer[end + 4 :]
            if connect_status(proxy, host, port, head) >= 200:
                if buffer:
                    # Nothing may come through the tunnel before we speak.
                    raise ConnectError(f"proxy {proxy.display_url} sent data after its answer")
                return
            continue  # 1xx responses are interim: the real answer follows
        if len(buffer) > MAX_RESPONSE_HEADER_SIZE:
            raise ConnectError(f"proxy {proxy.display_url} sent a header block over 64 KiB")
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), deadline - loop.time())
        except asyncio.TimeoutError:
            raise ConnectError(
                f"timed out waiting for the proxy {proxy.display_url} to answer CONNECT"
            ) from None
        except OSError as error:
            raise ConnectError(f"{failed}: {describe_os_error(error)}") from None
        if not data:
            raise ConnectError(f"proxy {proxy.display_url} closed the connection during CONNECT")
        buffer += data


async def _start(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    protocol_factory: Callable[[], P],
    context: Optional[ssl.SSLContext],
    host: str,
    handshake_timeout: float,
) -> Tuple[asyncio.Transport, P]:
    """The transport over ``sock``, after the TLS handshake for ``wss://``."""
    if context is None:
        transport, protocol = await loop.create_connection(protocol_factory, sock=sock)
        return transport, protocol
    try:
        transport, protocol = await loop.create_connection(
            protocol_factory, sock=sock, ssl=context, server_hostname=host,
            ssl_handshake_timeout=handshake_timeout,
        )
    except (ssl.SSLError, OSError) as error:
        timed_out = isinstance(error, ConnectionAbortedError) or "longer than" in str(error)
        if timed_out:
            raise ConnectError(f"TLS handshake with {host} timed out") from None
        text = describe_os_error(error)
        if any(marker in str(error) for marker in NOT_TLS_ERRORS):
            # The threaded driver's one wording; OpenSSL's words in the log.
            log.debug("TLS hello to %s: %s", host, text)
            text = PLAIN_ANSWER
        elif closed_on_us(error):
            text = CLOSED_ON_HELLO
        raise ConnectError(f"TLS handshake with {host} failed: {text}") from None
    except asyncio.TimeoutError:
        raise ConnectError(f"TLS handshake with {host} timed out") from None
    return transport, protocol


__all__ = ["open_async"]
