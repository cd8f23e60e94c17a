"""HTTP header blocks of the opening handshake; the server's answer (RFC 6455 section 4.2.2)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from .errors import HandshakeError

_T = TypeVar("_T")


def parse_header_lines(lines: Sequence[str]) -> List[Tuple[str, str]]:
    """Parse HTTP header field lines into ``(name, value)`` pairs, in order (RFC 7230 section 3.2).

    Empty lines are skipped; an obsolete folded line is joined to the header
    before it. Raises :class:`~lomond.errors.HandshakeError` on a malformed line.
    """
    fields: List[Tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # obs-fold (RFC 7230 section 3.2.4) is deprecated; joining the
            # continuation keeps a lenient peer usable.
            if not fields:
                raise HandshakeError("header continuation without a header")
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(f"invalid header line: {line[:80]!r}")
        fields.append((name, value.strip()))
    return fields


def join_headers(fields: Sequence[Tuple[str, str]]) -> Dict[str, str]:
    """Headers by lower-case name, repeated ones joined with ``", "`` (RFC 7230 section 3.2.2)."""
    headers: Dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class HTTPMessage:
    """The header block of an HTTP message: a start line, then header fields.

    The part a :class:`Response` (the server's answer, read by a client) and
    a :class:`~lomond.request.Request` (the client's upgrade request, read by
    a server) share. ``header_data`` is the raw block, start line included,
    up to and including the blank line. Header names are matched
    case-insensitively; repeated headers are kept in order.
    """

    __slots__ = ("header_data", "headers", "http_version", "raw_headers")

    def __init__(self, header_data: bytes) -> None:
        self.header_data = header_data
        # RFC 7230 section 3.2.4: header fields are ISO-8859-1 at worst, so
        # latin-1 never fails and keeps every byte recoverable.
        lines = header_data.decode("latin-1").split("\r\n")
        self.http_version = ""
        # The start line first: a block that is not HTTP at all is reported
        # as that, not as a malformed header.
        self._parse_start_line(lines[0])
        self.raw_headers: List[Tuple[str, str]] = parse_header_lines(lines[1:])
        self.headers: Dict[str, str] = join_headers(self.raw_headers)

    def _parse_start_line(self, line: str) -> None:
        """Parse the status or request line, raising :class:`HandshakeError` if malformed."""
        raise NotImplementedError

    def get(self, name: str, default: Optional[_T] = None) -> Union[str, _T, None]:
        """The value of header ``name`` (repeated headers joined with ``", "``), or ``default``."""
        return self.headers.get(name.lower(), default)

    def get_list(self, name: str) -> List[str]:
        """The comma-separated elements of every ``name`` header, stripped, empties dropped."""
        value = self.headers.get(name.lower())
        if value is None:
            return []
        return [item.strip() for item in value.split(",") if item.strip()]


class Response(HTTPMessage):
    """A parsed HTTP response header block (RFC 7230 section 3.1.2).

    ``header_data`` is the raw block, status line included, up to and
    including the blank line. Header names are matched case-insensitively;
    repeated headers are kept in order.
    """

    __slots__ = ("status", "status_code")

    #: The status code, ``101`` for a successful upgrade.
    status_code: int
    #: The reason phrase (``"Switching Protocols"``), possibly empty.
    status: str

    def _parse_start_line(self, line: str) -> None:
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HandshakeError(f"invalid HTTP status line: {line[:80]!r}")
        self.http_version = parts[0]
        self.status_code = int(parts[1])
        self.status = parts[2] if len(parts) > 2 else ""

    def __repr__(self) -> str:
        return f"<response {self.http_version} {self.status_code} {self.status}>"


__all__ = ["HTTPMessage", "Response", "join_headers", "parse_header_lines"]
