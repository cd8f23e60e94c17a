"""The opening handshake helpers: URLs, the request, the response check (RFC 6455 section 4)."""

from __future__ import annotations

import base64
from typing import List, Optional

import pytest

from lomond.errors import HandshakeError, InvalidRequest
from lomond.handshake import (
    accept_for,
    basic_auth,
    build_rejection,
    build_request,
    build_response,
    check_header,
    check_protocols,
    check_request,
    check_response,
    make_key,
    parse_url,
)
from lomond.request import Request
from lomond.response import Response

# -- URLs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secure", "host", "port", "resource"),
    [
        ("ws://example.com", False, "example.com", 80, "/"),
        ("ws://example.com/", False, "example.com", 80, "/"),
        ("wss://example.com", True, "example.com", 443, "/"),
        ("WSS://Example.com:8443/a/b", True, "example.com", 8443, "/a/b"),
        ("ws://example.com/path?x=1&y=2", False, "example.com", 80, "/path?x=1&y=2"),
        ("ws://example.com?x=1", False, "example.com", 80, "/?x=1"),
        ("ws://127.0.0.1:9001/echo", False, "127.0.0.1", 9001, "/echo"),
        ("ws://[::1]:9000/", False, "::1", 9000, "/"),
        ("wss://[2001:db8::1]/", True, "2001:db8::1", 443, "/"),
        ("ws://example.com/caf%C3%A9", False, "example.com", 80, "/caf%C3%A9"),
    ],
)
def test_parse_url(url: str, secure: bool, host: str, port: int, resource: str) -> None:
    parsed = parse_url(url)
    assert (parsed.secure, parsed.host, parsed.port, parsed.resource) == (
        secure, host, port, resource)
    assert parsed.credentials is None


def test_non_ascii_path_is_percent_encoded() -> None:
    assert parse_url("ws://example.com/café?q=é").resource == "/caf%C3%A9?q=%C3%A9"


@pytest.mark.parametrize(
    "url",
    [
        "example.com",
        "ftp://example.com",
        "ws://",
        "ws:///path",
        "ws://example.com/#fragment",
        "ws://example.com:99999/",
        "ws://example.com:port/",
        "ws://exa mple.com/",
        "ws://example.com/a b",
        "ws://example.com/\r\nX: y",
        "ws://example.com/\x00",
    ],
)
def test_invalid_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_url_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        parse_url(b"ws://example.com/")  # type: ignore[arg-type]


def test_credentials_are_removed_from_the_url() -> None:
    parsed = parse_url("wss://alice:s%40cret@example.com:8443/feed")
    assert parsed.credentials == ("alice", "s@cret")
    assert "alice" not in parsed.url and "cret" not in parsed.url
    assert parsed.url == "wss://example.com:8443/feed"
    assert "cret" not in repr(parsed)
    request = build_request(parsed, make_key(), None).decode()
    assert f"Authorization: {basic_auth('alice', 's@cret')}\r\n" in request
    assert basic_auth("alice", "s@cret") == "Basic " + base64.b64encode(b"alice:s@cret").decode()


def test_invalid_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_url("ws://bob:hunter2@example.com:notaport/")
    assert "hunter2" not in str(info.value)


def test_idna_host_header() -> None:
    assert parse_url("ws://bücher.example/").host_header == "xn--bcher-kva.example"


# -- keys ----------------------------------------------------------------------------


def test_rfc_accept_example() -> None:
    # RFC 6455 section 1.3.
    assert accept_for(b"dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_make_key() -> None:
    keys = [make_key() for _ in range(100)]
    assert len(set(keys)) == 100
    for key in keys:
        assert isinstance(key, bytes)
        assert len(base64.b64decode(key, validate=True)) == 16


# -- the request -----------------------------------------------------------------------


def test_build_request_exact() -> None:
    url = parse_url("ws://example.com:8000/chat?room=1")
    request = build_request(
        url, b"dGhlIHNhbXBsZSBub25jZQ==", "agent/1", ["chat", "superchat"],
        "permessage-deflate", [("Origin", "http://example.com")],
    )
    assert request == (
        b"GET /chat?room=1 HTTP/1.1\r\n"
        b"Host: example.com:8000\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
        b"User-Agent: agent/1\r\n"
        b"Origin: http://example.com\r\n"
        b"\r\n"
    )


def test_custom_user_agent_header_replaces_the_agent() -> None:
    request = build_request(parse_url("ws://h/"), make_key(), "default/1",
                            headers=[("User-Agent", "mine/2")]).decode()
    assert request.count("User-Agent") == 1
    assert "User-Agent: mine/2\r\n" in request


def test_custom_authorization_replaces_url_credentials() -> None:
    request = build_request(parse_url("ws://u:p@h/"), make_key(), None,
                            headers=[("Authorization", "Bearer t")]).decode()
    assert request.count("Authorization") == 1
    assert "Authorization: Bearer t\r\n" in request


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "line\nbreak", "cr\r", "nul\x00"])
def test_check_header_refuses_control_characters(value: str) -> None:
    with pytest.raises(ValueError):
        check_header("X-Test", value)


