"""The threaded session against real peers: that it acts on its timers (poll,
auto-ping, ping timeout, close timeout, handshake timeout), and stopping a
loop from another thread.

When each timer fires is checked exactly, without sleeping, in
test_timers.py; here the events and what the server saw show that the
session delivers what the timers say. Timeouts are small (tenths of a
second) to keep the suite fast. Only the promise that a close() from another
thread ends a 30 s wait promptly is measured, with a generous bound.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Union

import pytest
from core_helpers import collect, exchange, later, wait_for
from peers.raw_server import CLOSE, PING, TEXT, PeerClosed, RawConnection
from peers.ws_server import WSServer

from lomond import WebSocket, events
from lomond.errors import WebSocketError

#: How soon a close() from another thread must end a 30 s wait: far below
#: that, and generous for a busy 2-core machine.
PROMPT = 2.0


def read_until_eof(conn: RawConnection, timeout: float = 5.0) -> List[Any]:
    """Read client frames until the client closes TCP; never answer anything."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn.recv_frame(timeout=max(deadline - time.monotonic(), 0.01))
        except (PeerClosed, ConnectionResetError):
            return conn.frames
        except TimeoutError:
            break
    return conn.frames


# -- poll and auto-ping ---------------------------------------------------------


def test_poll_events(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    polls: List[events.Event] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Poll):
            polls.append(event)
            if len(polls) == 5:
                websocket.close()

    run = collect(websocket, on_event, poll=0.1)
    assert len(polls) == 5
    # The first Poll comes right after Ready (Lomond 0.3 programs subscribe
    # on it), the next ones every poll seconds.
    assert run.names[run.names.index("ready") + 1] == "poll"


def test_poll_zero_disables_polls(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    timer = threading.Timer(0.4, websocket.close)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            timer.start()

    run = collect(websocket, on_event, poll=0)
    assert run.of(events.Poll) == []


def test_auto_ping(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    timer = threading.Timer(0.75, websocket.close)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            timer.start()

    run = collect(websocket, on_event, ping_rate=0.2, poll=0.05)
    record = ws_server.last
    record.wait_closed()
    assert 2 <= len(record.pings) <= 5, record.pings
    # websockets answers every ping: lomond reports the pongs.
    assert len(run.of(events.Pong)) >= 2


def test_ping_rate_zero_sends_no_pings(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    timer = threading.Timer(0.5, websocket.close)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            timer.start()

    collect(websocket, on_event, ping_rate=0, poll=0.05)
    record = ws_server.last
    record.wait_closed()
    assert record.pings == []


def test_ping_timeout_satisfied_by_pongs(ws_server: WSServer) -> None:
    """A server that answers keeps the connection: no Unresponsive."""
    websocket = WebSocket(ws_server.url_for("/record"))
    timer = threading.Timer(1.0, websocket.close)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            timer.start()

    run = collect(websocket, on_event, ping_rate=0.1, ping_timeout=0.3, poll=0.05)
    assert run.of(events.Unresponsive) == []
    assert run.first(events.Disconnected).graceful


# -- ping timeout ------------------------------------------------------------------


def test_ping_timeout_against_a_silent_server(scripted_server: Any) -> None:
    """The server reads but never answers pings: Unresponsive, then Disconnected."""

    def script(conn: RawConnection) -> List[Any]:
        conn.handshake()
        return read_until_eof(conn)

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))
    run = collect(websocket, ping_rate=0.2, ping_timeout=0.5)
    assert run.names[-2:] == ["unresponsive", "disconnected"]
    assert run.names[:3] == ["connecting", "connected", "ready"]
    assert run.first(events.Disconnected).graceful is False
    assert run.first(events.Disconnected).reason == "unresponsive: no pong within 0.5 s"
    frames = server.result()
    assert any(f.opcode == PING for f in frames)


def test_ping_timeout_with_manual_pings(scripted_server: Any) -> None:
    """send_ping() also starts the clock when auto-pings are off."""

    def script(conn: RawConnection) -> List[Any]:
        conn.handshake()
        return read_until_eof(conn)

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_ping(b"anyone?")

    run = collect(websocket, on_event, ping_rate=0, ping_timeout=0.4)
    assert run.names[-2:] == ["unresponsive", "disconnected"]
    frames = server.result()
    assert [(f.opcode, f.payload) for f in frames if f.opcode == PING] == [(PING, b"anyone?")]


# -- close timeout -------------------------------------------------------------------


def test_close_timeout_when_the_server_never_answers(scripted_server: Any) -> None:
    closes: List[Any] = []

    def script(conn: RawConnection) -> None:
        conn.handshake()
        closes.append(conn.recv_close())
        conn.hold(5)  # never answer, never drop (until teardown)

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.close(1000, "bye")

    run = collect(websocket, on_event, close_timeout=0.5, poll=30)
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    disconnected = run.first(events.Disconnected)
    assert disconnected.graceful is False
    assert disconnected.reason.startswith("close timeout")
    assert closes == [(1000, "bye")]


def test_close_timeout_after_the_servers_close(scripted_server: Any) -> None:
    """The server sends Close, gets the echo, but never drops TCP."""

    echoes: List[Any] = []

    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.send_close(1001, "restart")
        echoes.append(conn.recv_close())
        conn.hold(5)

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")), close_timeout=0.5, poll=30)
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
    # The close handshake itself was complete: only TCP was not closed.
    assert run.first(events.Disconnected).reason.startswith("close timeout")
    assert echoes == [(1001, "")]


def test_no_events_between_closing_and_disconnected(scripted_server: Any) -> None:
    """The documented order is ... -> Closing -> Disconnected, even with a fast poll."""

    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_close(1000, "")
        conn.recv_close()
        conn.sleep(0.5)  # drop TCP only after a while

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")), poll=0.05)
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]


