"""Connection options: headers, subprotocols, user agent, TLS client certificates,
source address, socket options (TCP keepalive) and pre-connected sockets.

Each is checked end to end against a real server on loopback, and where the
effect is only visible on one side, on that side: the server's view of the
request and of the peer address, ``getsockopt`` on the client's socket.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from core_helpers import exchange, first, names
from websockets.sync.server import unix_serve

from lomond import WebSocket, events
from lomond.constants import USER_AGENT
from lomond.options import tcp_keepalive

LINUX = sys.platform.startswith("linux")


def client_socket(websocket: WebSocket) -> socket.socket:
    """The socket of the current connection (call while connected)."""
    session = websocket.session
    assert session is not None and session.socket is not None
    return session.socket


def request_headers(seen: List[events.Event]) -> Dict[str, str]:
    """The request headers as the /headers behaviour reported them (lower-case names)."""
    return {name.lower(): value for name, value in first(seen, events.Text).json.items()}


ECHO = ["connecting", "connected", "ready", "text", "closed", "disconnected"]


# -- headers, Origin, user agent -------------------------------------------------------


def test_custom_headers_and_origin(ws_server: Any) -> None:
    websocket = WebSocket(
        ws_server.url_for("/headers"),
        headers=[("Origin", "https://app.example"), ("X-Multi", "one"), ("X-Multi", "two")],
    )
    websocket.add_header("Authorization", "Bearer abc.def")
    websocket.add_header(b"X-Bytes", b"caf\xe9")  # latin-1 bytes, as in Lomond 0.3
    seen = exchange(websocket, on_ready=None)
    assert names(seen) == ECHO
    headers = request_headers(seen)
    assert headers["origin"] == "https://app.example"
    assert headers["x-multi"] == "one, two"  # both sent, in order
    assert headers["authorization"] == "Bearer abc.def"
    assert headers["x-bytes"] == "caf\u00e9"
    # The names keep their case on the wire.
    raw_names = [name for name, _ in ws_server.last.request_headers.raw_items()]
    assert "Origin" in raw_names and "X-Multi" in raw_names


def test_headers_as_mapping(ws_server: Any) -> None:
    websocket = WebSocket(ws_server.url_for("/headers"), headers={"Origin": "http://o.example"})
    headers = request_headers(exchange(websocket, on_ready=None))
    assert headers["origin"] == "http://o.example"


@pytest.mark.parametrize(
    "headers, message",
    [
        ({"X-Evil": "a\r\nInjected: yes"}, "CR, LF"),
        ({"X-Evil": "a\nInjected: yes"}, "CR, LF"),
        ({"Bad Name": "v"}, "invalid header name"),
        ({"Host": "other.example"}, "set by lomond"),
        ({"Sec-WebSocket-Key": "x"}, "set by lomond"),
        ({"X-Unicode": "\u2603"}, "ISO-8859-1"),
    ],
)
def test_bad_headers_refused(headers: Dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebSocket("ws://example.com/", headers=headers)


def test_default_user_agent(ws_server: Any) -> None:
    headers = request_headers(exchange(WebSocket(ws_server.url_for("/headers")), None))
    assert headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("lomond/")


def test_custom_user_agent(ws_server: Any) -> None:
    websocket = WebSocket(ws_server.url_for("/headers"), agent="my-app/2.1 (+https://my.example)")
    headers = request_headers(exchange(websocket, None))
    assert headers["user-agent"] == "my-app/2.1 (+https://my.example)"


def test_no_user_agent(ws_server: Any) -> None:
    websocket = WebSocket(ws_server.url_for("/headers"), agent="")
    headers = request_headers(exchange(websocket, None))
    assert "user-agent" not in headers


def test_user_agent_from_headers_wins(ws_server: Any) -> None:
    websocket = WebSocket(ws_server.url_for("/headers"), headers={"User-Agent": "from-headers/1"})
    headers = request_headers(exchange(websocket, None))
    assert headers["user-agent"] == "from-headers/1"  # sent once, not twice


def test_bad_user_agent_refused() -> None:
    with pytest.raises(ValueError):
        WebSocket("ws://example.com/", agent="x\r\nInjected: 1")


# -- subprotocols ----------------------------------------------------------------------


def test_subprotocol_chosen_by_the_server(ws_server_factory: Any) -> None:
    server = ws_server_factory(subprotocols=["v3.chat", "v2.chat"])
    websocket = WebSocket(server.url_for("/echo"), protocols=["v1.chat", "v2.chat", "v3.chat"])
    seen = exchange(websocket)
    assert names(seen) == ECHO
    # The server prefers v3 among those offered; Ready reports its choice.
    assert first(seen, events.Ready).protocol == "v3.chat"
    assert server.last.request_headers["Sec-WebSocket-Protocol"] == "v1.chat, v2.chat, v3.chat"
    assert server.last.subprotocol == "v3.chat"


def test_no_subprotocol_when_the_server_has_none(ws_server: Any) -> None:
    seen = exchange(WebSocket(ws_server.url_for("/echo"), protocols=["v1.chat"]))
    assert names(seen) == ECHO
    assert first(seen, events.Ready).protocol is None


def test_no_subprotocols_offered(ws_server: Any) -> None:
    seen = exchange(WebSocket(ws_server.url_for("/echo")))
    assert first(seen, events.Ready).protocol is None
    assert "Sec-WebSocket-Protocol" not in ws_server.last.request_headers


def test_no_common_subprotocol_is_rejected(ws_server_factory: Any) -> None:
    server = ws_server_factory(subprotocols=["v9.chat"])
    seen = exchange(WebSocket(server.url_for("/echo"), protocols=["v1.chat"]))
    assert names(seen) == ["connecting", "connected", "rejected", "disconnected"]
    assert first(seen, events.Rejected).response.status_code == 400


@pytest.mark.parametrize("protocols", [["has space"], ["a,b"], [""]])
def test_bad_subprotocol_names_refused(protocols: List[str]) -> None:
    with pytest.raises(ValueError):
        WebSocket("ws://example.com/", protocols=protocols)


# -- TLS: ssl_context, client certificates ---------------------------------------------


async def _whoami(ws: Any, rec: Any) -> None:
    """Send the client certificate's subjectAltName names, as the server saw them."""
    cert = ws.transport.get_extra_info("peercert") or {}
    await ws.send(json.dumps([value for kind, value in cert.get("subjectAltName", ())]))
    await ws.recv()


