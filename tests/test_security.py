"""Security defaults (issue 7): TLS verification without downgrade, no header
injection, unpredictable masking keys, credentials that never leak.

Already covered elsewhere: a certificate from an unknown CA and a wrong host
name through lomond (test_websocket.py::test_wss_without_the_ca_fails_verification,
test_wss_hostname_mismatch), CR/LF/NUL in header values and the user agent
(test_websocket.py::test_header_injection_is_refused), bad subprotocol names
(test_options.py::test_bad_subprotocol_names_refused), os.urandom as the
masking key source for build_frame (test_frame.py::
test_masking_key_comes_from_os_urandom), proxy credentials in events, reprs,
logs and errors (test_proxy.py::test_credentials_never_leak).
"""

from __future__ import annotations

import base64
import logging
import socket
import struct
import threading
from typing import Any, Dict, Iterator, List, Tuple

import attrs
import pytest
from core_helpers import collect, refused_port
from peers.proxy import PROXY_PASSWORD, PROXY_USER, ProxyServer
from peers.raw_server import RawConnection
from peers.relay import pump
from peers.tls import TLSBundle
from peers.ws_server import WSServer

import lomond.frame
from lomond import WebSocket, events
from lomond.persist import persist

# -- TLS: verified by default, no plain-text fallback ----------------------------------