def test_no_events_between_closed_and_disconnected(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.recv_close()
        conn.send_close(1000, "")
        conn.sleep(0.5)

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))
    run = collect(websocket, lambda e: websocket.close() if e.name == "ready" else None,
                  poll=0.05)
    assert run.names[-2:] == ["closed", "disconnected"]
    assert "poll" not in run.names[run.names.index("closed"):]


def test_graceful_when_the_server_answers_late(scripted_server: Any) -> None:
    """Messages sent by the server before its Close answer are delivered."""

    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.recv_close()
        conn.send_frame(TEXT, b"still here")
        conn.sleep(0.2)
        conn.send_close(1000, "ok")

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))
    run = collect(websocket, lambda e: websocket.close() if e.name == "ready" else None,
                  close_timeout=3)
    assert run.names == [
        "connecting", "connected", "ready", "poll", "text", "closed", "disconnected"
    ]
    assert run.first(events.Closed).reason == "ok"
    assert run.first(events.Disconnected).graceful


# -- handshake and connect timeouts ----------------------------------------------------


def test_handshake_timeout_with_a_slow_server(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/slow-handshake?delay=3"))
    run = collect(websocket, handshake_timeout=0.3)
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]
    reason = run.first(events.ConnectFail).reason
    assert reason == "no response to the upgrade request within 0.3 s"


def test_handshake_within_the_timeout(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/slow-handshake?delay=0.2"))
    run = collect(websocket, lambda e: websocket.close() if e.name == "ready" else None,
                  handshake_timeout=3)
    assert "ready" in run.names


# -- stopping from another thread ------------------------------------------------------


def test_close_during_the_handshake_is_prompt(scripted_server: Any) -> None:
    server = scripted_server(mode="stall")
    websocket = WebSocket(server.url_for("/"))
    closed_at: List[List[float]] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Connected):
            closed_at.append(later(0.2, websocket.close))

    run = collect(websocket, on_event, handshake_timeout=30)
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]
    # A close() from another thread ends the 30 s wait at once.
    assert closed_at and closed_at[0] and run.times[-1] - closed_at[0][0] < PROMPT