@pytest.fixture
def mtls_server(ws_server_factory: Any, tls: Any) -> Any:
    return ws_server_factory(
        ssl_context=tls.server_context(require_client_cert=True), behaviours={"/whoami": _whoami}
    )


def test_mutual_tls_with_client_certificate(mtls_server: Any, tls: Any) -> None:
    websocket = WebSocket(
        mtls_server.url_for("/whoami"), ssl_context=tls.client_context(client_cert=True)
    )
    seen = exchange(websocket, on_ready=None)
    assert names(seen) == ECHO
    assert first(seen, events.Text).json == ["client.lomond.test"]


def test_mutual_tls_from_files(mtls_server: Any, tls: Any) -> None:
    # What the README shows: a default context with the CA and the client's
    # certificate chain and key loaded from PEM files.
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
    websocket = WebSocket(mtls_server.url_for("/whoami"), ssl_context=context)
    seen = exchange(websocket, on_ready=None)
    assert first(seen, events.Text).json == ["client.lomond.test"]


def test_mutual_tls_without_client_certificate_fails(mtls_server: Any, tls: Any) -> None:
    websocket = WebSocket(mtls_server.url_for("/whoami"), ssl_context=tls.client_context())
    seen = exchange(websocket)
    # TLS 1.2 fails in the handshake; under TLS 1.3 the server's alert
    # arrives with the first read, while the upgrade is awaited.
    assert names(seen) in (
        ["connecting", "connect_fail"],
        ["connecting", "connected", "connect_fail", "disconnected"],
    )
    assert "ready" not in names(seen)
    # (asyncio's TLS server just closes the connection, with no alert.)
    assert not any(rec.accepted for rec in mtls_server.connections)


