"""HTTP CONNECT proxies: selection, tunnelling ws:// and wss://, credentials, failures.

Integration tests go through a real proxy (proxy.py in a subprocess, with and
without Basic auth) to real ``websockets`` servers on loopback; edge cases of
the CONNECT exchange use a scripted peer playing the proxy.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from typing import Any, Callable, Iterator, List, Optional
from urllib.parse import quote

import attrs
import pytest
from core_helpers import exchange, first, names
from peers.proxy import ProxyServer
from peers.raw_server import RawConnection
from peers.relay import pump

from lomond import WebSocket, events
from lomond.errors import ConnectError
from lomond.handshake import parse_url
from lomond.proxy import (
    Proxy,
    connect_request,
    connect_status,
    parse_proxy,
    select_proxy,
)

# Unusual credentials: every character that must be percent-encoded in a
# URL's userinfo, and a non-ASCII one. Distinctive enough to grep for.
SPECIAL_USER = "px-user_7f3a"
SPECIAL_PASSWORD = "p@ss:w/rd?#%ü 9z"


# -- helpers ---------------------------------------------------------------------------


def local_address(websocket: WebSocket) -> Any:
    """The client's local (host, port) of the current connection (call on Ready)."""
    session = websocket.session
    assert session is not None and session.socket is not None
    return session.socket.getsockname()[:2]


