"""The server's HTTP response to the opening handshake (RFC 6455 section 4.2.2)."""

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


class Response:
    """A parsed HTTP response header block.

    ``header_data`` is the raw block, status line included, up to and
    including the blank line. Header names are matched case-insensitively;
    repeated headers are kept in order.
    """

    __slots__ = ("header_data", "headers", "http_version", "raw_headers", "status", "status_code")

    def __init__(self, header_data: bytes) -> None:
        self.header_data = header_data
        # RFC 7230 section 3.2.4: header fields are ISO-8859-1 at worst, so
        # latin-1 never fails and keeps every byte recoverable.
        lines = header_data.decode("latin-1").split("\r\n")
        status_line = lines[0]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HandshakeError(f"invalid HTTP status line: {status_line[:80]!r}")
        self.http_version: str = parts[0]
        self.status_code: int = int(parts[1])
        self.status: str = parts[2] if len(parts) > 2 else ""
        self.raw_headers: List[Tuple[str, str]] = parse_header_lines(lines[1:])
        self.headers: Dict[str, str] = join_headers(self.raw_headers)

    def __repr__(self) -> str:
        return f"<response {self.http_version} {self.status_code} {self.status}>"

    def get(self, name: str, default: Optional[_T] = None) -> Union[str, _T, None]:
        """The value of header ``name`` (repeated headers joined with ``", "``), or ``default``."""
        return self.headers.get(name.lower(), default)

    def get_list(self, name: str) -> List[str]:
        """The comma-separated elements of every ``name`` header, stripped, empties dropped."""
        value = self.headers.get(name.lower())
        if value is None:
            return []
        return [item.strip() for item in value.split(",") if item.strip()]


__all__ = ["Response", "join_headers", "parse_header_lines"]
