"""The client's upgrade request, as a server reads it (RFC 6455 section 4.2.1)."""

from __future__ import annotations

from .errors import HandshakeError
from .response import HTTPMessage


class Request(HTTPMessage):
    """A parsed HTTP request header block (RFC 7230 section 3.1.1).

    ``method`` and ``target`` come from the request line (``target`` is the
    path and query, ``/chat?room=1``); ``http_version`` is ``"HTTP/1.1"``
    for any client that may upgrade. Headers are read with :meth:`get` and
    :meth:`get_list`, names matched case-insensitively. Whether it is a valid
    upgrade request is :func:`lomond.handshake.check_request`'s concern: this
    only parses it, raising :class:`~lomond.errors.HandshakeError` for a
    malformed request line or header.
    """

    __slots__ = ("method", "target")

    #: The request method (``GET`` for an upgrade).
    method: str
    #: The request target: the resource's path and query.
    target: str

    def _parse_start_line(self, line: str) -> None:
        parts = line.split(" ")
        if len(parts) != 3 or not all(parts) or not parts[2].startswith("HTTP/"):
            raise HandshakeError(f"invalid HTTP request line: {line[:80]!r}")
        self.method, self.target, self.http_version = parts

    def __repr__(self) -> str:
        return f"<request {self.method} {self.target} {self.http_version}>"


__all__ = ["Request"]