def assert_echoed(seen: List[events.Event]) -> None:
    assert names(seen) == ["connecting", "connected", "ready", "text", "closed", "disconnected"]
    assert first(seen, events.Text).text == "hello"


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean proxy environment (conftest's ``no_proxy_env`` removed every
    ``*_proxy`` variable) and no CGI ``REQUEST_METHOD``."""
    monkeypatch.delenv("REQUEST_METHOD", raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def special_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    """proxy.py requiring SPECIAL_USER / SPECIAL_PASSWORD."""
    proxy = ProxyServer(
        auth=(SPECIAL_USER, SPECIAL_PASSWORD), workdir=tmp_path_factory.mktemp("special-proxy")
    )
    proxy.start()
    yield proxy
    proxy.stop()


def special_url(proxy: ProxyServer, password: str = SPECIAL_PASSWORD) -> str:
    return (
        f"http://{quote(SPECIAL_USER, safe='')}:{quote(password, safe='')}@127.0.0.1:{proxy.port}"
    )


# -- parsing and selection (no I/O) ----------------------------------------------------


def test_parse_proxy_percent_decodes_credentials() -> None:
    proxy = parse_proxy(
        f"http://{quote(SPECIAL_USER, safe='')}:{quote(SPECIAL_PASSWORD, safe='')}"
        "@proxy.example:3128"
    )
    assert (proxy.host, proxy.port) == ("proxy.example", 3128)
    assert proxy.credentials == (SPECIAL_USER, SPECIAL_PASSWORD)
    assert proxy.display_url == "http://proxy.example:3128"
    assert SPECIAL_PASSWORD not in repr(proxy) and SPECIAL_USER not in repr(proxy)
    assert str(proxy) == "http://proxy.example:3128"


@pytest.mark.parametrize(
    "url, host, port, credentials",
    [
        ("proxy.example:3128", "proxy.example", 3128, None),  # no scheme: http://
        ("http://proxy.example", "proxy.example", 80, None),  # the stdlib's default port
        ("HTTP://Proxy.Example:8080/", "proxy.example", 8080, None),
        ("http://[::1]:3128", "::1", 3128, None),
        ("http://user@proxy.example:1", "proxy.example", 1, ("user", "")),
        ("http://:pw@proxy.example:1", "proxy.example", 1, ("", "pw")),
    ],
)
def test_parse_proxy_forms(url: str, host: str, port: int, credentials: Any) -> None:
    proxy = parse_proxy(url)
    assert (proxy.host, proxy.port, proxy.credentials) == (host, port, credentials)


def test_display_url_brackets_ipv6() -> None:
    assert parse_proxy("http://u:p@[::1]:3128").display_url == "http://[::1]:3128"


@pytest.mark.parametrize(
    "url, message",
    [
        ("https://proxy.example:443", "'https'"),
        ("socks5://proxy.example:1080", "'socks5'"),
        ("http://:3128", "no host"),
        ("http://proxy.example:0", "port 0"),
        ("http://proxy.example:99999", "port"),
        ("http://proxy.example:3128\r\nX: y", "CR, LF"),
    ],
)
def test_parse_proxy_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_proxy(url)


@pytest.mark.parametrize(
    "url",
    [
        # An unencoded "/" in the password makes the rest of it the "port":
        # urllib's own error would quote it.
        "http://user:xq/zz9secret@proxy.example:8080",
        "http://user:xqzz9secret@proxy.example:notaport",
        "xqzz9secret://user:pw@proxy.example",
        "http://user:xqzz9secret\n@proxy.example",
    ],
)
def test_parse_proxy_errors_never_quote_the_url(url: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_proxy(url)
    for fragment in ("xq", "zz9", "secret", "user", "notaport"):
        assert fragment not in str(info.value)


def test_explicit_proxy_url_is_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="only http:// proxies"):
        WebSocket("ws://example.com/", proxies={"http": "https://proxy.example:3128"})


def test_explicit_proxies_choose_by_scheme() -> None:
    proxies = {"http": "http://plain.example:1", "https": "http://secure.example:2"}
    assert select_proxy(parse_url("ws://a.example/"), proxies) == Proxy("plain.example", 1)
    assert select_proxy(parse_url("wss://a.example/"), proxies) == Proxy("secure.example", 2)
    assert select_proxy(parse_url("wss://a.example/"), {"http": "http://p:1"}) is None
    assert select_proxy(parse_url("ws://a.example/"), {"http": ""}) is None
    assert select_proxy(parse_url("ws://a.example/"), {}) is None


def test_explicit_proxies_honour_a_no_entry() -> None:
    proxies = {"http": "http://p.example:1", "no": "internal.example, 10.0.0.1:8080"}
    assert select_proxy(parse_url("ws://svc.internal.example/"), proxies) is None
    assert select_proxy(parse_url("ws://10.0.0.1:8080/"), proxies) is None
    assert select_proxy(parse_url("ws://10.0.0.1:8081/"), proxies) == Proxy("p.example", 1)
    assert select_proxy(parse_url("ws://other.example/"), proxies) == Proxy("p.example", 1)


def test_empty_proxies_disable_environment_proxies(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://env.example:1")
    assert WebSocket("ws://a.example/", proxies={}).proxy is None
    assert WebSocket("ws://a.example/").proxy == Proxy("env.example", 1)


def test_environment_scheme_keys(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://plain.example:1")
    assert select_proxy(parse_url("ws://a.example/"), None) == Proxy("plain.example", 1)
    assert select_proxy(parse_url("wss://a.example/"), None) is None
    proxy_env.setenv("HTTPS_PROXY", "secure.example:2")
    assert select_proxy(parse_url("wss://a.example/"), None) == Proxy("secure.example", 2)


def test_environment_lower_case_wins(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTPS_PROXY", "http://upper.example:1")
    proxy_env.setenv("https_proxy", "http://lower.example:2")
    assert select_proxy(parse_url("wss://a.example/"), None) == Proxy("lower.example", 2)


def test_environment_http_proxy_ignored_under_cgi(proxy_env: pytest.MonkeyPatch) -> None:
    # The standard library's httpoxy rule (CVE-2016-1000110): under CGI,
    # HTTP_PROXY may come from a client's "Proxy:" header.
    proxy_env.setenv("REQUEST_METHOD", "GET")
    proxy_env.setenv("HTTP_PROXY", "http://attacker.example:1")
    assert select_proxy(parse_url("ws://a.example/"), None) is None


@pytest.mark.parametrize(
    "no_proxy, url, bypassed",
    [
        ("*", "ws://anything.example/", True),
        ("example.com", "ws://example.com/", True),
        ("example.com", "ws://a.b.example.com/", True),  # suffix
        (".example.com", "ws://a.example.com/", True),  # leading dot: same
        (".example.com", "ws://example.com/", True),
        ("example.com", "ws://badexample.com/", False),  # not a dot boundary
        ("example.com", "ws://example.com.evil.example/", False),
        ("EXAMPLE.com", "ws://Example.COM/", True),  # case-insensitive
        ("other.example, example.com ", "ws://example.com/", True),  # list, spaces
        ("example.com:8080", "ws://example.com:8080/", True),  # host:port
        ("example.com:8080", "ws://example.com:9090/", False),
        ("example.com:8080", "ws://example.com/", False),
        ("example.com:80", "ws://example.com/", True),  # the default port is the port
        ("127.0.0.1", "ws://127.0.0.1:9000/", True),
        ("127.0.0.1:9000", "ws://127.0.0.1:9000/", True),
        ("127.0.0.1:9000", "ws://127.0.0.1:9001/", False),
        ("::1", "ws://[::1]:9000/", True),  # IPv6 without brackets
        ("[::1]", "ws://[::1]:9000/", True),
        ("[::1]:9000", "ws://[::1]:9000/", True),
        ("[::1]:9000", "ws://[::1]:9001/", False),
        ("localhost", "ws://[::1]:9000/", False),  # names are not resolved
        ("", "ws://example.com/", False),
    ],
)
def test_no_proxy_rules(
    proxy_env: pytest.MonkeyPatch, no_proxy: str, url: str, bypassed: bool
) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://proxy.example:3128")
    proxy_env.setenv("NO_PROXY", no_proxy)
    expected = None if bypassed else Proxy("proxy.example", 3128)
    assert select_proxy(parse_url(url), None) == expected


def test_lower_case_no_proxy(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    proxy_env.setenv("no_proxy", "internal.example")
    assert select_proxy(parse_url("wss://api.internal.example/"), None) is None


def test_unusable_environment_proxy_is_a_connect_error(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTPS_PROXY", "http://user:xq/zz9secret@proxy.example:8080")
    with pytest.raises(ConnectError) as info:
        select_proxy(parse_url("wss://a.example/"), None)
    assert "HTTPS_PROXY" in str(info.value)
    for fragment in ("xq", "zz9", "secret", "user"):
        assert fragment not in str(info.value)


def test_connect_request_bytes() -> None:
    proxy = Proxy("p.example", 1, (SPECIAL_USER, SPECIAL_PASSWORD))
    request = connect_request(proxy, "example.com", 443, "agent/1")
    token = base64.b64encode(f"{SPECIAL_USER}:{SPECIAL_PASSWORD}".encode()).decode()
    assert request == (
        b"CONNECT example.com:443 HTTP/1.1\r\n"
        b"Host: example.com:443\r\n"
        b"User-Agent: agent/1\r\n"
        b"Proxy-Authorization: Basic " + token.encode() + b"\r\n\r\n"
    )
    assert connect_request(Proxy("p", 1), "::1", 8080, None) == (
        b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"
    )
    # Internationalized names go to the proxy in their IDNA (ASCII) form.
    assert connect_request(Proxy("p", 1), "b\u00fccher.example", 80, None).startswith(
        b"CONNECT xn--bcher-kva.example:80 HTTP/1.1\r\n"
    )


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"HTTP/1.1 200 Connection established", 200),
        (b"HTTP/1.0 200 OK\r\nProxy-Agent: x", 200),
        (b"HTTP/1.1 204 No Content", 204),
        (b"HTTP/1.1 100 Continue", 100),  # interim
        (b"HTTP/1.1 407 Proxy Authentication Required", "407 Proxy Authentication Required"),
        (b"HTTP/1.1 403 Forbidden", "403 Forbidden"),
        (b"HTTP/1.1 502", "502"),
        (b"HTTP/1.1 101 Switching Protocols", "101"),
        (b"HTTP/1.1 301 Moved", "301 Moved"),
        (b"SSH-2.0-OpenSSH_9.6", "invalid response"),
        (b"HTTP/1.1 2000 OK", "invalid response"),
    ],
)
def test_connect_status(head: bytes, expected: Any) -> None:
    proxy = Proxy("p.example", 1, ("user", "hunter2"))
    if isinstance(expected, int):
        assert connect_status(proxy, "h.example", 1, head) == expected
        return
    with pytest.raises(ConnectError) as info:
        connect_status(proxy, "h.example", 1, head)
    assert expected in str(info.value)
    assert "http://p.example:1" in str(info.value)
    assert "hunter2" not in str(info.value) and "user" not in str(info.value)


# -- through a real proxy --------------------------------------------------------------


def test_ws_through_proxy(ws_server: Any, http_proxy: ProxyServer) -> None:
    mark = http_proxy.mark()
    websocket = WebSocket(ws_server.url_for("/echo"), proxies={"http": http_proxy.url})
    client: List[Any] = []
    seen = exchange(
        websocket, on_ready=lambda ws: (client.append(local_address(ws)), ws.send_text("hello"))
    )
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy == http_proxy.url
    tunnel = http_proxy.wait_for_connect(port=ws_server.port, since=mark)
    assert (tunnel.method, tunnel.host) == ("CONNECT", "127.0.0.1")
    assert not tunnel.authorized
    # The server's peer is the proxy's upstream socket, not ours.
    assert tuple(ws_server.last.remote_address[:2]) != tuple(client[0])


def test_wss_through_proxy_tls_inside_the_tunnel(
    ws_server_factory: Any, tls: Any, http_proxy: ProxyServer
) -> None:
    server_names: List[Optional[str]] = []
    context = tls.server_context()
    context.sni_callback = lambda sslobj, name, ctx: server_names.append(name)
    server = ws_server_factory(ssl_context=context)
    mark = http_proxy.mark()
    websocket = WebSocket(
        server.url_for("/echo"),  # wss://localhost:PORT
        proxies={"https": http_proxy.url, "http": "http://127.0.0.1:1"},
        ssl_context=tls.client_context(),
    )
    seen = exchange(websocket)
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy == http_proxy.url
    tunnel = http_proxy.wait_for_connect(port=server.port, since=mark)
    assert tunnel.host == "localhost"  # the proxy resolves the target name
    assert server_names == ["localhost"]  # SNI names the target, not the proxy


def test_wss_through_proxy_verifies_the_target_host(
    ws_server_factory: Any, tls: Any, http_proxy: ProxyServer
) -> None:
    server = ws_server_factory(ssl_context=tls.server_context("wrong_host"))
    websocket = WebSocket(
        server.url_for("/echo"), proxies={"https": http_proxy.url}, ssl_context=tls.client_context()
    )
    seen = exchange(websocket)
    assert names(seen) == ["connecting", "connect_fail"]
    reason = first(seen, events.ConnectFail).reason
    assert "certificate verify failed" in reason and "localhost" in reason
    assert server.connections == []  # no upgrade request was ever sent


def test_wss_through_proxy_untrusted_certificate(
    ws_server_factory: Any, tls: Any, http_proxy: ProxyServer
) -> None:
    server = ws_server_factory(ssl_context=tls.server_context("untrusted"))
    websocket = WebSocket(
        server.url_for("/echo"), proxies={"https": http_proxy.url}, ssl_context=tls.client_context()
    )
    seen = exchange(websocket)
    assert names(seen) == ["connecting", "connect_fail"]
    assert "certificate verify failed" in first(seen, events.ConnectFail).reason


def test_ipv6_target_through_proxy(ws_server_factory: Any, http_proxy: ProxyServer) -> None:
    server = ws_server_factory(host="::1")
    mark = http_proxy.mark()
    websocket = WebSocket(server.url_for("/echo"), proxies={"http": http_proxy.url})
    seen = exchange(websocket)
    assert_echoed(seen)
    tunnel = http_proxy.wait_for_connect(port=server.port, since=mark)
    assert tunnel.host.strip("[]") == "::1"
    assert server.last.request_headers["Host"] == f"[::1]:{server.port}"


def test_ipv6_target_connect_line(scripted_server: Any, ws_server_factory: Any) -> None:
    """The CONNECT target is the bracketed IPv6 authority (RFC 7230 section 5.3.3)."""
    server = ws_server_factory(host="::1")
    proxy = scripted_server(tunnel_to(("::1", server.port)))
    websocket = WebSocket(
        server.url_for("/echo"), proxies={"http": f"http://127.0.0.1:{proxy.port}"}
    )
    assert_echoed(exchange(websocket))
    request = proxy.result()
    assert (request.method, request.path) == ("CONNECT", f"[::1]:{server.port}")
    assert request.headers["Host"] == f"[::1]:{server.port}"


def test_proxy_on_ipv6(scripted_server: Any, ws_server: Any) -> None:
    proxy = scripted_server(tunnel_to(("127.0.0.1", ws_server.port)), host="::1")
    proxy_url = f"http://[::1]:{proxy.port}"
    seen = exchange(WebSocket(ws_server.url_for("/echo"), proxies={"http": proxy_url}))
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy == proxy_url
    assert proxy.result().path == f"127.0.0.1:{ws_server.port}"


def test_proxy_auth_ws_and_wss(
    ws_server: Any, wss_server: Any, tls: Any, http_proxy_auth: ProxyServer
) -> None:
    for server, key, context in (
        (ws_server, "http", None),
        (wss_server, "https", tls.client_context()),
    ):
        mark = http_proxy_auth.mark()
        websocket = WebSocket(
            server.url_for("/echo"),
            proxies={key: http_proxy_auth.url_with_auth},
            ssl_context=context,
        )
        seen = exchange(websocket)
        assert_echoed(seen)
        assert first(seen, events.Connected).proxy == http_proxy_auth.url  # no credentials
        assert http_proxy_auth.wait_for_connect(port=server.port, since=mark).authorized


def test_percent_encoded_credentials(ws_server: Any, special_proxy: ProxyServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"), proxies={"http": special_url(special_proxy)})
    assert_echoed(exchange(websocket))


@pytest.mark.parametrize("credentials", ["none", "wrong"])
def test_proxy_auth_refused_is_connect_fail_407(
    ws_server: Any, special_proxy: ProxyServer, credentials: str
) -> None:
    if credentials == "none":
        proxy_url = f"http://127.0.0.1:{special_proxy.port}"
    else:
        proxy_url = special_url(special_proxy, password="not-" + SPECIAL_PASSWORD)
    websocket = WebSocket(ws_server.url_for("/echo"), proxies={"http": proxy_url})
    # The 407 ends the attempt at once: not after the 30 s connect timeout
    # (the watchdog gives up after 8 s).
    seen = exchange(websocket, timeout=8, connect_timeout=30)
    assert names(seen) == ["connecting", "connect_fail"]
    reason = first(seen, events.ConnectFail).reason
    # proxy.py sends a body with its 407: the status must still be reported.
    assert "407 Proxy Authentication Required" in reason
    assert f"http://127.0.0.1:{special_proxy.port}" in reason
    assert ws_server.connections == []


def test_proxy_refusal_other_status(http_proxy: ProxyServer) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    websocket = WebSocket(f"ws://127.0.0.1:{closed_port}/", proxies={"http": http_proxy.url})
    seen = exchange(websocket)
    assert names(seen) == ["connecting", "connect_fail"]
    reason = first(seen, events.ConnectFail).reason
    assert f"refused CONNECT to 127.0.0.1:{closed_port}: 502" in reason


def test_proxy_not_listening() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    websocket = WebSocket(
        "ws://example.invalid/", proxies={"http": f"http://u:hunter2@127.0.0.1:{closed_port}"}
    )
    seen = exchange(websocket)
    assert names(seen) == ["connecting", "connect_fail"]
    reason = first(seen, events.ConnectFail).reason
    assert f"could not connect to the proxy http://127.0.0.1:{closed_port}" in reason
    assert "hunter2" not in reason


# -- the environment, end to end -------------------------------------------------------


def test_environment_proxy_used(
    proxy_env: pytest.MonkeyPatch, ws_server: Any, http_proxy: ProxyServer
) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # upper case loses to lower case
    proxy_env.setenv("http_proxy", http_proxy.url)
    mark = http_proxy.mark()
    seen = exchange(WebSocket(ws_server.url_for("/echo")))
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy == http_proxy.url
    http_proxy.wait_for_connect(port=ws_server.port, since=mark)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.1:{port}", "localhost,127.0.0.1", "*"])
def test_environment_no_proxy_goes_direct(
    proxy_env: pytest.MonkeyPatch, ws_server: Any, http_proxy: ProxyServer, no_proxy: str
) -> None:
    proxy_env.setenv("HTTP_PROXY", http_proxy.url)
    proxy_env.setenv("NO_PROXY", no_proxy.format(port=ws_server.port))
    mark = http_proxy.mark()
    seen = exchange(WebSocket(ws_server.url_for("/echo")))
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy is None
    assert http_proxy.connects()[mark:] == []


def test_environment_no_proxy_other_port_still_proxied(
    proxy_env: pytest.MonkeyPatch, ws_server: Any, http_proxy: ProxyServer
) -> None:
    proxy_env.setenv("HTTP_PROXY", http_proxy.url)
    proxy_env.setenv("NO_PROXY", f"127.0.0.1:{ws_server.port + 1},localhost")
    seen = exchange(WebSocket(ws_server.url_for("/echo")))
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy == http_proxy.url


def test_environment_https_proxy_for_wss_only(
    proxy_env: pytest.MonkeyPatch, wss_server: Any, tls: Any, http_proxy: ProxyServer
) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # not for wss://
    websocket = WebSocket(wss_server.url_for("/echo"), ssl_context=tls.client_context())
    seen = exchange(websocket)
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy is None
    proxy_env.setenv("HTTPS_PROXY", http_proxy.url)
    seen = exchange(websocket)
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy == http_proxy.url


def test_environment_is_read_for_each_connection(
    proxy_env: pytest.MonkeyPatch, ws_server: Any, http_proxy: ProxyServer
) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    assert first(exchange(websocket), events.Connected).proxy is None
    proxy_env.setenv("HTTP_PROXY", http_proxy.url)
    assert first(exchange(websocket), events.Connected).proxy == http_proxy.url


def test_empty_proxies_ignore_the_environment(
    proxy_env: pytest.MonkeyPatch, ws_server: Any
) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    seen = exchange(WebSocket(ws_server.url_for("/echo"), proxies={}))
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy is None


def test_unusable_environment_proxy_is_connect_fail(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTPS_PROXY", "socks5://user:zz9secret@127.0.0.1:1080")
    websocket = WebSocket("wss://example.invalid/")
    seen = exchange(websocket)  # an event, not an exception out of the loop
    assert names(seen) == ["connecting", "connect_fail"]
    reason = first(seen, events.ConnectFail).reason
    assert "HTTPS_PROXY" in reason and "'socks5'" in reason
    assert "zz9secret" not in reason and "user" not in reason


def test_pre_connected_socket_bypasses_environment_proxy(
    proxy_env: pytest.MonkeyPatch, ws_server: Any, http_proxy: ProxyServer
) -> None:
    proxy_env.setenv("HTTP_PROXY", http_proxy.url)
    mark = http_proxy.mark()
    sock = socket.create_connection(("127.0.0.1", ws_server.port))
    seen = exchange(WebSocket(ws_server.url_for("/echo"), sock=sock))
    assert_echoed(seen)
    assert first(seen, events.Connected).proxy is None
    assert http_proxy.connects()[mark:] == []


# -- credentials never leak ------------------------------------------------------------


def _strings(event: events.Event) -> List[str]:
    values = [repr(event)]
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        values.append(str(value))
        if hasattr(value, "header_data"):
            values.append(value.header_data.decode("latin-1"))
    return values


def test_credentials_never_leak(
    caplog: pytest.LogCaptureFixture,
    proxy_env: pytest.MonkeyPatch,
    ws_server: Any,
    special_proxy: ProxyServer,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [
        SPECIAL_USER,
        SPECIAL_PASSWORD,
        quote(SPECIAL_PASSWORD, safe=""),
        base64.b64encode(f"{SPECIAL_USER}:{SPECIAL_PASSWORD}".encode()).decode(),
        "zz9",
    ]
    shown: List[str] = []
    good = special_url(special_proxy)
    bad = special_url(special_proxy, password=SPECIAL_PASSWORD + "zz9")
    for proxy_url in (good, bad):
        websocket = WebSocket(ws_server.url_for("/echo"), proxies={"http": proxy_url})
        shown += [repr(websocket), str(websocket), repr(websocket.proxy), str(websocket.proxy)]
        for event in exchange(websocket):
            shown += _strings(event)
        shown.append(repr(websocket))
    # From the environment too, through persist-style repeated connects.
    proxy_env.setenv("HTTP_PROXY", bad)
    websocket = WebSocket(ws_server.url_for("/echo"))
    for event in exchange(websocket):
        shown += _strings(event)
    # Exceptions built from proxy errors.
    for broken in (
        f"http://{SPECIAL_USER}:zz9/{quote(SPECIAL_PASSWORD, safe='')}@127.0.0.1:1",
        f"https://{SPECIAL_USER}:{quote(SPECIAL_PASSWORD, safe='')}@127.0.0.1:1",
    ):
        with pytest.raises(ValueError) as value_error:
            WebSocket("ws://example.com/", proxies={"http": broken})
        shown += [str(value_error.value), repr(value_error.value)]
        proxy_env.setenv("HTTP_PROXY", broken)
        with pytest.raises(ConnectError) as connect_error:
            _ = WebSocket("ws://example.com/").proxy
        shown += [str(connect_error.value), repr(connect_error.value)]
    records = [record.getMessage() for record in caplog.records]
    assert records, "expected lomond to log at DEBUG"
    shown += records
    assert any("407" in text for text in shown)  # the refusals were seen...
    for text in shown:
        for secret in secrets:
            assert secret not in text, (secret, text)  # ...without the secrets


# -- the CONNECT exchange, scripted ----------------------------------------------------


def tunnel_to(
    target: Any, answer: bytes = b"HTTP/1.1 200 Connection established\r\n\r\n"
) -> Callable[[RawConnection], Any]:
    """A scripted proxy: read CONNECT, send ``answer``, then relay to ``target``."""

    def script(conn: RawConnection) -> Any:
        request = conn.read_request()
        conn.send_raw(answer)
        upstream = socket.create_connection(target, timeout=5)
        leftover = bytes(conn._buffer)
        conn._buffer.clear()
        if leftover:
            upstream.sendall(leftover)
        relay(conn.sock, upstream)
        return request

    return script


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    thread = threading.Thread(target=pump, args=(b, a), daemon=True)
    thread.start()
    pump(a, b)
    thread.join(10)
    b.close()


def test_interim_responses_are_skipped(scripted_server: Any, ws_server: Any) -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nProxy-Agent: scripted\r\nContent-Length: 0\r\n\r\n"
    )
    proxy = scripted_server(tunnel_to(("127.0.0.1", ws_server.port), answer))
    websocket = WebSocket(
        ws_server.url_for("/echo"), proxies={"http": f"http://u:pw@127.0.0.1:{proxy.port}"}
    )
    assert_echoed(exchange(websocket))
    request = proxy.result()
    assert request.raw.startswith(f"CONNECT 127.0.0.1:{ws_server.port} HTTP/1.1\r\n".encode())
    assert request.headers["Host"] == f"127.0.0.1:{ws_server.port}"
    assert request.headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"u:pw").decode()
    assert request.headers["User-Agent"] == websocket.agent


def test_answer_split_across_writes(scripted_server: Any, ws_server: Any) -> None:
    target = ("127.0.0.1", ws_server.port)

    def script(conn: RawConnection) -> Any:
        conn.read_request()
        conn.trickle(b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\n", delay=0.002)
        relay(conn.sock, socket.create_connection(target, timeout=5))

    proxy = scripted_server(script)
    assert_echoed(
        exchange(
            WebSocket(
                ws_server.url_for("/echo"), proxies={"http": f"http://127.0.0.1:{proxy.port}"}
            )
        )
    )


@pytest.mark.parametrize(
    "answer, reason",
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nForbidden", "403 Forbidden"),
        (b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n", "407"),
        (b"garbage\r\n\r\n", "invalid response"),
        (b"HTTP/1.1 200 OK\r\n", "closed the connection during CONNECT"),  # then EOF
        (b"", "closed the connection during CONNECT"),
    ],
)
def test_bad_answers(scripted_server: Any, answer: bytes, reason: str) -> None:
    def script(conn: RawConnection) -> None:
        conn.read_request()
        if answer:
            conn.send_raw(answer)
        conn.close()

    proxy = scripted_server(script)
    websocket = WebSocket(
        "ws://target.example/", proxies={"http": f"http://u:hunter2@127.0.0.1:{proxy.port}"}
    )
    seen = exchange(websocket)
    assert names(seen) == ["connecting", "connect_fail"]
    text = first(seen, events.ConnectFail).reason
    assert reason in text and "hunter2" not in text


def test_oversized_answer(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.read_request()
        conn.send_raw(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 70000 + b"\r\n\r\n")
        conn.close()

    proxy = scripted_server(script)
    seen = exchange(
        WebSocket("ws://target.example/", proxies={"http": f"http://127.0.0.1:{proxy.port}"})
    )
    assert "over 64 KiB" in first(seen, events.ConnectFail).reason


def test_silent_proxy_times_out(scripted_server: Any) -> None:
    proxy = scripted_server(mode="stall")
    websocket = WebSocket(
        "ws://target.example/", proxies={"http": f"http://127.0.0.1:{proxy.port}"}
    )
    # connect_timeout covers the CONNECT exchange (the handshake timeout is 30 s;
    # the watchdog gives up after 8 s).
    seen = exchange(websocket, timeout=8, connect_timeout=0.3, handshake_timeout=30)
    assert names(seen) == ["connecting", "connect_fail"]
    assert "timed out waiting for the proxy" in first(seen, events.ConnectFail).reason


def test_close_while_waiting_for_the_proxy(scripted_server: Any) -> None:
    proxy = scripted_server(mode="stall")
    websocket = WebSocket(
        "ws://target.example/", proxies={"http": f"http://127.0.0.1:{proxy.port}"}
    )
    proxy_seen = threading.Event()

    def close_soon() -> None:
        proxy.wait_for_connection()
        proxy_seen.set()
        time.sleep(0.1)
        websocket.close()

    threading.Thread(target=close_soon, daemon=True).start()
    # The close ends the 30 s wait (the watchdog gives up after 8 s).
    seen = exchange(websocket, timeout=8, connect_timeout=30)
    assert proxy_seen.is_set()
    assert names(seen) == ["connecting", "connect_fail"]
    assert first(seen, events.ConnectFail).reason == "closed before the connection was ready"