def test_close_during_the_tcp_connect_is_prompt(scripted_server: Any) -> None:
    server = scripted_server(mode="no-accept")
    websocket = WebSocket(server.url_for("/"))
    closed_at: List[List[float]] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Connecting):
            closed_at.append(later(0.2, websocket.close))

    run = collect(websocket, on_event, connect_timeout=30)
    assert run.names == ["connecting", "connect_fail"]
    # A close() from another thread ends the 30 s wait at once.
    assert closed_at and closed_at[0] and run.times[-1] - closed_at[0][0] < PROMPT


def test_close_while_the_server_streams(ws_server: WSServer) -> None:
    """A close() from a thread while data pours in still completes the handshake."""
    websocket = WebSocket(ws_server.url_for("/stream?count=20000&size=100"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            threading.Timer(0.05, websocket.close).start()

    run = collect(websocket, on_event, poll=30)
    assert run.names[-2:] == ["closed", "disconnected"]
    assert run.first(events.Disconnected).graceful
    texts = [e.text for e in run.of(events.Text)]
    assert texts == [str(n).zfill(100) for n in range(len(texts))]


def test_loop_in_a_thread_with_sends_from_the_main_thread(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    ready = threading.Event()
    received: List[str] = []
    finished = threading.Event()

    def loop() -> None:
        for event in websocket.connect(ping_rate=0, poll=30, close_timeout=3):
            if isinstance(event, events.Ready):
                ready.set()
            elif isinstance(event, events.Text):
                received.append(event.text)
        finished.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    assert ready.wait(5)
    for n in range(100):
        websocket.send_text(str(n))
    wait_for(lambda: len(received) == 100, 5, "100 echoes")
    websocket.close()
    assert finished.wait(5)
    thread.join(5)
    assert received == [str(n) for n in range(100)]


def test_server_close_frame_then_eof_is_graceful(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_close(1000, "bye")
        return conn.recv_close()

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
    assert run.first(events.Disconnected).graceful is True
    assert server.result() == (1000, "")


def test_eof_without_close_is_not_graceful(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.send_frame(TEXT, b"then silence")

    run = collect(WebSocket(scripted_server(script).url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "text", "disconnected"]
    assert run.first(events.Disconnected).graceful is False


def test_reset_is_not_graceful(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.sleep(0.1)
        conn.reset()

    run = collect(WebSocket(scripted_server(script).url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    assert run.first(events.Disconnected).graceful is False


@pytest.mark.parametrize("where", ["ready", "poll", "text"])
def test_exception_in_the_loop_body_drops_the_connection(ws_server: WSServer, where: str) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    with pytest.raises(RuntimeError, match="application bug"):
        for event in websocket.connect(ping_rate=0):
            if event.name == "ready":
                websocket.send_text("x")
            if event.name == where:
                raise RuntimeError("application bug")
    ws_server.last.wait_closed()
    assert websocket.is_closed
    # The object is usable again.
    run = collect(websocket, lambda e: websocket.close() if e.name == "ready" else None)
    assert run.first(events.Disconnected).graceful


def test_close_frame_reaches_the_server_before_disconnected(scripted_server: Any) -> None:
    """Closing a protocol-failed connection sends the code first (RFC 6455 7.1.7)."""

    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_frame(CLOSE, b"\x03")  # 1-byte close payload: 1002
        return conn.recv_close()

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    assert run.names[-2:] == ["protocol_error", "disconnected"]
    assert run.first(events.ProtocolError).code == 1002
    assert server.result()[0] == 1002


def test_no_unresponsive_after_closing(scripted_server: Any) -> None:
    """A ping left unanswered when the server closes must not turn into Unresponsive."""

    def script(conn: RawConnection) -> None:
        conn.handshake()
        frame = conn.recv_frame()
        assert frame.opcode == PING  # never answered
        conn.send_close(1000, "")
        conn.recv_close()
        conn.sleep(1.0)  # keep TCP open past the ping timeout

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")), ping_rate=0.1, ping_timeout=0.5,
                  close_timeout=3)
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
    assert run.first(events.Disconnected).graceful is True


def test_ping_answered_while_our_close_is_pending(scripted_server: Any) -> None:
    """RFC 6455 5.5.2: a Ping MUST be answered unless a Close was *received*."""

    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.recv_close()  # the client closed first
        conn.send_frame(PING, b"still there?")
        try:
            frame = conn.recv_frame(timeout=1.0)
        except (TimeoutError, PeerClosed):
            frame = None
        conn.send_close(1000, "")
        return frame

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"))
    run = collect(websocket, lambda e: websocket.close() if e.name == "ready" else None)
    assert run.first(events.Ping).data == b"still there?"
    assert run.names[-2:] == ["closed", "disconnected"]
    frame = server.result()
    assert frame is not None, "the Ping got no Pong"
    assert (frame.opcode, frame.payload) == (0xA, b"still there?")


def test_send_timeout_when_the_server_stops_reading(scripted_server: Any) -> None:
    """A server that never reads: the send fails with TransportFail, then Disconnected."""
    from lomond.errors import TransportFail

    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.hold(10)  # never read again

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"), send_timeout=0.3)
    raised: List[BaseException] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            start = time.monotonic()
            try:
                for _ in range(64):  # up to 256 MiB: far more than socket buffers hold
                    websocket.send_binary(b"\0" * (4 * 1024 * 1024))
            except Exception as error:
                raised.append(error)
            raised.append(time.monotonic() - start)  # type: ignore[arg-type]

    run = collect(websocket, on_event, timeout=30)
    assert isinstance(raised[0], TransportFail), raised
    assert run.names[-3:] == ["ready", "poll", "disconnected"]
    assert run.first(events.Disconnected).graceful is False


class SlowTLSServer:
    """Accepts one connection, waits ``tls_delay`` before the TLS handshake,
    then ``http_delay`` before a correct 101 answer; holds until stopped."""

    def __init__(self, context: Any, tls_delay: float, http_delay: float) -> None:
        import socket

        self.context = context
        self.tls_delay = tls_delay
        self.http_delay = http_delay
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(5)
        self.port = self.listener.getsockname()[1]
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from peers.raw_server import accept_key

        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        try:
            time.sleep(self.tls_delay)
            tls = self.context.wrap_socket(sock, server_side=True)
            tls.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                data += chunk
            key = next(line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            time.sleep(self.http_delay)
            tls.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_key(key).encode() + b"\r\n\r\n"
            )
            self.stop_event.wait(5)
        except Exception:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self.stop_event.set()
        self.listener.close()
        self.thread.join(5)


def test_handshake_timeout_covers_tls_and_the_upgrade_together(tls: Any) -> None:
    """handshake_timeout is documented as 'seconds for TLS and the HTTP upgrade
    response': 0.5 s of TLS plus 0.5 s of HTTP exceeds a 0.8 s budget."""
    server = SlowTLSServer(tls.server_context(), tls_delay=0.5, http_delay=0.5)
    try:
        websocket = WebSocket(f"wss://localhost:{server.port}/",
                              ssl_context=tls.client_context())
        run = collect(websocket, lambda e: websocket.close() if e.name == "ready" else None,
                      handshake_timeout=0.8, close_timeout=0.2)
        # Each step alone fits in 0.8 s; together they do not.
        assert "ready" not in run.names, run.names
        reason = run.first(events.ConnectFail).reason
        assert reason == "no response to the upgrade request within 0.8 s"
    finally:
        server.close()


def test_leaving_the_loop_sends_a_going_away_close(ws_server: Any) -> None:
    """A loop body that raises (or breaks) closes the generator: lomond says
    goodbye with a best-effort Close 1001 before dropping the socket."""
    websocket = WebSocket(ws_server.url_for("/echo"))
    with pytest.raises(RuntimeError):
        for event in websocket.connect(ping_rate=0):
            if event.name == "ready":
                raise RuntimeError("the application failed")
    record = ws_server.last
    assert record.closed.wait(5)
    assert (record.close_code, record.close_reason) == (1001, "going away")
    assert websocket.is_closed


# -- issue 18 regressions --------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def in_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def test_close_is_not_delayed_by_a_stuck_send(scripted_server: Any) -> None:
    def never_read(conn: RawConnection) -> None:
        conn.handshake()
        conn.hold(60)  # reads nothing: a large send fills the buffers and blocks

    server = scripted_server(never_read)
    websocket = WebSocket(server.url, send_timeout=600)
    ready = threading.Event()
    seen: List[events.Event] = []
    sent: List[Union[BaseException, str]] = []

    def loop() -> None:
        for event in websocket.connect(close_timeout=0.5, ping_rate=0, poll=0):
            seen.append(event)
            if isinstance(event, events.Ready):
                ready.set()

    def send() -> None:
        try:
            websocket.send_binary(bytes(64 * 1024 * 1024))  # far beyond the socket buffers
        except BaseException as error:
            sent.append(error)
        else:
            sent.append("returned")

    threads = [in_thread(loop, "test-loop")]
    try:
        assert ready.wait(10), [event.name for event in seen]
        threads.append(in_thread(send, "test-sender"))
        threads[-1].join(0.5)
        assert not sent, f"the send did not block: {sent}"
        threads.append(in_thread(websocket.close, "test-close"))
        threads[-1].join(5)
        close_returned = not threads[-1].is_alive()
        threads[0].join(15)
        threads[1].join(15)
        loop_ended, send_ended = not threads[0].is_alive(), not threads[1].is_alive()
    finally:
        server.stop()  # today: resets the connection, which ends the stuck send
        for thread in threads:
            thread.join(5)
    assert close_returned, "close() was still blocked 5 s later, behind the stuck send"
    assert loop_ended, f"the loop did not end within 15 s: {[event.name for event in seen]}"
    assert isinstance(seen[-1], events.Disconnected), [event.name for event in seen]
    assert send_ended, "the stuck send_binary() was still blocked 15 s after close()"
    assert isinstance(sent[0], WebSocketError), f"the stuck send ended with {sent[0]!r}"


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_finished_connections_release_their_descriptors(ws_server: WSServer) -> None:
    enabled = gc.isenabled()
    gc.disable()  # descriptors must be released by the end of the run, not by the collector
    try:
        exchange(WebSocket(ws_server.url_for("/echo")), on_ready=WebSocket.close)  # warm-up
        before = open_descriptors()
        finished: List[WebSocket] = []
        for _ in range(30):
            websocket = WebSocket(ws_server.url_for("/echo"))
            seen = exchange(websocket, on_ready=WebSocket.close)
            assert seen[-1].name == "disconnected"
            finished.append(websocket)
        try:  # the server's ends close a moment after ours
            wait_for(lambda: open_descriptors() <= before + 4, 5)
        except AssertionError:
            pass
        grown = open_descriptors() - before
    finally:
        if enabled:
            gc.enable()
    assert grown <= 4, f"30 finished connections hold {grown} more descriptors"


LEAK_SCRIPT = textwrap.dedent("""
    import gc
    from lomond import WebSocket, events
    from lomond.testing import LocalServer

    with LocalServer() as server:
        websocket = WebSocket(server.url)
        for event in websocket.connect(ping_rate=0, poll=0, close_timeout=5):
            if isinstance(event, events.Ready):
                websocket.send_text("hello")
            elif isinstance(event, events.Text):
                websocket.close()
        last = event.name
        del websocket, event
        gc.collect()
    print(last)
""")


def test_a_finished_connection_leaves_no_unclosed_socket() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", LEAK_SCRIPT],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0 and result.stdout.strip() == "disconnected", result.stderr
    assert "ResourceWarning" not in result.stderr, result.stderr