@pytest.mark.parametrize("name", ["", "X Test", "X:Test", "X\r\nTest", "Ünïcode", "a(b)"])
def test_check_header_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        check_header(name, "v")


@pytest.mark.parametrize(
    "name",
    ["Host", "upgrade", "Connection", "Sec-WebSocket-Key", "sec-websocket-version",
     "Sec-WebSocket-Extensions", "Content-Length", "Transfer-Encoding"],
)
def test_check_header_refuses_headers_lomond_sets(name: str) -> None:
    with pytest.raises(ValueError):
        check_header(name, "x")


def test_check_header_accepts_bytes_and_latin1() -> None:
    assert check_header(b"X-Bytes", b"value") == ("X-Bytes", "value")
    assert check_header("X-Latin", "caf\xe9") == ("X-Latin", "caf\xe9")
    with pytest.raises(ValueError):
        check_header("X-Snowman", "\u2603")
    with pytest.raises(TypeError):
        check_header("X-Int", 5)  # type: ignore[arg-type]


def test_check_protocols() -> None:
    assert check_protocols(["chat", "v2.json"]) == ["chat", "v2.json"]
    with pytest.raises(TypeError):
        check_protocols("chat")
    with pytest.raises(ValueError):
        check_protocols(["has space"])
    with pytest.raises(ValueError):
        check_protocols(["a,b"])
    with pytest.raises(ValueError):
        check_protocols([""])


