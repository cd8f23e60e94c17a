"""The HTTP response to the upgrade request (lomond.response.Response)."""

from __future__ import annotations

import pytest

from lomond.errors import HandshakeError
from lomond.response import Response

RAW = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Set-Cookie: a=1\r\n"
    b"Set-Cookie: b=2\r\n"
    b"X-List: one, two,,three ,\r\n"
    b"X-Empty:\r\n"
    b"\r\n"
)


def test_status_line() -> None:
    response = Response(RAW)
    assert response.http_version == "HTTP/1.1"
    assert response.status_code == 101
    assert response.status == "Switching Protocols"
    assert response.header_data == RAW
    assert repr(response) == "<response HTTP/1.1 101 Switching Protocols>"


def test_headers_are_case_insensitive() -> None:
    response = Response(RAW)
    assert response.get("UPGRADE") == "websocket"
    assert response.get("Connection") == "Upgrade"
    assert response.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert response.headers["upgrade"] == "websocket"


def test_get_default() -> None:
    response = Response(RAW)
    assert response.get("missing") is None
    assert response.get("missing", "fallback") == "fallback"
    assert response.get("X-Empty") == ""


def test_repeated_headers_are_joined_in_order() -> None:
    response = Response(RAW)
    assert response.get("set-cookie") == "a=1, b=2"
    assert [v for n, v in response.raw_headers if n == "Set-Cookie"] == ["a=1", "b=2"]


def test_get_list() -> None:
    response = Response(RAW)
    assert response.get_list("x-list") == ["one", "two", "three"]
    assert response.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.get_list("missing") == []
    assert response.get_list("x-empty") == []


def test_status_without_reason_phrase() -> None:
    response = Response(b"HTTP/1.1 101\r\nUpgrade: websocket\r\n\r\n")
    assert response.status_code == 101
    assert response.status == ""


def test_reason_phrase_with_spaces() -> None:
    assert Response(b"HTTP/1.0 503 Service Temporarily Unavailable\r\n\r\n").status == (
        "Service Temporarily Unavailable")


def test_obsolete_line_folding_is_joined() -> None:
    response = Response(b"HTTP/1.1 101 OK\r\nX-Long: first\r\n  second\r\n\tthird\r\n\r\n")
    assert response.get("x-long") == "first second third"


def test_latin1_header_values_survive() -> None:
    response = Response(b"HTTP/1.1 101 OK\r\nX-Name: caf\xe9\r\n\r\n")
    assert response.get("x-name") == "caf\xe9"


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTX/1.1 101 OK\r\n\r\n",
        b"\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nno-colon\r\n\r\n",
        b"HTTP/1.1 101 OK\r\n: no name\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nX-Space : value\r\n\r\n",
        b"HTTP/1.1 101 OK\r\n continuation first\r\n\r\n",
    ],
)
def test_invalid_responses(raw: bytes) -> None:
    with pytest.raises(HandshakeError):
        Response(raw)
