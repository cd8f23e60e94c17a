"""Broken networks (issue 7): drops while sending and receiving, a handshake that
never completes, a peer that stops reading, a peer that goes silent.

Already covered elsewhere, not repeated here: a server that accepts TCP and
never answers (test_websocket.py::test_handshake_stall_is_connect_fail,
test_connection.py::test_upgrade_timeout), the basic send timeout
(test_session.py::test_send_timeout_when_the_server_stops_reading), a silent
peer that reads but never pongs (test_session.py::
test_ping_timeout_against_a_silent_server), a drop right after the handshake
(test_websocket.py::test_server_drops_the_connection) and resets in the middle
of a message (test_hostile_server.py::test_tcp_reset_in_the_middle_of_a_message).
"""

from __future__ import annotations

import threading
import time
from typing import Any, List

import pytest
from core_helpers import collect
from peers.raw_server import PING, PONG, RawConnection

from lomond import WebSocket, events
from lomond.errors import TransportFail, WebSocketClosed, WebSocketError


@pytest.mark.parametrize("how", ["reset", "close"])
def test_connection_dropped_while_a_thread_sends(scripted_server: Any, how: str) -> None:
    """The server reads a few frames, then drops; a thread is sending 256 KiB messages."""

    def script(conn: RawConnection) -> None:
        conn.handshake()
        for _ in range(3):
            conn.recv_frame()
        if how == "reset":
            conn.reset()
        else:
            conn.close(drain=0)

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"), send_timeout=2.0)
    outcome: List[Any] = []

    def sender() -> None:
        sent = 0
        try:
            while sent < 4000:  # ~1 GB: far more than any socket buffer
                websocket.send_binary(b"\x01" * (256 * 1024))
                sent += 1
        except BaseException as error:
            outcome.append(error)
        outcome.append(sent)

    thread = threading.Thread(target=sender, daemon=True)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            thread.start()

    run = collect(websocket, on_event, timeout=10)
    thread.join(5)
    assert not thread.is_alive()
    error, sent = outcome
    assert 3 <= sent < 4000
    assert isinstance(error, (TransportFail, WebSocketClosed)), repr(error)
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    disconnected = run.first(events.Disconnected)
    assert not disconnected.graceful
    assert disconnected.reason  # says why (reset, broken pipe or EOF)


def test_connection_dropped_while_the_loop_sends(scripted_server: Any) -> None:
    """A send from inside the event loop (a handler) when the peer is gone raises a
    WebSocketError, and the loop still ends with Disconnected."""

    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.send_text("go")
        conn.recv_frame()
        conn.reset()

    websocket = WebSocket(scripted_server(script).url_for("/"), send_timeout=2.0)
    raised: List[BaseException] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Text):
            try:
                for _ in range(4000):
                    websocket.send_binary(b"\x02" * (256 * 1024))
            except WebSocketError as error:
                raised.append(error)

    run = collect(websocket, on_event, timeout=10)
    assert len(raised) == 1 and isinstance(raised[0], (TransportFail, WebSocketClosed))
    assert run.names == ["connecting", "connected", "ready", "poll", "text", "disconnected"]
    assert not run.first(events.Disconnected).graceful