def test_ssl_context_trust_is_what_is_verified(wss_server: Any, tls: Any) -> None:
    # The same server: trusted through the given context, refused with one
    # that trusts another CA (no fallback to a default context).
    url = wss_server.url_for("/echo")
    assert names(exchange(WebSocket(url, ssl_context=tls.client_context()))) == ECHO
    seen = exchange(WebSocket(url, ssl_context=tls.client_context("other_ca")))
    assert names(seen) == ["connecting", "connect_fail"]
    assert "certificate verify failed" in first(seen, events.ConnectFail).reason


# -- source address --------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(not LINUX, reason="127.0.0.2 is a loopback address on Linux only")
def test_source_address_host(ws_server: Any) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"), source_address=("127.0.0.2", 0))
    assert names(exchange(websocket)) == ECHO
    assert ws_server.last.remote_address[0] == "127.0.0.2"


def test_source_address_port(ws_server: Any) -> None:
    port = free_port()
    local: List[Any] = []

    def on_ready(ws: WebSocket) -> None:
        local.append(client_socket(ws).getsockname())
        ws.send_text("hello")

    websocket = WebSocket(ws_server.url_for("/echo"), source_address=("127.0.0.1", port))
    assert names(exchange(websocket, on_ready)) == ECHO
    assert tuple(ws_server.last.remote_address[:2]) == ("127.0.0.1", port) == tuple(local[0])


def test_source_address_ipv6(ws_server_factory: Any) -> None:
    server = ws_server_factory(host="::1")
    port = free_port("::1")
    websocket = WebSocket(server.url_for("/echo"), source_address=("::1", port))
    assert names(exchange(websocket)) == ECHO
    assert tuple(server.last.remote_address[:2]) == ("::1", port)


def test_source_address_that_cannot_be_bound(ws_server: Any) -> None:
    # 192.0.2.1 (TEST-NET-1) is nobody's local address.
    websocket = WebSocket(ws_server.url_for("/echo"), source_address=("192.0.2.1", 0))
    seen = exchange(websocket)
    assert names(seen) == ["connecting", "connect_fail"]
    assert "could not bind to 192.0.2.1:0" in first(seen, events.ConnectFail).reason
    assert ws_server.connections == []


# -- socket options, TCP keepalive -----------------------------------------------------


def keepalive_settings(sock: socket.socket) -> Dict[str, int]:
    settings = {"keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"):
        if hasattr(socket, name):
            settings[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
    return settings


def test_tcp_keepalive_helper_options() -> None:
    options = tcp_keepalive(idle=30, interval=5, count=3)
    assert options[0] == (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if LINUX:
        assert options == [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
        ]


@pytest.mark.parametrize("bad", [{"idle": 0}, {"interval": -1}, {"count": 1.5}, {"idle": True}])
def test_tcp_keepalive_helper_checks_values(bad: Dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        tcp_keepalive(**bad)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_tcp_keepalive_is_set_on_the_connection(scheme: str, request: Any, tls: Any) -> None:
    server = request.getfixturevalue("ws_server" if scheme == "ws" else "wss_server")
    settings: List[Dict[str, int]] = []
    nodelay: List[int] = []

    def on_ready(ws: WebSocket) -> None:
        sock = client_socket(ws)
        settings.append(keepalive_settings(sock))
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        ws.send_text("hello")

    websocket = WebSocket(
        server.url_for("/echo"),
        socket_options=tcp_keepalive(idle=7, interval=3, count=4),
        ssl_context=tls.client_context() if scheme == "wss" else None,
    )
    assert names(exchange(websocket, on_ready)) == ECHO
    assert settings[0]["keepalive"] != 0
    if LINUX:
        assert settings[0] == {
            "keepalive": 1,
            "TCP_KEEPIDLE": 7,
            "TCP_KEEPINTVL": 3,
            "TCP_KEEPCNT": 4,
        }
    assert nodelay[0] != 0  # always on


@pytest.mark.skipif(not LINUX, reason="Linux socket option names")
def test_raw_socket_option_tuples(ws_server: Any) -> None:
    settings: List[Dict[str, int]] = []
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 11),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6),
    ]

    def on_ready(ws: WebSocket) -> None:
        settings.append(keepalive_settings(client_socket(ws)))
        ws.send_text("hello")

    websocket = WebSocket(ws_server.url_for("/echo"), socket_options=options)
    assert names(exchange(websocket, on_ready)) == ECHO
    assert settings == [{"keepalive": 1, "TCP_KEEPIDLE": 11, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 6}]


