"""A wss:// URL pointing at a plain ws:// server fails with a hint, not a bare TLS error."""

from __future__ import annotations

from typing import Any, List

from peers.raw_server import ScriptedServer
from peers.tls import TLSBundle
from peers.ws_server import WSServer

from lomond import WebSocket, events
from lomond.sync.connect import PLAIN_ANSWER, PLAIN_SERVER_HINT


def connect_events(url: str, **options: Any) -> List[events.Event]:
    return list(WebSocket(url, proxies={}).connect(ping_rate=0, **options))


def the_failure(found: List[events.Event]) -> str:
    assert [event.name for event in found] == ["connecting", "connect_fail"], found
    reason = found[-1].reason  # type: ignore[attr-defined]
    assert isinstance(reason, str)
    return reason


def test_wss_url_against_the_websockets_server(ws_server: WSServer) -> None:
    url = ws_server.url_for("/echo").replace("ws://", "wss://", 1)
    # The generous timeout shows the failure does not come from waiting it out.
    reason = the_failure(connect_events(url, handshake_timeout=60))
    assert reason.startswith("TLS handshake with 127.0.0.1 failed: ")
    assert "timed out" not in reason
    assert reason.endswith(PLAIN_SERVER_HINT)


def test_a_plain_http_answer_to_the_hello(scripted_server: Any) -> None:
    def answer_http(conn: Any) -> bytes:
        hello = conn.recv_some()
        conn.send_raw(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.expect_eof()
        return bytes(hello[:1])

    server: ScriptedServer = scripted_server(answer_http)
    url = server.url.replace("ws://", "wss://", 1)
    reason = the_failure(connect_events(url, handshake_timeout=60))
    assert server.result() == b"\x16"  # what we sent was a TLS handshake record
    # Seen by the peek or, if it won the race, by OpenSSL (WRONG_VERSION_NUMBER
    # or the like): the same words either way (issue 22).
    assert reason == (
        "TLS handshake with 127.0.0.1 failed: the server answered in plain text, not TLS: "
        "is the server plain ws://? (the URL says wss://)"
    )
    assert reason.endswith(PLAIN_ANSWER)


def test_the_same_words_when_openssl_sees_the_answer_first(
    scripted_server: Any, monkeypatch: Any
) -> None:
    # The peek never sees the answer: OpenSSL reads it during the handshake
    # (the race the peek loses now and then). The reason must not change.
    import lomond.sync.connect

    monkeypatch.setattr(lomond.sync.connect, "_peek_answer", lambda tls: None)

    def answer_http(conn: Any) -> None:
        conn.recv_some()
        conn.send_raw(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.expect_eof()

    server: ScriptedServer = scripted_server(answer_http)
    url = server.url.replace("ws://", "wss://", 1)
    reason = the_failure(connect_events(url, handshake_timeout=60))
    assert reason == f"TLS handshake with 127.0.0.1 failed: {PLAIN_ANSWER}"


def test_no_answer_to_the_hello_times_out_with_the_hint(scripted_server: Any) -> None:
    def wait_for_a_request(conn: Any) -> None:
        conn.recv_some()
        conn.expect_eof()  # the client gives up first

    server: ScriptedServer = scripted_server(wait_for_a_request)
    url = server.url.replace("ws://", "wss://", 1)
    reason = the_failure(connect_events(url, handshake_timeout=0.5))
    assert reason == (
        f"TLS handshake with 127.0.0.1 timed out: no answer to the TLS hello: {PLAIN_SERVER_HINT}"
    )


def test_a_real_tls_server_still_connects(scripted_server: Any, tls: TLSBundle) -> None:
    # The peek at the server's first bytes must leave them to the TLS layer.
    def tls_hello(conn: Any) -> Any:
        conn.handshake()
        conn.send_text("over tls")
        return conn.recv_close()

    server: ScriptedServer = scripted_server(tls_hello, tls=True)
    websocket = WebSocket(server.url, proxies={}, ssl_context=tls.client_context())
    texts = []
    for event in websocket.connect(ping_rate=0, close_timeout=3):
        if isinstance(event, events.Text):
            texts.append(event.text)
            websocket.close()
    assert texts == ["over tls"]
    assert server.result() == (1000, "goodbye")


def test_wss_url_against_the_bundled_echo_server_fails_fast_with_the_hint() -> None:
    from lomond.testing import LocalServer

    with LocalServer() as server:
        url = server.url.replace("ws://", "wss://")
        # A 60 s budget: only an immediate plain-text answer ends this quickly.
        reason = the_failure(connect_events(url, handshake_timeout=60))
    assert PLAIN_SERVER_HINT in reason
    assert "timed out" not in reason