# -- the response check ----------------------------------------------------------------

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def response(
    status: str = "101 Switching Protocols", headers: Optional[List[str]] = None
) -> Response:
    if headers is None:
        headers = ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"]
    return Response(("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode())


def test_check_response_ok() -> None:
    assert check_response(response(), KEY, []) is None


def test_check_response_selects_protocol() -> None:
    resp = response(headers=["Upgrade: websocket", "Connection: Upgrade",
                             f"Sec-WebSocket-Accept: {ACCEPT}", "Sec-WebSocket-Protocol: b"])
    assert check_response(resp, KEY, ["a", "b"]) == "b"
    with pytest.raises(HandshakeError, match="not offered"):
        check_response(resp, KEY, ["a"])
    with pytest.raises(HandshakeError):
        check_response(resp, KEY, [])


@pytest.mark.parametrize(
    ("status", "headers", "match"),
    [
        ("403 Forbidden", None, "403"),
        ("301 Moved", None, "301"),
        ("101 Switching Protocols", ["Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"],
         "Upgrade"),
        ("101 Switching Protocols", ["Upgrade: websocket", f"Sec-WebSocket-Accept: {ACCEPT}"],
         "Connection"),
        ("101 Switching Protocols", ["Upgrade: websocket", "Connection: Upgrade"], "Accept"),
        ("101 Switching Protocols", ["Upgrade: websocket", "Connection: Upgrade",
                                     "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA="],
         "Accept"),
    ],
)
def test_check_response_rejects(status: str, headers: Optional[List[str]], match: str) -> None:
    with pytest.raises(HandshakeError, match=match):
        check_response(response(status, headers), KEY, [])


def test_accept_for_another_key_is_rejected() -> None:
    resp = response(headers=["Upgrade: websocket", "Connection: Upgrade",
                             f"Sec-WebSocket-Accept: {accept_for(make_key())}"])
    with pytest.raises(HandshakeError):
        check_response(resp, KEY, [])


def test_bracket_host_only_brackets_ipv6_literals() -> None:
    from lomond.handshake import bracket_host

    assert bracket_host("::1") == "[::1]"
    assert bracket_host("fe80::1%eth0") == "[fe80::1%eth0]"
    assert bracket_host("127.0.0.1") == "127.0.0.1"
    assert bracket_host("example.com") == "example.com"


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x00b"])
def test_check_text_refuses_cr_lf_nul(bad: str) -> None:
    from lomond.handshake import check_text

    with pytest.raises(ValueError, match="the thing must not contain CR, LF or NUL"):
        check_text("the thing", bad)
    check_text("the thing", "fine\ttext")


# -- the server's side: the request check and the answers ---------------------------------


def request(*headers: str, line: str = "GET /chat HTTP/1.1") -> Request:
    return Request(("\r\n".join([line, *headers]) + "\r\n\r\n").encode())


UPGRADE = ["Host: example.com", "Upgrade: websocket", "Connection: Upgrade",
           f"Sec-WebSocket-Key: {KEY.decode()}", "Sec-WebSocket-Version: 13"]


def test_check_request_returns_the_key() -> None:
    assert check_request(request(*UPGRADE)) == KEY
    # Tokens are case-insensitive and may sit in a list; later HTTP versions do.
    assert check_request(request(
        "host: example.com", "upgrade: WebSocket", "connection: keep-alive, UPGRADE",
        f"sec-websocket-key:  {KEY.decode()} ", "sec-websocket-version: 13",
        line="GET / HTTP/1.2",
    )) == KEY


def test_check_request_statuses() -> None:
    # Section 4.4: another version is answered 426, with the version spoken.
    with pytest.raises(InvalidRequest) as info:
        check_request(request(*UPGRADE[:4], "Sec-WebSocket-Version: 8"))
    assert info.value.status == 426
    assert info.value.headers == (("Sec-WebSocket-Version", "13"),)
    # Everything else is 400 Bad Request; test_protocol goes through each check.
    with pytest.raises(InvalidRequest) as info:
        check_request(request(*UPGRADE, line="POST /chat HTTP/1.1"))
    assert (info.value.status, info.value.headers) == (400, ())
    assert isinstance(info.value, HandshakeError)


def test_build_response_is_the_rfc_example() -> None:
    """RFC 6455 section 1.3's answer, then the chosen subprotocol, extension and extras."""
    assert build_response(KEY) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    full = build_response(KEY, "chat", "permessage-deflate", [("X-Served-By", "test")])
    assert full.endswith(
        b"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
        b"X-Served-By: test\r\n\r\n"
    )
    # A client reads it back as a valid answer.
    assert check_response(Response(full), KEY, ["chat"]) == "chat"


@pytest.mark.parametrize(
    ("name", "value"),
    [("Sec-WebSocket-Accept", "x"), ("connection", "close"), ("Upgrade", "h2c"),
     ("Sec-WebSocket-Protocol", "x"), ("X-Bad", "a\r\nInjected: 1"), ("bad name", "x")],
)
def test_build_response_refuses_headers_it_writes_and_bad_ones(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        build_response(KEY, headers=[(name, value)])


def test_build_rejection() -> None:
    assert build_rejection(403, "go away", [("X-Why", "test")]) == (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 8\r\nConnection: close\r\nX-Why: test\r\n\r\ngo away\n"
    )
    # The version header of a 426 is allowed in a rejection (it is not an upgrade).
    assert b"Sec-WebSocket-Version: 13\r\n" in build_rejection(
        426, "", [("Sec-WebSocket-Version", "13")])
    assert build_rejection(302, headers=[("Location", "/elsewhere")]).startswith(
        b"HTTP/1.1 302 Found\r\n")
    assert build_rejection(599).startswith(b"HTTP/1.1 599 Error\r\n")
    assert build_rejection(404).endswith(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    # The body is UTF-8, its length counted in bytes.
    assert build_rejection(400, "caf\u00e9").endswith(b"Content-Length: 6\r\n"
                                                      b"Connection: close\r\n\r\ncaf\xc3\xa9\n")


@pytest.mark.parametrize("status", [101, 200, 299, 600, True, "403"])
def test_build_rejection_needs_an_error_or_redirect_status(status: object) -> None:
    with pytest.raises(ValueError):
        build_rejection(status)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Content-Length", "Connection", "content-type"])
def test_build_rejection_refuses_headers_it_writes(name: str) -> None:
    with pytest.raises(ValueError):
        build_rejection(400, headers=[(name, "1")])
