"""Opening connections (lomond.connection): timeouts, aborts, errors, the proxy tunnel's reads.

``open_connection`` is driven directly against loopback peers that stall at
each step (TCP connect, proxy CONNECT, TLS handshake), and end to end through
``WebSocket.connect()`` for the timeouts and messages users see.

A timeout test sets every other timeout to 30 s and gives up itself after a
few seconds (the ``collect`` watchdog, or a stop that would say "connection
aborted"): the message then shows which timeout fired, and that it was the
short one, without measuring the time. Only the promise that a stop ends a
30 s connect step promptly is measured, with a generous bound.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, List, Tuple

import pytest
from core_helpers import exchange, first, later, names, refused_port

from lomond import WebSocket, events
from lomond.errors import ConnectError
from lomond.handlers import Hub, WebSocketApp
from lomond.handshake import parse_url
from lomond.proxy import Proxy
from lomond.sync import connect as connect_module
from lomond.sync.connect import _tunnel, open_connection
from lomond.wakeup import StopSignal, Wakeup

#: How soon a stop must end a connect step that would otherwise wait 30 s:
#: far below that, and generous for a busy 2-core CI machine.
PROMPT = 2.0

#: The other timeouts in a timeout test; and how long such a test waits
#: before it gives up (far less than that, far more than the short timeout).
LONG = 30.0
GIVE_UP = 8.0


def connect(url: str, **kwargs: Any) -> socket.socket:
    options = {"proxy": None, "ssl_context": None, "connect_timeout": 5.0, "handshake_timeout": 5.0}
    options.update(kwargs)
    return open_connection(parse_url(url), **options)


# -- timeouts, as users see them -------------------------------------------------------


def test_connect_timeout(scripted_server: Any) -> None:
    server = scripted_server(mode="no-accept")  # the TCP connect itself hangs
    websocket = WebSocket(server.url)
    seen = exchange(websocket, WebSocket.close, timeout=GIVE_UP,
                    connect_timeout=0.3, handshake_timeout=LONG)
    assert names(seen) == ["connecting", "connect_fail"]
    reason = first(seen, events.ConnectFail).reason
    assert reason == f"connecting to 127.0.0.1:{server.port} timed out"


def test_tls_handshake_timeout(scripted_server: Any, tls: Any) -> None:
    server = scripted_server(mode="stall")  # accepts, then says nothing
    websocket = WebSocket(f"wss://localhost:{server.port}/", ssl_context=tls.client_context())
    seen = exchange(websocket, WebSocket.close, timeout=GIVE_UP,
                    connect_timeout=LONG, handshake_timeout=0.3)
    assert names(seen) == ["connecting", "connect_fail"]
    assert first(seen, events.ConnectFail).reason == (
        "TLS handshake with localhost timed out: no answer to the TLS hello: "
        "is the server plain ws://? (the URL says wss://)"
    )


def test_upgrade_timeout(ws_server: Any) -> None:
    websocket = WebSocket(ws_server.url_for("/slow-handshake?delay=20"))
    seen = exchange(websocket, WebSocket.close, timeout=GIVE_UP,
                    connect_timeout=LONG, handshake_timeout=0.3)
    assert names(seen) == ["connecting", "connected", "connect_fail", "disconnected"]
    reason = first(seen, events.ConnectFail).reason
    assert reason == "no response to the upgrade request within 0.3 s"


def test_connect_timeout_ends_the_attempt_in_real_time(scripted_server: Any) -> None:
    """The one measured timeout: a 0.3 s connect_timeout, with a generous bound."""
    server = scripted_server(mode="no-accept")
    started = time.monotonic()
    seen = exchange(WebSocket(server.url), WebSocket.close, connect_timeout=0.3)
    elapsed = time.monotonic() - started
    assert names(seen) == ["connecting", "connect_fail"]
    assert 0.3 <= elapsed < 5.0, elapsed


def test_timeouts_long_enough(ws_server: Any) -> None:
    seen = exchange(
        WebSocket(ws_server.url_for("/slow-handshake?delay=0.2")),
        WebSocket.close,
        connect_timeout=2,
        handshake_timeout=2,
    )
    assert "ready" in names(seen)


def test_connection_refused_message() -> None:
    port = refused_port()
    seen = exchange(WebSocket(f"ws://127.0.0.1:{port}/"), WebSocket.close)
    assert names(seen) == ["connecting", "connect_fail"]
    assert seen[-1].reason == (  # type: ignore[attr-defined]
        f"could not connect to 127.0.0.1:{port}: Connection refused (ECONNREFUSED)"
    )


def test_connection_refused_ipv6_message() -> None:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    seen = exchange(WebSocket(f"ws://[::1]:{port}/"), WebSocket.close)
    assert seen[-1].reason.startswith(f"could not connect to [::1]:{port}: ")  # type: ignore[attr-defined]


# -- stopping a connect that hangs -----------------------------------------------------


@pytest.fixture(params=["tcp", "proxy", "tls"])
def hanging(request: Any, scripted_server: Any) -> Callable[..., socket.socket]:
    """open_connection() with every timeout at 30 s, hanging at one step."""
    if request.param == "tcp":
        url, proxy = scripted_server(mode="no-accept").url, None
    elif request.param == "proxy":
        url, proxy = "ws://target.example/", Proxy("127.0.0.1", scripted_server(mode="stall").port)
    else:
        url, proxy = f"wss://localhost:{scripted_server(mode='stall').port}/", None

    def start(**kwargs: Any) -> socket.socket:
        return connect(url, proxy=proxy, connect_timeout=30, handshake_timeout=30, **kwargs)

    return start


def test_stop_signal_stops_a_hanging_connect(hanging: Callable[..., socket.socket]) -> None:
    # Nothing is polled: the StopSignal wakes the selector through the wakeup.
    stop = StopSignal()
    wakeup = Wakeup()
    stop.attach(wakeup)
    stopped = later(0.2, stop.set)
    try:
        with pytest.raises(ConnectError, match="connection aborted"):
            hanging(wakeup=wakeup, aborted=stop.is_set)
        assert time.monotonic() - stopped[0] < PROMPT
    finally:
        stop.detach(wakeup)
        wakeup.close()


def test_wakeup_stops_a_hanging_connect(hanging: Callable[..., socket.socket]) -> None:
    wakeup = Wakeup()
    stop = threading.Event()

    def wake() -> None:
        stop.set()
        wakeup.wake()

    stopped = later(0.2, wake)
    try:
        with pytest.raises(ConnectError, match="connection aborted"):
            # A wake-up means "look at aborted()": it ends the wait at once.
            hanging(wakeup=wakeup, aborted=stop.is_set)
        assert time.monotonic() - stopped[0] < PROMPT
    finally:
        wakeup.close()


def test_spurious_wakeup_does_not_abort(scripted_server: Any) -> None:
    server = scripted_server(mode="no-accept")
    wakeup = Wakeup()
    later(0.05, wakeup.wake)
    try:
        with pytest.raises(ConnectError, match="timed out"):
            connect(server.url, connect_timeout=0.3, wakeup=wakeup)
    finally:
        wakeup.close()


def test_spurious_wakeup_keeps_waiting_until_the_answer() -> None:
    """A wake-up with nothing to abort goes back to waiting, for the same deadline."""
    near, far = socket.socketpair()
    near.setblocking(False)
    wakeup = Wakeup()
    later(0.05, wakeup.wake)
    later(0.3, lambda: far.sendall(b"HTTP/1.1 200 OK\r\n\r\n"))
    try:
        _tunnel(near, Proxy("p", 1), "h", 1, None, time.monotonic() + LONG, wakeup,
                lambda: False)
        assert far.recv(4096).startswith(b"CONNECT h:1 HTTP/1.1\r\n")
    finally:
        wakeup.close()
        near.close()
        far.close()


def test_close_stops_a_hanging_connect_through_websocket(scripted_server: Any) -> None:
    server = scripted_server(mode="no-accept")
    websocket = WebSocket(server.url)
    stopped = later(0.2, websocket.close)
    seen = exchange(websocket, WebSocket.close, connect_timeout=30)
    assert names(seen) == ["connecting", "connect_fail"]
    assert seen[-1].reason == "closed before the connection was ready"  # type: ignore[attr-defined]
    assert time.monotonic() - stopped[0] < PROMPT


# -- sockets are owned and closed ------------------------------------------------------


def test_given_socket_closed_when_tls_fails(scripted_server: Any, tls: Any) -> None:
    server = scripted_server(mode="stall")
    sock = socket.create_connection(("127.0.0.1", server.port))
    with pytest.raises(ConnectError, match="timed out"):
        connect(
            f"wss://localhost:{server.port}/",
            sock=sock,
            ssl_context=tls.client_context(),
            handshake_timeout=0.2,
        )
    assert sock.fileno() == -1


def test_given_socket_closed_when_options_fail(ws_server: Any) -> None:
    sock = socket.create_connection(("127.0.0.1", ws_server.port))
    with pytest.raises(ConnectError, match="could not set up the socket"):
        connect(ws_server.url, sock=sock, socket_options=[(socket.SOL_SOCKET, 99999, 1)])
    assert sock.fileno() == -1


def test_returned_socket_is_non_blocking(ws_server: Any) -> None:
    sock = connect(ws_server.url)
    try:
        assert sock.getblocking() is False
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()


# -- the CONNECT exchange reads exactly the proxy's answer -----------------------------


def tunnel_over_pair(answer: bytes) -> Tuple[socket.socket, socket.socket]:
    """Run _tunnel() over a socketpair whose far end answers ``answer``; return (near, far)."""
    near, far = socket.socketpair()
    near.setblocking(False)
    far.sendall(answer)
    try:
        _tunnel(
            near,
            Proxy("127.0.0.1", 3128),
            "target.example",
            443,
            None,
            time.monotonic() + 2,
            None,
            lambda: False,
        )
        assert far.recv(4096).startswith(b"CONNECT target.example:443 HTTP/1.1\r\n")
    except BaseException:
        near.close()
        far.close()
        raise
    return near, far


def test_tunnel_leaves_following_bytes_unread() -> None:
    near, far = tunnel_over_pair(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n\x16\x03\x01tunnelled")
    near.setblocking(True)
    assert near.recv(100) == b"\x16\x03\x01tunnelled"
    near.close()
    far.close()


def test_tunnel_terminator_split_across_reads() -> None:
    near, far = socket.socketpair()
    near.setblocking(False)
    parts = [b"HTTP/1.1 200 OK\r\n", b"\r", b"\n", b"after"]

    def feed() -> None:
        for part in parts:
            time.sleep(0.02)
            far.sendall(part)

    threading.Thread(target=feed, daemon=True).start()
    _tunnel(near, Proxy("p", 1), "h", 1, None, time.monotonic() + 2, None, lambda: False)
    time.sleep(0.05)
    near.setblocking(True)
    assert near.recv(100) == b"after"
    near.close()
    far.close()


def test_tunnel_error_body_does_not_hide_the_status() -> None:
    with pytest.raises(ConnectError, match="407 Proxy Authentication Required"):
        tunnel_over_pair(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
            b"Connection: close\r\n\r\nProxy Authentication Required"
        )


def test_tunnel_timeout_message() -> None:
    near, far = socket.socketpair()
    near.setblocking(False)
    # Gives up (says "connection aborted") if the 0.2 s deadline is not kept.
    stop = threading.Event()
    wakeup = Wakeup()
    later(GIVE_UP, lambda: (stop.set(), wakeup.wake()))
    try:
        with pytest.raises(
            ConnectError, match="timed out waiting for the proxy http://p:1 to answer CONNECT"
        ):
            _tunnel(near, Proxy("p", 1), "h", 1, None, time.monotonic() + 0.2, wakeup,
                    stop.is_set)
    finally:
        wakeup.close()
        near.close()
        far.close()


def test_on_handshake_reports_when_the_handshake_budget_starts(
    scripted_server: Any, wss_server: Any, tls: Any
) -> None:
    # Called once, after TCP (and any tunnel), before TLS: the caller holds
    # the HTTP upgrade to what is left of the same handshake_timeout.
    started: List[float] = []
    before = time.monotonic()
    sock = connect(wss_server.url, ssl_context=tls.client_context(), on_handshake=started.append)
    sock.close()
    assert len(started) == 1 and before <= started[0] <= time.monotonic()
    # The TLS handshake is held to handshake_timeout, not connect_timeout (a
    # stop after GIVE_UP seconds would say "connection aborted").
    stalled = scripted_server(mode="stall")
    started.clear()
    stop = threading.Event()
    wakeup = Wakeup()
    later(GIVE_UP, lambda: (stop.set(), wakeup.wake()))
    try:
        with pytest.raises(ConnectError, match="TLS handshake with localhost timed out"):
            connect(
                f"wss://localhost:{stalled.port}/",
                ssl_context=tls.client_context(),
                connect_timeout=LONG,
                handshake_timeout=0.2,
                on_handshake=started.append,
                wakeup=wakeup,
                aborted=stop.is_set,
            )
    finally:
        wakeup.close()
    assert len(started) == 1


# -- an unexpected error while connecting, in every driver ------------------------------


def test_an_unexpected_error_is_a_connect_fail_in_both_drivers(
    ws_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a ConnectError (a bug, a broken proxy hook): each driver reports the
    same ConnectFail and the traceback is logged, whichever thread connected."""

    def broken(url: Any, proxies: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(connect_module, "select_proxy", broken)
    websocket = WebSocket(ws_server.url_for("/echo"))
    threaded = [e for e in websocket.connect() if e.name == "connect_fail"]
    app = WebSocketApp(ws_server.url_for("/echo"))
    hub = Hub()
    hub.add(app)
    hub.start()
    try:
        outcome = app.join(10)
    finally:
        assert hub.stop(10)
    assert [e.reason for e in threaded] == ["could not connect: boom"]  # type: ignore[attr-defined]
    assert outcome is not None and outcome.reason == "could not connect: boom"
    logged = [r for r in caplog.records if r.name == "lomond.connect" and r.exc_info]
    assert len(logged) == 2 and all("boom" in str(r.exc_info[1]) for r in logged)  # type: ignore[index]
