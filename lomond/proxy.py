"""HTTP proxies: choosing one for a URL, and the CONNECT exchange (no I/O here).

Detection follows the standard library (``urllib.request.getproxies`` and
``urllib.request.proxy_bypass``): ``HTTP_PROXY`` for ``ws://``,
``HTTPS_PROXY`` for ``wss://`` (lower-case variants win), and ``NO_PROXY``
with host names, domain suffixes (``example.com`` and ``.example.com`` both
cover ``a.example.com``), ``host:port`` entries and ``*``.

Credentials in a proxy URL are percent-decoded and sent as Basic
``Proxy-Authorization`` (RFC 7617, RFC 7235). They never appear in a repr,
an event, a log record or an exception message: :attr:`Proxy.display_url`
is what those see, and errors about a malformed proxy URL quote nothing from
it.

The socket side of the tunnel lives in :mod:`lomond.sync.connect`.
"""

from __future__ import annotations

import urllib.request
from typing import List, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import attrs

from .errors import ConnectError
from .handshake import URL, basic_auth, bracket_host, check_text

#: Port used when a proxy URL has none (as the standard library and urllib3 do).
DEFAULT_PROXY_PORT = 80

# Schemes named in the "unsupported scheme" error; anything else is not
# quoted, in case a malformed URL put part of the credentials there.
_KNOWN_SCHEMES = frozenset(
    {"https", "socks", "socks4", "socks4a", "socks5", "socks5h", "ws", "wss", "ftp"}
)


@attrs.frozen
class Proxy:
    """An HTTP proxy to tunnel through. ``credentials`` never appear in its repr."""

    host: str
    port: int
    credentials: Optional[Tuple[str, str]] = attrs.field(default=None, repr=False)

    @property
    def display_url(self) -> str:
        """The proxy URL without credentials: what events and logs show."""
        return f"http://{bracket_host(self.host)}:{self.port}"

    def __str__(self) -> str:
        return self.display_url


def parse_proxy(proxy_url: str) -> Proxy:
    """Parse ``http://[user[:password]@]host[:port]`` (percent-decoding the credentials).

    A missing scheme means ``http://``; a missing port means 80. Raises
    ``ValueError`` for anything else; the message never quotes the URL, since
    a malformed one may have its password where the port should be.
    """
    if not isinstance(proxy_url, str):
        raise TypeError("proxy URLs must be str")
    check_text("proxy URLs", proxy_url)
    if "://" not in proxy_url:
        proxy_url = f"http://{proxy_url}"
    parts = urlsplit(proxy_url.strip())
    scheme = parts.scheme.lower()
    if scheme != "http":
        shown = repr(scheme) if scheme in _KNOWN_SCHEMES else "of the URL"
        raise ValueError(f"unsupported proxy scheme {shown}: only http:// proxies are supported")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(
            "invalid proxy URL: the port is not a number from 1 to 65535"
            " (in credentials, percent-encode '/', '?', '#', '@' and ':')"
        ) from None
    if not host:
        raise ValueError("invalid proxy URL: it has no host")
    if port == 0:
        raise ValueError("invalid proxy URL: port 0")
    credentials = None
    if parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
        check_text("proxy credentials", "".join(credentials))
    return Proxy(host, port or DEFAULT_PROXY_PORT, credentials)


def _bypass_candidates(url: URL) -> List[str]:
    # The standard library checks the request's netloc ("host:port", IPv6 in
    # brackets) against NO_PROXY, which matches host, suffix and host:port
    # entries. The bare address is checked too, so that an IPv6 entry
    # written without brackets ("::1") matches as well.
    host = bracket_host(url.host)
    if host != url.host:
        return [f"{host}:{url.port}", host, url.host]
    return [f"{host}:{url.port}"]


def select_proxy(url: URL, proxies: Optional[Mapping[str, str]]) -> Optional[Proxy]:
    """The proxy for ``url``: from ``proxies`` or, when ``None``, from the environment.

    ``proxies`` maps ``"http"`` (used for ``ws://``) and ``"https"`` (for
    ``wss://``) to proxy URLs; an optional ``"no"`` entry is a ``NO_PROXY``
    style list applied to them. ``{}`` means no proxy.

    An explicit bad proxy URL raises ``ValueError``; a bad one from the
    environment raises :class:`~lomond.errors.ConnectError` (it is reported
    as a :class:`~lomond.events.ConnectFail` rather than silently bypassed).
    """
    key = "https" if url.secure else "http"
    if proxies is None:
        detected = urllib.request.getproxies()
        proxy_url = detected.get(key)
        if not proxy_url:
            return None
        if any(urllib.request.proxy_bypass(host) for host in _bypass_candidates(url)):
            return None
        try:
            return parse_proxy(proxy_url)
        except (TypeError, ValueError) as error:
            raise ConnectError(f"the {key.upper()}_PROXY setting is not usable: {error}") from None
    proxy_url = proxies.get(key)
    if not proxy_url:
        return None
    no_proxy = proxies.get("no")
    if no_proxy and any(
        proxy_bypass_environment(host, {"no": no_proxy}) for host in _bypass_candidates(url)
    ):
        return None
    return parse_proxy(proxy_url)


def connect_authority(host: str, port: int) -> str:
    """``host:port`` for a CONNECT request target (RFC 7230 section 5.3.3)."""
    if ":" in host:  # an IPv6 literal: bracketed, never IDNA-encoded
        return f"{bracket_host(host)}:{port}"
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ConnectError(f"cannot encode host name {host!r} for the proxy") from None
    return f"{host}:{port}"


def connect_request(proxy: Proxy, host: str, port: int, agent: Optional[str]) -> bytes:
    """The CONNECT request for a tunnel to ``host:port`` (RFC 7231 section 4.3.6)."""
    authority = connect_authority(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if agent:
        lines.append(f"User-Agent: {agent}")
    if proxy.credentials:
        lines.append(f"Proxy-Authorization: {basic_auth(*proxy.credentials)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect_status(proxy: Proxy, host: str, port: int, head: bytes) -> int:
    """Check the proxy's answer to CONNECT (its header block, without the blank line).

    Returns the status code: 2xx means the tunnel is open, 1xx (but 101) is
    an interim response to skip. Raises :class:`ConnectError` naming the status for
    anything else.
    """
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    shown = "".join(ch if ch.isprintable() else "?" for ch in status_line[:80])
    parts = status_line.split(" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith("HTTP/")
        or not (len(parts[1]) == 3 and parts[1].isdigit())
    ):
        raise ConnectError(f"proxy {proxy.display_url} sent an invalid response: {shown!r}")
    code = int(parts[1])
    if 200 <= code < 300 or (100 <= code < 200 and code != 101):
        return code
    status = " ".join(shown.split(" ", 2)[1:])
    hint = ""
    if code == 407:
        hint = (
            " (the proxy credentials were refused)"
            if proxy.credentials
            else " (the proxy wants credentials: http://user:password@host:port)"
        )
    raise ConnectError(
        f"proxy {proxy.display_url} refused CONNECT to "
        f"{connect_authority(host, port)}: {status}{hint}"
    )


__all__ = [
    "DEFAULT_PROXY_PORT",
    "Proxy",
    "connect_authority",
    "connect_request",
    "connect_status",
    "parse_proxy",
    "select_proxy",
]