def test_connection_dropped_while_receiving_a_large_message(scripted_server: Any) -> None:
    """1 MiB announced, 300 KB delivered slowly, then the connection drops."""
    from peers.raw_server import BINARY, build_frame

    frame = build_frame(BINARY, b"\x03" * (1 << 20))

    def script(conn: RawConnection) -> None:
        conn.handshake()
        for start in range(0, 300_000, 30_000):
            conn.send_raw(frame[start:start + 30_000])
            conn.sleep(0.01)
        conn.close(drain=0)

    run = collect(WebSocket(scripted_server(script).url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    assert not run.first(events.Disconnected).graceful


def test_handshake_trickled_forever_hits_the_handshake_timeout(scripted_server: Any) -> None:
    """A server that keeps sending header bytes slowly (never finishing) cannot keep the
    client waiting beyond handshake_timeout: the budget is total, not per read."""

    def script(conn: RawConnection) -> None:
        conn.read_request()
        try:
            conn.send_raw(b"HTTP/1.1 101 Switching Protocols\r\n")
            for _ in range(100):
                conn.send_raw(b"X: y\r\n")
                conn.sleep(0.1)
        except OSError:
            pass

    # The trickle lasts 10 s; a per-read budget would outlast the 8 s watchdog.
    # (That the deadline stays put is checked exactly in test_timers.py.)
    run = collect(WebSocket(scripted_server(script).url_for("/")), timeout=8,
                  handshake_timeout=0.8)
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]
    reason = run.first(events.ConnectFail).reason
    assert reason == "no response to the upgrade request within 0.8 s"


def test_stalled_reader_bounds_every_thread_by_send_timeout(scripted_server: Any) -> None:
    """The server stops reading but keeps sending. One thread's send blocks on the full
    socket buffer: the loop keeps delivering messages meanwhile, a second sending thread
    waits at most about send_timeout, and the whole connection ends soon after."""
    send_timeout = 1.0

    def script(conn: RawConnection) -> None:
        conn.handshake()
        try:
            for number in range(60):  # never reads again; talks for 6 s at most
                conn.send_text(str(number))
                conn.sleep(0.1)
        except OSError:
            pass

    server = scripted_server(script)
    websocket = WebSocket(server.url_for("/"), send_timeout=send_timeout)
    results: List[Any] = []
    texts_while_blocked: List[float] = []
    blocked = threading.Event()  # the big sender has been inside one send for 0.3 s
    send_started: List[float] = []

    payload = b"\0" * (16 << 20)

    def big_sender() -> None:
        try:
            # 16 MiB: more than the socket buffers on both ends can take, so the
            # first send blocks (smaller sends may each trickle through slowly
            # while the kernel grows its buffers and opens the window).
            for _ in range(20):
                send_started.append(time.monotonic())
                websocket.send_binary(payload)
        except BaseException as error:
            results.append(("big", error, time.monotonic()))

    def watcher() -> None:
        while not results:
            if send_started and time.monotonic() - send_started[-1] > 0.3:
                blocked.set()
                return
            time.sleep(0.01)

    def small_sender() -> None:
        assert blocked.wait(5)
        try:
            for _ in range(100_000):
                websocket.send_text("small")
        except BaseException as error:
            results.append(("small", error, time.monotonic()))

    threads = [threading.Thread(target=target, daemon=True)
               for target in (big_sender, watcher, small_sender)]
    ready_at: List[float] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            ready_at.append(time.monotonic())
            for thread in threads:
                thread.start()
        elif isinstance(event, events.Text) and blocked.is_set() and len(results) == 0:
            texts_while_blocked.append(time.monotonic())

    run = collect(websocket, on_event, poll=30, timeout=15)
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    by_name = {name: (error, ended) for name, error, ended in results}
    big_error, big_ended = by_name["big"]
    assert isinstance(big_error, TransportFail)
    assert "timed out" in str(big_error)
    small_error, small_ended = by_name["small"]
    assert isinstance(small_error, (TransportFail, WebSocketClosed)), repr(small_error)
    # The small sender waits behind the blocked send, then fails with it: not a
    # second send_timeout after it. (Measured from the big send's failure, not
    # from the small sender's start: the send timeout counts from the last
    # progress, and the kernel may still take a few bytes after the small
    # sender started: seen as a failure 1.7 s after it, 1 run in 6.)
    assert abs(small_ended - big_ended) < 0.3, (small_ended - big_ended)
    # The receive side was not blocked by the stuck send.
    assert texts_while_blocked, "no message delivered while a send was blocked"
    assert run.names[-1] == "disconnected" and not run.first(events.Disconnected).graceful
    total = run.times[-1] - ready_at[0]
    assert total < send_timeout + 2.0, total


def test_peer_goes_silent_after_answering_pings(scripted_server: Any) -> None:
    """Pongs for a while, then a black hole (nothing read, nothing sent, no FIN):
    ping_timeout detects it with Unresponsive then Disconnected."""

    def script(conn: RawConnection) -> int:
        conn.handshake()
        answered = 0
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            try:
                frame = conn.recv_frame(timeout=0.1)
            except TimeoutError:
                continue
            if frame.opcode == PING:
                conn.send_frame(PONG, frame.payload)
                answered += 1
        conn.hold(5)
        return answered

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")), ping_rate=0.1, ping_timeout=0.4, poll=30)
    assert run.names[:3] == ["connecting", "connected", "ready"]
    assert run.names[-2:] == ["unresponsive", "disconnected"]
    # Answered pings kept it past the 0.4 s ping timeout: pings go every 0.1 s,
    # so a 4th answered one was sent at least 0.4 s after Ready. (The clock
    # itself is checked exactly in test_timers.py.)
    pongs = run.of(events.Pong)
    assert len(pongs) >= 4, f"only {len(pongs)} pings answered"
    assert run.first(events.Disconnected).reason == "unresponsive: no pong within 0.4 s"
    assert server.result() == len(pongs)
