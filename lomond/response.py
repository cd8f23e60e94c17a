"""The server's HTTP response to the opening handshake (RFC 6455 section 4.2.2)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, TypeVar, Union

from .errors import HandshakeError

_T = TypeVar("_T")


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
        self.raw_headers: List[Tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            if line[0] in " \t":
                # obs-fold (RFC 7230 section 3.2.4) is deprecated; joining the
                # continuation keeps a lenient server usable.
                if not self.raw_headers:
                    raise HandshakeError("header continuation without a header")
                name, value = self.raw_headers[-1]
                self.raw_headers[-1] = (name, f"{value} {line.strip()}")
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HandshakeError(f"invalid header line: {line[:80]!r}")
            self.raw_headers.append((name, value.strip()))
        self.headers: Dict[str, str] = {}
        for name, value in self.raw_headers:
            key = name.lower()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value

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


__all__ = ["Response"]
