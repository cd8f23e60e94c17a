"""HTTP proxies: choosing one for a URL, and tunnelling through it with CONNECT.

Detection follows the standard library (``urllib.request.getproxies`` and
``proxy_bypass_environment``): ``HTTP_PROXY`` for ``ws://``, ``HTTPS_PROXY``
for ``wss://`` (lower-case variants too), and ``NO_PROXY`` with host
suffixes, ports and ``*``. Credentials in a proxy URL are sent as Basic
``Proxy-Authorization`` (RFC 7235) and never shown: :attr:`Proxy.display_url`
is what events and logs see.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit

import attrs

from .constants import MAX_RESPONSE_HEADER_SIZE
from .errors import ConnectError
from .handshake import URL, basic_auth
from .transport import Wakeup, describe_os_error, wait_socket


@attrs.frozen
class Proxy:
    """An HTTP proxy to tunnel through. ``credentials`` never appear in its repr."""

    host: str
    port: int
    credentials: Optional[Tuple[str, str]] = attrs.field(default=None, repr=False)

    @property
    def display_url(self) -> str:
        """The proxy URL without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy(proxy_url: str) -> Proxy:
    """Parse ``http://[user:password@]host[:port]`` (percent-decoding the credentials)."""
    if any(ch in proxy_url for ch in "\r\n\x00"):
        raise ValueError("proxy URLs must not contain CR, LF or NUL characters")
    if "://" not in proxy_url:
        proxy_url = f"http://{proxy_url}"
    parts = urlsplit(proxy_url)
    if parts.scheme.lower() != "http":
        raise ValueError(f"unsupported proxy scheme {parts.scheme!r}: only http:// proxies are supported")
    try:
        host, port = parts.hostname, parts.port or 8080
    except ValueError as error:
        raise ValueError(f"invalid proxy URL: {error}") from None
    if not host:
        raise ValueError("the proxy URL has no host")
    credentials = None
    if parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
        if any(ch in "".join(credentials) for ch in "\r\n\x00"):
            raise ValueError("proxy credentials must not contain CR, LF or NUL characters")
    return Proxy(host, port, credentials)


def select_proxy(url: URL, proxies: Optional[Mapping[str, str]]) -> Optional[Proxy]:
    """The proxy for ``url``: from ``proxies`` or, when ``None``, from the environment."""
    key = "https" if url.secure else "http"
    if proxies is None:
        detected = urllib.request.getproxies()
        proxy_url = detected.get(key)
        if not proxy_url:
            return None
        host_port = f"{url.host}:{url.port}"
        if urllib.request.proxy_bypass_environment(host_port, detected) or \
                urllib.request.proxy_bypass_environment(url.host, detected):
            return None
        return parse_proxy(proxy_url)
    proxy_url = proxies.get(key)
    return parse_proxy(proxy_url) if proxy_url else None


def tunnel(
    sock: socket.socket,
    proxy: Proxy,
    host: str,
    port: int,
    agent: Optional[str],
    deadline: float,
    wakeup: Optional[Wakeup],
) -> None:
    """Ask the proxy to CONNECT to ``host:port`` (RFC 7231 section 4.3.6).

    ``sock`` is non-blocking and connected to the proxy. Raises
    :class:`ConnectError` naming the proxy's status on any non-2xx answer.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if agent:
        lines.append(f"User-Agent: {agent}")
    if proxy.credentials:
        lines.append(f"Proxy-Authorization: {basic_auth(*proxy.credentials)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    _send_all(sock, request, deadline, wakeup)
    response = _read_head(sock, deadline, wakeup)
    status_line = response.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectError(f"proxy {proxy.display_url} sent an invalid response: {status_line[:80]!r}")
    if not 200 <= int(parts[1]) < 300:
        raise ConnectError(
            f"proxy {proxy.display_url} refused CONNECT to {authority}: {' '.join(parts[1:])}"
        )


def _wait(sock: socket.socket, wakeup: Optional[Wakeup], readable: bool, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ConnectError("timed out talking to the proxy")
    ready_r, ready_w, woken = wait_socket(sock, wakeup, readable, not readable, remaining)
    if woken:
        raise ConnectError("connection aborted")


def _send_all(sock: socket.socket, data: bytes, deadline: float, wakeup: Optional[Wakeup]) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            _wait(sock, wakeup, False, deadline)
        except OSError as error:
            raise ConnectError(f"proxy connection failed: {describe_os_error(error)}") from None


def _read_head(sock: socket.socket, deadline: float, wakeup: Optional[Wakeup]) -> bytes:
    # Read one byte at a time past the first chunk would be slow; the proxy
    # sends nothing after its header block until we speak, so reading in
    # chunks cannot swallow tunnelled bytes.
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_RESPONSE_HEADER_SIZE:
            raise ConnectError("proxy response header block is too large")
        try:
            chunk = sock.recv(4096)
        except BlockingIOError:
            _wait(sock, wakeup, True, deadline)
            continue
        except OSError as error:
            raise ConnectError(f"proxy connection failed: {describe_os_error(error)}") from None
        if not chunk:
            raise ConnectError("proxy closed the connection during CONNECT")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if rest:
        raise ConnectError("proxy sent data after its CONNECT response")
    return head


__all__ = ["Proxy", "parse_proxy", "select_proxy", "tunnel"]
