"""The opening handshake: URL parsing, the upgrade request, the response check.

Both sides of it: the client builds the request (:func:`build_request`) and
checks the answer (:func:`check_response`); a server checks the request
(:func:`check_request`) and answers it (:func:`build_response`, or
:func:`build_rejection`). Pure functions and values, no I/O (RFC 6455
section 4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from http import HTTPStatus
from typing import Any, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote, unquote, urlsplit

from .constants import WS_GUID, WS_VERSION
from .errors import HandshakeError, InvalidRequest
from .request import Request
from .response import HTTPMessage, Response

HeaderValue = Union[str, bytes]

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

#: Headers lomond writes itself; setting them with ``add_header`` would corrupt
#: the handshake, so it is refused.
RESERVED_HEADERS = frozenset(
    {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
     "sec-websocket-extensions", "content-length", "transfer-encoding"}
)


def check_text(what: str, value: str) -> None:
    """Raise ``ValueError`` if ``value`` holds CR, LF or NUL.

    Those would let a caller inject headers into a request (request
    smuggling); ``what`` names the value in the message.
    """
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"{what} must not contain CR, LF or NUL characters")


def bracket_host(host: str) -> str:
    """``host`` as written in a URI authority or ``Host`` header.

    An IPv6 address literal (the only kind of host with a colon) goes in
    square brackets (RFC 3986 section 3.2.2); other hosts are unchanged.
    """
    return f"[{host}]" if ":" in host else host


def check_header(name: HeaderValue, value: HeaderValue) -> Tuple[str, str]:
    """Validate a custom header and return it as ``(name, value)`` strings.

    The name must be an RFC 7230 token; the value must not contain CR, LF or NUL.
    """
    name_s, value_s = _check_field(name, value)
    if name_s.lower() in RESERVED_HEADERS:
        raise ValueError(f"the {name_s} header is set by lomond and cannot be overridden")
    return name_s, value_s


def _check_field(name: HeaderValue, value: HeaderValue) -> Tuple[str, str]:
    """A header field as ``(name, value)`` strings, if it is well formed (RFC 7230 section 3.2)."""
    name_s = name.decode("latin-1") if isinstance(name, bytes) else name
    value_s = value.decode("latin-1") if isinstance(value, bytes) else value
    if not isinstance(name_s, str) or not isinstance(value_s, str):
        raise TypeError("header names and values must be str or bytes")
    if not name_s or not set(name_s) <= _TOKEN_CHARS:
        raise ValueError(f"invalid header name {name_s!r}")
    check_text("header values", value_s)
    try:
        value_s.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name_s} has characters outside ISO-8859-1") from None
    return name_s, value_s


class URL(str):
    """A parsed ``ws://`` or ``wss://`` URL (RFC 6455 section 3).

    It *is* the URL as a ``str``, with any credentials removed (safe to show
    in events and logs), so it compares equal to, hashes like, formats and
    slices like that plain string, as Lomond 0.3's ``websocket.url`` did
    (``websocket.url.startswith("wss")``). The parsed parts are attributes:

    * ``scheme``: ``"ws"`` or ``"wss"`` (lower case);
    * ``secure``: whether the scheme is ``wss``;
    * ``host``: the host name or address (IPv6 without brackets);
    * ``port``: the port, the scheme's default (80/443) when the URL has none;
    * ``resource``: the path and query sent in the request line;
    * ``credentials``: the percent-decoded ``(user, password)``, or ``None``;
      it is never part of the string value or the ``repr``.

    Equality is the string's: two URLs that differ only in their credentials
    are equal. Instances are immutable and are made by :func:`parse_url`.
    """

    # Slots keep it small and leave no __dict__ through which the parts
    # could be rebound.
    __slots__ = ("credentials", "host", "port", "resource", "scheme", "secure")

    scheme: str
    secure: bool
    host: str
    port: int
    resource: str
    credentials: Optional[Tuple[str, str]]

    def __new__(
        cls,
        url: str,
        secure: bool,
        host: str,
        port: int,
        resource: str,
        credentials: Optional[Tuple[str, str]] = None,
    ) -> URL:
        self = super().__new__(cls, url)
        init = object.__setattr__
        init(self, "scheme", "wss" if secure else "ws")
        init(self, "secure", secure)
        init(self, "host", host)
        init(self, "port", port)
        init(self, "resource", resource)
        init(self, "credentials", credentials)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"URL is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"URL is immutable (cannot delete {name!r})")

    def __reduce__(self) -> Tuple[Any, ...]:
        # copy and pickle rebuild it through __new__ (the slots are read-only).
        return (URL, (self.url, self.secure, self.host, self.port, self.resource, self.credentials))

    def __repr__(self) -> str:
        # The plain string's repr: what a str URL showed in Lomond 0.3.
        return repr(self.url)

    @property
    def url(self) -> str:
        """The URL without credentials, as a plain ``str``."""
        return str.__str__(self)

    @property
    def host_header(self) -> str:
        """``Host`` header value: the port only when not the default, IPv6 bracketed."""
        host = bracket_host(self.host)
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


#: Schemes taken as their WebSocket counterparts (RFC 6455 section 3 defines
#: only ws and wss; the WHATWG WebSocket standard maps these two).
_HTTP_SCHEMES = {"http": "ws", "https": "wss"}


def parse_url(url: str) -> URL:
    """Parse and validate a WebSocket URL, raising ``ValueError`` with a clear message.

    ``ws://`` and ``wss://`` (RFC 6455 section 3); ``http://`` and
    ``https://`` are taken as ``ws://`` and ``wss://`` (as browsers do, and
    Lomond 0.3.4 accepted them). Returns a :class:`URL`: the URL without
    credentials, as a ``str`` with the WebSocket scheme, with the parsed
    parts as attributes.
    """
    if not isinstance(url, str):
        raise TypeError("url must be a str")
    check_text("the URL", url)
    if any(ch.isspace() for ch in url):
        raise ValueError("the URL must not contain whitespace")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # "Invalid IPv6 URL"
        raise ValueError(f"cannot parse {_redact(url)!r}: {error}") from None
    scheme = parts.scheme.lower()
    # http(s):// is taken as ws(s)://, as the WHATWG WebSocket standard has
    # browsers do (Lomond 0.3.4 took any URL); the URL then says ws(s)://.
    scheme = _HTTP_SCHEMES.get(scheme, scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(_scheme_error(url))
    if parts.fragment:
        raise ValueError("a WebSocket URL must not have a fragment (RFC 6455 section 3)")
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ValueError(_port_error(url, parts.netloc)) from None
    if not host:
        raise ValueError(f"the URL {_redact(url)!r} has no host")
    secure = scheme == "wss"
    port = port or (443 if secure else 80)
    # Non-ASCII in the path or query is sent percent-encoded (RFC 3986
    # section 2.1); existing escapes and reserved characters are kept.
    resource = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
    if parts.query:
        resource = f"{resource}?{quote(parts.query, safe='/%:@!$&()*+,;=?~-._')}"
    credentials = None
    if parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
    netloc = parts.netloc.rpartition("@")[2]
    clean = f"{scheme}://{netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return URL(clean, secure, host, port, resource, credentials)


def _scheme_error(url: str) -> str:
    """Why ``url`` is not a ``ws://`` or ``wss://`` URL, with the URL it probably meant.

    ``localhost:8765`` (no scheme: ``urlsplit`` takes ``localhost`` for one)
    suggests ``ws://localhost:8765/``. Credentials are never repeated.
    (``http://`` and ``https://`` never get here: they are taken as
    ``ws://`` and ``wss://``.)
    """
    sep = url.partition("://")[1]
    message = "the URL must start with ws:// or wss:// (or http://, https://)"
    if sep or not url or url.startswith(("/", ":")):
        return f"{message} (got {url.split(':')[0]!r})"
    # No scheme at all: "localhost:8765", "example.org/feed".
    host, _, path = url.partition("/")
    secure = host.rpartition(":")[2] == "443"
    meant = f"{'wss' if secure else 'ws'}://{host}/{path}"
    given = host.rpartition("@")[2]
    return f"{message} (got {given!r}, with no scheme); did you mean {_redact(meant)!r}?"


def _port_error(url: str, netloc: str) -> str:
    """What is wrong with the port of ``url`` (out of range, or not a number)."""
    port = netloc.rpartition("@")[2].rpartition("]")[2].rpartition(":")[2]
    if port.isdigit():
        return f"the port in {_redact(url)!r} is out of range (0 to 65535): {port}"
    return f"the port in {_redact(url)!r} is not a number: {port!r}"


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def make_key() -> bytes:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64 (RFC 6455 section 4.1, item 7)."""
    return base64.b64encode(os.urandom(16))


def accept_for(key: bytes) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode("ascii")


def basic_auth(user: str, password: str) -> str:
    """A ``Basic`` credential (RFC 7617) for ``Authorization`` or ``Proxy-Authorization``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def build_request(
    url: URL,
    key: bytes,
    agent: Optional[str],
    protocols: Sequence[str] = (),
    extensions: Optional[str] = None,
    headers: Iterable[Tuple[str, str]] = (),
) -> bytes:
    """The upgrade request (RFC 6455 section 4.1), as bytes ready to send."""
    lines: List[str] = [
        f"GET {url.resource} HTTP/1.1",
        f"Host: {url.host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode('ascii')}",
        f"Sec-WebSocket-Version: {WS_VERSION}",
    ]
    if protocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    custom = list(headers)
    names = {name.lower() for name, _ in custom}
    if agent and "user-agent" not in names:
        lines.append(f"User-Agent: {agent}")
    if url.credentials and "authorization" not in names:
        lines.append(f"Authorization: {basic_auth(*url.credentials)}")
    lines.extend(f"{name}: {value}" for name, value in custom)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_protocols(protocols: Sequence[str]) -> List[str]:
    """Validate subprotocol names: RFC 7230 tokens (RFC 6455 section 4.1, item 10)."""
    if isinstance(protocols, (str, bytes)):
        raise TypeError("protocols must be a list of strings, not a single string")
    checked = []
    for protocol in protocols:
        if not isinstance(protocol, str):
            raise TypeError("each protocol must be a str")
        if not protocol or not set(protocol) <= _TOKEN_CHARS:
            raise ValueError(f"invalid subprotocol name {protocol!r}")
        checked.append(protocol)
    return checked


def _has_token(message: HTTPMessage, name: str, token: str) -> bool:
    return any(item.lower() == token for item in message.get_list(name))


def check_response(response: Response, key: bytes, protocols: Sequence[str]) -> Optional[str]:
    """Check the parts of the response every client must check (RFC 6455 section 4.1).

    Returns the subprotocol the server selected, or ``None``; raises
    :class:`HandshakeError` with the reason otherwise. Extensions are checked
    by the caller, which knows what was offered.
    """
    if response.status_code != 101:
        raise HandshakeError(
            f"server answered {response.status_code} {response.status}".rstrip()
            + " instead of 101 Switching Protocols"
        )
    if not _has_token(response, "upgrade", "websocket"):
        raise HandshakeError("response lacks 'Upgrade: websocket'")
    if not _has_token(response, "connection", "upgrade"):
        raise HandshakeError("response lacks 'Connection: Upgrade'")
    accept = response.get("sec-websocket-accept")
    if accept is None:
        raise HandshakeError("response lacks Sec-WebSocket-Accept")
    if accept.strip() != accept_for(key):
        raise HandshakeError("Sec-WebSocket-Accept does not match the key sent")
    chosen = response.get_list("sec-websocket-protocol")
    if not chosen:
        return None
    if len(chosen) > 1:
        raise HandshakeError("server selected more than one subprotocol")
    if chosen[0] not in protocols:
        raise HandshakeError(f"server selected subprotocol {chosen[0]!r}, which was not offered")
    return chosen[0]


# -- the server's side -------------------------------------------------------------------

# Headers the server's answers write themselves: extra headers may not repeat them.
_FRAMING_HEADERS = frozenset({"connection", "content-length", "transfer-encoding"})
_RESPONSE_HEADERS = _FRAMING_HEADERS | {
    "upgrade", "sec-websocket-accept", "sec-websocket-protocol", "sec-websocket-extensions",
}
_REJECTION_HEADERS = _FRAMING_HEADERS | {"content-type"}


def check_request(request: Request) -> bytes:
    """Check a client's upgrade request as a server must (RFC 6455 section 4.2.1).

    Returns the ``Sec-WebSocket-Key`` to answer (:func:`accept_for`);
    raises :class:`~lomond.errors.InvalidRequest` with the HTTP status to
    answer otherwise: 400 for a request that is not a WebSocket upgrade (not
    a GET over HTTP/1.1 or later, no ``Host``, no ``Upgrade: websocket`` or
    ``Connection: Upgrade``, a key that is not 16 bytes in base64), 426 with
    ``Sec-WebSocket-Version: 13`` for another protocol version (section 4.4).
    """
    if request.method != "GET":
        raise InvalidRequest(f"a WebSocket upgrade must be a GET request, not {request.method}")
    version = request.http_version[5:].partition(".")
    if not (version[0].isdigit() and version[2].isdigit()) or (
        (int(version[0]), int(version[2])) < (1, 1)
    ):
        raise InvalidRequest(
            f"a WebSocket upgrade needs HTTP/1.1 or later, not {request.http_version}"
        )
    if not _has_token(request, "upgrade", "websocket"):
        raise InvalidRequest("this is a WebSocket server: expected Upgrade: websocket")
    if not _has_token(request, "connection", "upgrade"):
        raise InvalidRequest("this is a WebSocket server: expected Connection: Upgrade")
    if not request.get("host"):
        raise InvalidRequest("the request has no Host header")
    if (request.get("sec-websocket-version") or "").strip() != str(WS_VERSION):
        raise InvalidRequest(
            f"only WebSocket version {WS_VERSION} is supported", 426,
            (("Sec-WebSocket-Version", str(WS_VERSION)),),
        )
    key = (request.get("sec-websocket-key") or "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise InvalidRequest("missing or invalid Sec-WebSocket-Key (16 bytes in base64)")
    return key.encode("ascii")


def _extra_headers(headers: Iterable[Tuple[str, str]], reserved: FrozenSet[str]) -> List[str]:
    lines = []
    for name, value in headers:
        name, value = _check_field(name, value)
        if name.lower() in reserved:
            raise ValueError(f"the {name} header is set by lomond and cannot be overridden")
        lines.append(f"{name}: {value}")
    return lines


def build_response(
    key: bytes,
    protocol: Optional[str] = None,
    extensions: Optional[str] = None,
    headers: Iterable[Tuple[str, str]] = (),
) -> bytes:
    """A server's 101 answer to an upgrade request with ``key`` (RFC 6455 section 4.2.2).

    ``protocol`` is the subprotocol chosen among the client's, ``extensions``
    the ``Sec-WebSocket-Extensions`` answer; ``headers`` are extra headers
    (well-formed fields, and none that this function writes).
    """
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_for(key)}",
    ]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    lines.extend(_extra_headers(headers, _RESPONSE_HEADERS))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def build_rejection(
    status: int, reason: str = "", headers: Iterable[Tuple[str, str]] = ()
) -> bytes:
    """A server's refusal of an upgrade request: an HTTP error response (RFC 6455 section 4.2.2).

    ``status`` is any 3xx, 4xx or 5xx code (a redirect, 401 with a
    challenge in ``headers``, 403, ...); ``reason`` is sent as a short
    ``text/plain`` body, for the human reading it. The response asks to
    close the connection, which the server then does.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 599:
        raise ValueError(f"a rejection needs a 3xx, 4xx or 5xx status, not {status!r}")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = (reason + "\n").encode("utf-8") if reason else b""
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *_extra_headers(headers, _REJECTION_HEADERS),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


__all__ = [
    "URL", "accept_for", "basic_auth", "bracket_host",
    "build_rejection", "build_request", "build_response", "check_header", "check_protocols",
    "check_request", "check_response", "check_text", "make_key", "parse_url",
]
