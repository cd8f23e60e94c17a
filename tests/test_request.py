"""The client's upgrade request as a server parses it (lomond.request.Request)."""

from __future__ import annotations

import pytest

from lomond.errors import HandshakeError
from lomond.request import Request
from lomond.response import HTTPMessage

RAW = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: example.com:8080\r\n"
    b"upgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: chat.v2, chat.v1\r\n"
    b"Sec-WebSocket-Protocol: chat.v0\r\n"
    b"X-Name: caf\xe9\r\n"
    b"\r\n"
)


def test_request_line_and_headers() -> None:
    request = Request(RAW)
    assert isinstance(request, HTTPMessage)
    assert (request.method, request.target, request.http_version) == (
        "GET", "/chat?room=1", "HTTP/1.1")
    assert request.header_data == RAW
    assert repr(request) == "<request GET /chat?room=1 HTTP/1.1>"
    # The same header access as a Response: case-insensitive, repeats joined.
    assert request.get("UPGRADE") == "websocket"
    assert request.get("missing", "fallback") == "fallback"
    assert request.get_list("connection") == ["keep-alive", "Upgrade"]
    assert request.get_list("sec-websocket-protocol") == ["chat.v2", "chat.v1", "chat.v0"]
    assert request.headers["x-name"] == "caf\xe9"
    assert [name for name, _ in request.raw_headers][:2] == ["Host", "upgrade"]


@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",  # an empty part between two spaces
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET / FTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno-colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Space : value\r\n\r\n",
    ],
)
def test_invalid_requests(raw: bytes) -> None:
    with pytest.raises(HandshakeError):
        Request(raw)