def test_socket_options_apply_to_every_connection(ws_server: Any) -> None:
    # Options belong to the websocket: every new connection gets them.
    settings: List[int] = []

    def on_ready(ws: WebSocket) -> None:
        settings.append(client_socket(ws).getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        ws.send_text("hello")

    websocket = WebSocket(ws_server.url_for("/echo"), socket_options=tcp_keepalive())
    exchange(websocket, on_ready)
    exchange(websocket, on_ready)
    assert len(settings) == 2 and all(settings)


def test_invalid_socket_option_is_connect_fail(ws_server: Any) -> None:
    websocket = WebSocket(
        ws_server.url_for("/echo"), socket_options=[(socket.SOL_SOCKET, 99999, 1)]
    )
    seen = exchange(websocket)
    assert names(seen) == ["connecting", "connect_fail"]
    assert "could not set a socket option" in first(seen, events.ConnectFail).reason


# -- pre-connected sockets -------------------------------------------------------------


def test_pre_connected_socket_used_once(ws_server: Any) -> None:
    sock = socket.create_connection(("127.0.0.1", ws_server.port))
    local = tuple(sock.getsockname()[:2])
    websocket = WebSocket(ws_server.url_for("/echo"), sock=sock)
    assert names(exchange(websocket)) == ECHO
    assert tuple(ws_server.connections[0].remote_address[:2]) == local  # this socket
    assert sock.fileno() == -1  # owned, and closed, by the connection
    # The next connection dials on its own.
    assert names(exchange(websocket)) == ECHO
    assert tuple(ws_server.connections[1].remote_address[:2]) != local


def test_pre_connected_socket_gets_socket_options(ws_server: Any) -> None:
    sock = socket.create_connection(("127.0.0.1", ws_server.port))
    settings: List[int] = []

    def on_ready(ws: WebSocket) -> None:
        settings.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        ws.send_text("hello")

    websocket = WebSocket(ws_server.url_for("/echo"), sock=sock, socket_options=tcp_keepalive())
    assert names(exchange(websocket, on_ready)) == ECHO
    assert settings == [1]


def test_pre_connected_socket_with_tls(wss_server: Any, tls: Any) -> None:
    # A plain socket for a wss:// URL: TLS runs on it, for the URL's host.
    sock = socket.create_connection(("127.0.0.1", wss_server.port))
    websocket = WebSocket(wss_server.url_for("/echo"), sock=sock, ssl_context=tls.client_context())
    assert names(exchange(websocket)) == ECHO


def test_pre_connected_tls_socket(wss_server: Any, tls: Any) -> None:
    # Already TLS: used as it is.
    raw = socket.create_connection(("127.0.0.1", wss_server.port))
    sock = tls.client_context().wrap_socket(raw, server_hostname="localhost")
    websocket = WebSocket(wss_server.url_for("/echo"), sock=sock)
    assert names(exchange(websocket)) == ECHO


def test_pre_connected_socket_ignores_explicit_proxies(ws_server: Any) -> None:
    sock = socket.create_connection(("127.0.0.1", ws_server.port))
    websocket = WebSocket(
        ws_server.url_for("/echo"), sock=sock, proxies={"http": "http://127.0.0.1:1"}
    )
    seen = exchange(websocket)
    assert names(seen) == ECHO
    assert first(seen, events.Connected).proxy is None


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "ws.sock")

    def echo(connection: Any) -> None:
        for message in connection:
            connection.send(message)

    server = unix_serve(echo, path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    thread.join(5)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no UNIX sockets")
def test_pre_connected_unix_socket(unix_server: str) -> None:
    # An unusual transport: a WebSocket server on a UNIX socket.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(unix_server)
    websocket = WebSocket("ws://localhost/echo", sock=sock)
    seen = exchange(websocket)
    assert names(seen) == ECHO
    assert first(seen, events.Text).text == "hello"