class RecordingRelay:
    """A TCP relay in front of a server that records every byte clients send."""

    def __init__(self, target: Tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.client_bytes: List[bytearray] = []  # one per accepted connection
        self.stop_event = threading.Event()
        self.threads: List[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self.threads.append(accept)

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=5)
            record = bytearray()
            self.client_bytes.append(record)
            for src, dst, rec in ((client, upstream, record), (upstream, client, None)):
                thread = threading.Thread(
                    target=pump, args=(src, dst, rec, self.stop_event), daemon=True
                )
                thread.start()
                self.threads.append(thread)

    def close(self) -> None:
        self.stop_event.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(2)


@pytest.fixture
def relay_to() -> Iterator[Any]:
    relays: List[RecordingRelay] = []

    def start(target: Tuple[str, int]) -> RecordingRelay:
        relay = RecordingRelay(target)
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        relay.close()


@pytest.mark.parametrize(
    "cert, trust, words",
    [
        ("default", "system", ["certificate verify failed", "issuer"]),
        ("untrusted", "ca", ["certificate verify failed", "issuer"]),
        ("wrong_host", "ca", ["certificate verify failed", "mismatch"]),
        ("expired", "ca", ["certificate verify failed", "expired"]),
    ],
    ids=["untrusted CA (default context)", "cert from another CA", "wrong host", "expired"],
)
def test_tls_failures_are_reported_and_never_downgraded(
    ws_server_factory: Any, tls: TLSBundle, relay_to: Any, cert: str, trust: str,
    words: List[str],
) -> None:
    server: WSServer = ws_server_factory(ssl_context=tls.server_context(cert))  # type: ignore
    relay = relay_to(("127.0.0.1", server.port))
    context = None if trust == "system" else tls.client_context()
    # Through persist too: a failure is retried over TLS, never in clear.
    websocket = WebSocket(f"wss://localhost:{relay.port}/echo", ssl_context=context)
    run = collect(websocket)
    assert run.names == ["connecting", "connect_fail"]
    reason = run.first(events.ConnectFail).reason.lower()
    for word in words:
        assert word in reason, reason
    seen: List[str] = []
    exit_event = threading.Event()
    for event in persist(websocket, min_wait=0, max_wait=0, ping_rate=0, exit_event=exit_event):
        seen.append(event.name)
        if seen.count("connect_fail") == 2:
            exit_event.set()
    assert seen == ["connecting", "connect_fail", "back_off"] * 2
    assert server.connections == []  # no upgrade request ever reached the server
    assert len(relay.client_bytes) == 3
    for data in relay.client_bytes:
        assert data[:1] == b"\x16", bytes(data[:16])  # a TLS handshake record...
        assert b"GET " not in data and b"HTTP/1.1" not in data  # ...and no HTTP in clear


# -- no CR, LF or NUL anywhere in what is sent -------------------------------------------

BAD = ["\r\nX-Injected: 1", "\n", "\r", "\x00"]


def injection_attempts(base: str, proxy_port: int) -> Iterator[Tuple[str, Any]]:
    for bad in BAD:
        yield f"url path {bad!r}", lambda b=bad: WebSocket(f"{base}/a{b}b")
        yield f"url host {bad!r}", lambda b=bad: WebSocket(base.replace("127.0.0.1", f"127{b}"))
        yield f"header value {bad!r}", lambda b=bad: WebSocket(base, headers={"X-A": f"a{b}"})
        yield f"header name {bad!r}", lambda b=bad: WebSocket(base, headers={f"X{b}A": "a"})
        yield f"header pair {bad!r}", lambda b=bad: WebSocket(base, headers=[("X-A", f"{b}")])
        yield f"add_header name {bad!r}", lambda b=bad: WebSocket(base).add_header(f"X{b}", "v")
        yield f"add_header value {bad!r}", lambda b=bad: WebSocket(base).add_header("X", f"v{b}")
        yield f"add_header bytes {bad!r}", lambda b=bad: WebSocket(base).add_header(
            b"X", f"v{b}".encode()
        )
        yield f"subprotocol {bad!r}", lambda b=bad: WebSocket(base, protocols=[f"chat{b}"])
        yield f"agent {bad!r}", lambda b=bad: WebSocket(base, agent=f"ua{b}")
        encoded = "".join(f"%{ord(ch):02X}" for ch in bad)
        yield f"proxy user {bad!r}", lambda e=encoded: WebSocket(
            base, proxies={"http": f"http://us{e}er:pw@127.0.0.1:{proxy_port}"}
        )
        yield f"proxy password {bad!r}", lambda e=encoded: WebSocket(
            base, proxies={"http": f"http://user:p{e}w@127.0.0.1:{proxy_port}"}
        )
        yield f"proxy url {bad!r}", lambda b=bad: WebSocket(
            base, proxies={"http": f"http://user:p{b}w@127.0.0.1:{proxy_port}"}
        )


def test_control_characters_are_refused_before_anything_is_sent(scripted_server: Any) -> None:
    server = scripted_server(lambda conn: conn.handshake())
    proxy = scripted_server(lambda conn: conn.read_request())
    base = server.url_for("/").rstrip("/")
    refused: List[str] = []
    for name, attempt in injection_attempts(base, proxy.port):
        with pytest.raises(ValueError) as info:
            websocket = attempt()
            # If construction let it through, connecting must not send it either.
            collect(websocket)
        message = str(info.value)
        assert "\r" not in message and "\n" not in message, (name, message)
        refused.append(name)
    assert len(refused) == 13 * len(BAD)
    assert server.connections == [] and proxy.connections == []


def test_control_characters_in_an_environment_proxy_are_refused(
    scripted_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = scripted_server(lambda conn: conn.handshake())
    proxy = scripted_server(lambda conn: conn.read_request())
    for bad in ("%0D%0AX-Injected:%201", "%00"):
        monkeypatch.setenv("http_proxy", f"http://user:p{bad}w@127.0.0.1:{proxy.port}")
        run = collect(WebSocket(server.url_for("/")))
        assert run.names == ["connecting", "connect_fail"]
        assert "CR, LF or NUL" in run.first(events.ConnectFail).reason
    assert server.connections == [] and proxy.connections == []


def test_percent_encoded_crlf_in_the_path_stays_encoded(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> bytes:
        request = conn.handshake()
        return request.raw

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/a%0D%0AX-Injected:%201?q=%0A"))
    collect(websocket, lambda e: websocket.close() if e.name == "ready" else None,
            close_timeout=0.5)
    raw = server.result()
    assert raw.split(b"\r\n")[0] == b"GET /a%0D%0AX-Injected:%201?q=%0A HTTP/1.1"
    assert b"\r\nX-Injected" not in raw


# -- masking keys ---------------------------------------------------------------------------


def read_raw_frame(conn: RawConnection) -> Tuple[int, bytes, bytes]:
    """(opcode, masking key, unmasked payload) of the next client frame."""
    first, second = conn.recv_exact(2)
    assert second & 0x80, "client frames must be masked"
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", conn.recv_exact(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", conn.recv_exact(8))[0]
    key = conn.recv_exact(4)
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(conn.recv_exact(length)))
    return first & 0x0F, key, payload


def test_a_thousand_frames_have_a_thousand_masking_keys(scripted_server: Any) -> None:
    count = 1000

    def script(conn: RawConnection) -> List[Tuple[int, bytes, bytes]]:
        conn.handshake()
        frames = [read_raw_frame(conn) for _ in range(count)]
        conn.send_close(1000)
        return frames

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            for number in range(count):
                websocket.send_text(f"message {number}")

    collect(websocket, on_event)
    frames = server.result()
    assert [payload for _, _, payload in frames] == [
        f"message {n}".encode() for n in range(count)
    ]
    keys = {key for _, key, _ in frames}
    # 1000 draws from 2**32 values collide with probability ~1e-4.
    assert len(keys) >= count - 1, len(keys)
    assert b"\0\0\0\0" not in keys


def test_masking_keys_on_the_wire_come_from_os_urandom(
    scripted_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: List[int] = []

    def fake_urandom(n: int) -> bytes:
        calls.append(n)
        return bytes([0xA5, 0x5A, 0x0F, 0xF0]) * (n // 4)

    def script(conn: RawConnection) -> List[Tuple[int, bytes, bytes]]:
        conn.handshake()
        frames = [read_raw_frame(conn) for _ in range(3)]
        conn.send_close(1000)
        return frames

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            monkeypatch.setattr(lomond.frame.os, "urandom", fake_urandom)
            monkeypatch.setattr(lomond.frame, "_keys", iter(()))  # draw a fresh pool
            websocket.send_text("one")
            websocket.send_binary(b"two")
            websocket.send_ping(b"three")
            monkeypatch.undo()

    collect(websocket, on_event)
    frames = server.result()
    assert [(op, key, data) for op, key, data in frames] == [
        (1, b"\xa5\x5a\x0f\xf0", b"one"),
        (2, b"\xa5\x5a\x0f\xf0", b"two"),
        (9, b"\xa5\x5a\x0f\xf0", b"three"),
    ]
    # One os.urandom call for a block of keys (lomond.frame.mask_key), not one per frame.
    assert calls == [lomond.frame._KEY_BLOCK]


# -- credentials never leak ---------------------------------------------------------------

URL_USER = "urluser_q7"
URL_PASSWORD = "url-pa:ss@w0rd"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))


@pytest.fixture
def lomond_logs() -> Iterator[Capture]:
    handler = Capture()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("lomond")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def event_texts(event: events.Event) -> List[str]:
    texts = [repr(event), str(event)]
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        texts += [str(value), repr(value)]
        if hasattr(value, "header_data"):  # the Response: the server's headers
            texts.append(value.header_data.decode("latin-1"))
    return texts


def test_url_and_proxy_credentials_never_leak(
    ws_server: WSServer, http_proxy_auth: ProxyServer, lomond_logs: Capture
) -> None:
    from urllib.parse import quote

    secrets = [
        URL_PASSWORD, quote(URL_PASSWORD, safe=""), PROXY_PASSWORD,
        base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode(),
        base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode(),
        "wrongpass9",
    ]
    userinfo = f"{URL_USER}:{quote(URL_PASSWORD, safe='')}@"
    shown: List[str] = []
    proxy_urls = {
        "good": http_proxy_auth.url_with_auth,
        "bad": http_proxy_auth.url_with_auth.replace(PROXY_PASSWORD, "wrongpass9"),
    }
    headers_seen: Dict[str, str] = {}
    for which, proxy_url in proxy_urls.items():
        url = ws_server.url_for("/headers").replace("ws://", f"ws://{userinfo}")
        websocket = WebSocket(url, proxies={"http": proxy_url})
        shown += [repr(websocket), str(websocket), repr(websocket.url), str(websocket.url),
                  repr(websocket.proxy), str(websocket.proxy)]

        def on_event(event: events.Event, websocket: WebSocket = websocket) -> None:
            if isinstance(event, events.Text):
                headers_seen.update(event.json)
                websocket.close()

        run = collect(websocket, on_event)
        for event in run.events:
            if not isinstance(event, events.Text):  # what /headers echoes back is data
                shown += event_texts(event)
        shown.append(repr(websocket))
        if which == "good":
            assert "ready" in run.names
        else:
            assert run.names == ["connecting", "connect_fail"]
            assert "407" in run.first(events.ConnectFail).reason
    # The credentials were used: Basic auth reached the server through the tunnel.
    expected = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
    assert headers_seen.get("Authorization") == f"Basic {expected}"
    # Failures outside the proxy: connection refused, and a bad port in the URL.
    websocket = WebSocket(f"ws://{userinfo}127.0.0.1:{refused_port()}/", proxies={})
    for event in collect(websocket).events:
        shown += event_texts(event)
    with pytest.raises(ValueError) as error:
        WebSocket(f"ws://{userinfo}127.0.0.1:99999/")
    shown += [str(error.value), repr(error.value)]
    assert lomond_logs.texts, "expected DEBUG records from lomond"
    shown += lomond_logs.texts
    for text in shown:
        for secret in secrets:
            assert secret not in text, (secret, text)
