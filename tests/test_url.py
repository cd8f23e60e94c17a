"""``URL``: a str (as Lomond 0.3's ``websocket.url`` was) carrying the parsed parts."""

from __future__ import annotations

import copy
import pickle

import pytest

from lomond import WebSocket
from lomond.handshake import URL, parse_url


def test_url_is_the_string_without_credentials() -> None:
    url = parse_url("wss://alice:s%40cret@example.com:8443/feed?x=1")
    assert isinstance(url, URL)
    assert isinstance(url, str)
    assert url == "wss://example.com:8443/feed?x=1"
    assert "wss://example.com:8443/feed?x=1" == url
    assert hash(url) == hash("wss://example.com:8443/feed?x=1")
    assert {url: 1}["wss://example.com:8443/feed?x=1"] == 1
    assert url.startswith("wss")
    assert url + "#" == "wss://example.com:8443/feed?x=1#"
    percent = "%s %r" % (url, url)  # noqa: UP031 - 0.3-era code formats with %
    for shown in (str(url), repr(url), f"{url}", percent, url.url):
        assert "alice" not in shown and "cret" not in shown
    assert repr(url) == repr("wss://example.com:8443/feed?x=1")


def test_plain_str_views_are_plain() -> None:
    url = parse_url("ws://example.com/")
    assert type(url.url) is str
    assert type(str(url)) is str
    assert url.url == url


@pytest.mark.parametrize(
    ("text", "scheme", "secure", "host", "port", "resource", "host_header"),
    [
        ("ws://example.com/", "ws", False, "example.com", 80, "/", "example.com"),
        ("WSS://Example.com", "wss", True, "example.com", 443, "/", "example.com"),
        ("wss://[::1]:9443/a?b", "wss", True, "::1", 9443, "/a?b", "[::1]:9443"),
        ("ws://h:81/x", "ws", False, "h", 81, "/x", "h:81"),
        # http(s):// as ws(s):// (issue 20): as browsers do, and Lomond 0.3.4 accepted them.
        ("http://example.com/", "ws", False, "example.com", 80, "/", "example.com"),
        ("HTTPS://example.com:8443/a", "wss", True, "example.com", 8443, "/a",
         "example.com:8443"),
    ],
)
def test_parts(
    text: str, scheme: str, secure: bool, host: str, port: int, resource: str, host_header: str
) -> None:
    url = parse_url(text)
    assert (url.scheme, url.secure, url.host, url.port, url.resource, url.host_header) == (
        scheme, secure, host, port, resource, host_header)
    assert url.credentials is None


def test_credentials_are_kept_apart() -> None:
    url = parse_url("ws://bob:pw%3Ax@h/")
    assert url.credentials == ("bob", "pw:x")
    assert url == "ws://h/"
    # Equality is the string's, credentials aside.
    assert url == parse_url("ws://h/")


def test_immutable() -> None:
    url = parse_url("ws://example.com/")
    for name in ("host", "port", "scheme", "secure", "resource", "credentials", "other"):
        with pytest.raises(AttributeError):
            setattr(url, name, "x")
        with pytest.raises(AttributeError):
            delattr(url, name)
    assert not hasattr(url, "__dict__")
    assert url.host == "example.com"


def test_copy_and_pickle_keep_the_parts() -> None:
    url = parse_url("wss://u:p@example.com:8443/a")
    for clone in (copy.copy(url), copy.deepcopy(url), pickle.loads(pickle.dumps(url))):
        assert type(clone) is URL
        assert clone == url
        assert (clone.scheme, clone.host, clone.port, clone.resource, clone.credentials) == (
            "wss", "example.com", 8443, "/a", ("u", "p"))


def test_websocket_url_is_a_url() -> None:
    websocket = WebSocket("wss://user:pw@example.com/feed", proxies={})
    assert websocket.url == "wss://example.com/feed"
    assert websocket.url.startswith("wss")
    assert websocket.url.scheme == "wss"
    assert websocket.url.url == "wss://example.com/feed"
    assert "pw" not in repr(websocket)


def test_http_schemes_are_taken_as_websocket_schemes() -> None:
    # The URL says what is used: ws(s)://, never a plain-text https.
    assert parse_url("https://u:p@example.com/feed?x=1") == "wss://example.com/feed?x=1"
    assert parse_url("http://example.com") == "ws://example.com"
    websocket = WebSocket("https://example.com/feed", proxies={})
    assert websocket.is_secure and websocket.url == "wss://example.com/feed"


@pytest.mark.parametrize("text", ["ftp://example.com/", "example.com:80", "wsx://h/", "//h/"])
def test_other_schemes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must start with ws:// or wss://"):
        parse_url(text)
