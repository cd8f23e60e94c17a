"""The asyncio driver (``lomond.asyncio.session.AsyncioSession``) against real peers:
its timers, back-pressure, stopping from other threads, and cancellation.

As in test_session.py, the timers' exact values are unit-tested in
test_timers.py; here the events and what the server saw show that the
driver acts on them. Only liveness is measured ("a stop ends a 30 s wait"),
with bounds far above the normal time. Where uvloop is installed the main
cases run on its loop too (the ``loop_factory`` fixture).

The bugs this suite found are kept as regression tests, each reduced to a
minimal reliable reproduction (test_timers_survive_a_loop_that_fires_a_moment_early,
the send and close timeouts awaited in the loop body, sends from other threads).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, List, Optional, Union

import pytest
from core_helpers import (
    FAST,
    LoopFactory,
    Run,
    aclose_after,
    acollect,
    later,
    run_async,
)
from peers.raw_server import CLOSE, PING, PeerClosed, RawConnection
from peers.ws_server import WSServer

from lomond import events
from lomond.asyncio import WebSocket
from lomond.asyncio.session import AsyncioSession
from lomond.errors import TransportFail, WebSocketClosed, WebSocketError
from lomond.wakeup import StopSignal

#: How soon a stop must end a wait that would otherwise last 30 s: far below
#: that, and generous for a busy 2-core machine.
PROMPT = 2.0
MiB = 1024 * 1024


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


def never_read(conn: RawConnection) -> None:
    """A server that completes the handshake, then reads nothing."""
    conn.handshake()
    conn.hold(30)


def silent_after_close(closes: List[Any]) -> Callable[[RawConnection], None]:
    """A server that reads the client's Close (appended to ``closes``) and never
    answers it, nor drops TCP (until the server stops)."""

    def script(conn: RawConnection) -> None:
        conn.handshake()
        closes.append(conn.recv_close(timeout=10))
        conn.hold(30)

    return script


class EarlyTimerLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``call_at`` fires one millisecond before the time asked.

    A deterministic model of uvloop, whose timers have whole milliseconds:
    there a ``call_at`` handle may run a fraction of a millisecond before its
    ``when`` (asyncio's own loop may run one ``clock_resolution`` early).
    """

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        return super().call_at(when - 0.001, callback, *args, context=context)


# -- poll and automatic pings ----------------------------------------------------------


def test_poll_events(ws_server: WSServer, loop_factory: LoopFactory) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    on_event = aclose_after(websocket, events.Poll, 5)

    # 0.1 s, not a value chosen to dodge uvloop's early timers (a test below
    # fires every timer early on purpose).
    run = run_async(acollect(websocket, on_event, poll=0.1), loop_factory=loop_factory)
    assert len(run.of(events.Poll)) == 5
    # The first Poll comes right after Ready, the next ones every poll seconds.
    assert run.names[run.names.index("ready") + 1] == "poll"


def test_poll_zero_disables_polls(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            asyncio.get_running_loop().call_later(
                0.4, lambda: asyncio.ensure_future(websocket.close())
            )

    run = run_async(acollect(websocket, on_event, poll=0))
    assert run.of(events.Poll) == []
    assert run.names == ["connecting", "connected", "ready", "closed", "disconnected"]


def test_timers_survive_a_loop_that_fires_a_moment_early(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    on_event = aclose_after(websocket, events.Poll, 5)

    # Normally 0.2 s; the watchdog ends a stalled connection after 3 s.
    run = run_async(acollect(websocket, on_event, poll=0.05, timeout=3),
                    loop_factory=EarlyTimerLoop)
    assert len(run.of(events.Poll)) == 5


def test_auto_ping(ws_server: WSServer, loop_factory: LoopFactory) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    on_event = aclose_after(websocket, events.Pong, 2)

    run = run_async(acollect(websocket, on_event, ping_rate=0.2, poll=0),
                    loop_factory=loop_factory)
    record = ws_server.last
    record.wait_closed()
    assert len(record.pings) >= 2
    # websockets answers every ping: lomond reports the pongs.
    assert len(run.of(events.Pong)) == 2
    assert run.first(events.Disconnected).graceful


def test_ping_rate_zero_sends_no_pings(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    on_event = aclose_after(websocket, events.Poll, 5)

    run_async(acollect(websocket, on_event, ping_rate=0, poll=0.05))
    record = ws_server.last
    record.wait_closed()
    assert record.pings == []


def test_ping_timeout_satisfied_by_pongs(ws_server: WSServer) -> None:
    """A server that answers keeps the connection: no Unresponsive."""
    websocket = WebSocket(ws_server.url_for("/record"))
    on_event = aclose_after(websocket, events.Pong, 4)

    run = run_async(acollect(websocket, on_event, ping_rate=0.1, ping_timeout=0.3, poll=0))
    assert run.of(events.Unresponsive) == []
    assert run.first(events.Disconnected).graceful


def test_ping_timeout_against_a_silent_server(
    scripted_server: Any, loop_factory: LoopFactory
) -> None:
    """The server reads but never answers pings: Unresponsive, then Disconnected."""

    def script(conn: RawConnection) -> List[Any]:
        conn.handshake()
        return read_until_eof(conn)

    server = scripted_server(script)
    run = run_async(acollect(WebSocket(server.url), ping_rate=0.2, ping_timeout=0.5),
                    loop_factory=loop_factory)
    assert run.names[-2:] == ["unresponsive", "disconnected"]
    assert run.names[:3] == ["connecting", "connected", "ready"]
    disconnected = run.first(events.Disconnected)
    assert disconnected.graceful is False
    assert disconnected.reason == "unresponsive: no pong within 0.5 s"
    assert any(frame.opcode == PING for frame in server.result())


def test_ping_timeout_with_a_manual_ping(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> List[Any]:
        conn.handshake()
        return read_until_eof(conn)

    server = scripted_server(script)
    websocket = WebSocket(server.url)

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            await websocket.send_ping(b"anyone?")

    run = run_async(acollect(websocket, on_event, ping_rate=0, ping_timeout=0.4))
    assert run.names[-2:] == ["unresponsive", "disconnected"]
    pings = [(f.opcode, f.payload) for f in server.result() if f.opcode == PING]
    assert pings == [(PING, b"anyone?")]


# -- close timeout ---------------------------------------------------------------------


def test_close_timeout_when_the_server_never_answers(
    scripted_server: Any, loop_factory: LoopFactory
) -> None:
    closes: List[Any] = []
    server = scripted_server(silent_after_close(closes))
    websocket = WebSocket(server.url)

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            await websocket.close(1000, "bye")

    run = run_async(acollect(websocket, on_event, close_timeout=0.5, poll=30),
                    loop_factory=loop_factory)
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    disconnected = run.first(events.Disconnected)
    assert disconnected.graceful is False
    assert disconnected.reason == "close timeout: the server did not complete the close handshake"
    assert closes == [(1000, "bye")]


def test_close_timeout_after_the_servers_close(scripted_server: Any) -> None:
    """The server sends Close, gets the echo, but never drops TCP."""

    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_close(1001, "restart")
        received = conn.recv_close()
        conn.expect_eof()  # never drops TCP itself: the client does, at its close timeout
        return received

    server = scripted_server(script)
    run = run_async(acollect(WebSocket(server.url), close_timeout=0.5, poll=30))
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
    assert run.first(events.Disconnected).reason.startswith("close timeout")
    assert server.result() == (1001, "")


def test_graceful_when_the_server_answers_late(scripted_server: Any) -> None:
    """Messages sent by the server before its Close answer are delivered."""

    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.recv_close()
        conn.send_text("still here")
        conn.sleep(0.2)
        conn.send_close(1000, "ok")

    server = scripted_server(script)
    websocket = WebSocket(server.url)

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            await websocket.close()

    run = run_async(acollect(websocket, on_event, close_timeout=3))
    assert run.names == [
        "connecting", "connected", "ready", "poll", "text", "closed", "disconnected"
    ]
    assert run.first(events.Closed).reason == "ok"
    assert run.first(events.Disconnected).graceful


def test_protocol_error_sends_its_close_first(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_frame(CLOSE, b"\x03")  # a 1-byte close payload: 1002
        return conn.recv_close()

    server = scripted_server(script)
    run = run_async(acollect(WebSocket(server.url)))
    assert run.names[-2:] == ["protocol_error", "disconnected"]
    assert run.first(events.ProtocolError).code == 1002
    assert server.result()[0] == 1002


def test_reset_is_not_graceful(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.sleep(0.1)
        conn.reset()

    run = run_async(acollect(WebSocket(scripted_server(script).url)))
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    assert run.first(events.Disconnected).graceful is False


# -- the handshake timeout ---------------------------------------------------------------


def test_handshake_timeout_with_a_slow_server(
    ws_server: WSServer, loop_factory: LoopFactory
) -> None:
    websocket = WebSocket(ws_server.url_for("/slow-handshake?delay=3"))
    run = run_async(acollect(websocket, handshake_timeout=0.3), loop_factory=loop_factory)
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]
    assert run.first(events.ConnectFail).reason == (
        "no response to the upgrade request within 0.3 s"
    )


def test_handshake_within_the_timeout(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/slow-handshake?delay=0.2"))

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            await websocket.close()

    run = run_async(acollect(websocket, on_event, handshake_timeout=5))
    assert "ready" in run.names


# -- back-pressure -------------------------------------------------------------------------


def test_a_send_waits_for_a_server_that_stops_reading_then_fails(
    scripted_server: Any, loop_factory: LoopFactory
) -> None:
    """The sends run in their own task while the loop iterates: they wait, then
    TransportFail after send_timeout; the connection ends not gracefully."""
    server = scripted_server(never_read)
    websocket = WebSocket(server.url, send_timeout=0.5)
    outcome: List[Union[BaseException, int]] = []

    async def sender() -> None:
        sent = 0
        try:
            for _ in range(64):  # up to 256 MiB: far more than socket buffers hold
                await websocket.send_binary(bytes(4 * MiB))
                sent += 1
        except Exception as error:
            outcome.append(error)
        outcome.append(sent)

    async def main() -> Run:
        tasks: List[asyncio.Task[None]] = []

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Ready):
                tasks.append(asyncio.ensure_future(sender()))

        run = await acollect(websocket, on_event, poll=0, timeout=30)
        await asyncio.wait_for(tasks[0], 10)
        return run

    run = run_async(main(), loop_factory=loop_factory)
    assert isinstance(outcome[0], TransportFail), outcome
    assert str(outcome[0]) == "send timed out after 0.5 s: the server is not reading"
    sent = outcome[1]
    assert isinstance(sent, int) and sent < 64  # it did wait for room
    assert run.names[-2:] == ["ready", "disconnected"]
    disconnected = run.first(events.Disconnected)
    assert disconnected.graceful is False
    assert disconnected.reason == "send timed out after 0.5 s: the server is not reading"


def test_close_ends_a_send_waiting_for_a_server_that_stopped_reading(
    scripted_server: Any, loop_factory: LoopFactory
) -> None:
    """close() from another task while a send waits: the close timeout ends the
    connection (the Close frame is stuck behind the data), and the send ends
    with WebSocketClosed, long before its 30 s send_timeout."""
    server = scripted_server(never_read)
    websocket = WebSocket(server.url, send_timeout=30)
    outcome: List[Any] = []

    async def sender() -> None:
        try:
            for _ in range(64):
                await websocket.send_binary(bytes(4 * MiB))
        except Exception as error:
            outcome.append(error)

    async def closer() -> None:
        await asyncio.sleep(0.3)
        await websocket.close()  # returns once the connection is over
        outcome.append("close returned")

    async def main() -> Run:
        tasks: List[asyncio.Task[None]] = []

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Ready):
                tasks.append(asyncio.ensure_future(sender()))
                tasks.append(asyncio.ensure_future(closer()))

        started = time.monotonic()
        run = await acollect(websocket, on_event, poll=0, close_timeout=0.5, timeout=30)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert time.monotonic() - started < 15  # not the 30 s send_timeout
        return run

    run = run_async(main(), loop_factory=loop_factory)
    # Both tasks end when the close timeout ends the connection, in either
    # order (the loop decides which resumes first).
    errors = [item for item in outcome if item != "close returned"]
    assert len(errors) == 1 and isinstance(errors[0], WebSocketClosed), outcome
    assert str(errors[0]) == (
        "the websocket is closed: close timeout: the server did not complete the close handshake"
    )
    assert "close returned" in outcome
    assert run.names[-2:] == ["ready", "disconnected"]
    assert run.first(events.Disconnected).graceful is False


def test_a_send_awaited_in_the_loop_body_times_out(scripted_server: Any) -> None:
    server = scripted_server(never_read)
    websocket = WebSocket(server.url, send_timeout=0.3)
    raised: List[BaseException] = []

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            try:
                for _ in range(64):
                    await websocket.send_binary(bytes(4 * MiB))
            except WebSocketError as error:
                raised.append(error)

    # Normally about 0.3 s; the watchdog cancels the hung coroutine after 3 s.
    run_async(acollect(websocket, on_event, poll=0), timeout=3)
    assert raised and isinstance(raised[0], TransportFail)


def test_close_awaited_in_the_loop_body_is_bounded_by_close_timeout(
    scripted_server: Any,
) -> None:
    server = scripted_server(never_read)
    websocket = WebSocket(server.url, send_timeout=30)

    async def stuck_sender() -> None:
        try:
            for _ in range(64):
                await websocket.send_binary(bytes(4 * MiB))
        except WebSocketError:
            pass

    tasks: List[asyncio.Task[None]] = []

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            tasks.append(asyncio.ensure_future(stuck_sender()))
            await asyncio.sleep(0.3)  # the sender fills the buffers
            await websocket.close()

    # Normally about 0.8 s (0.5 s close timeout); cancelled after 3 s.
    run = run_async(acollect(websocket, on_event, poll=0, close_timeout=0.5), timeout=3)
    assert run.names[-1] == "disconnected"


def test_sends_are_not_held_by_a_reading_server(ws_server: WSServer) -> None:
    """Against a server that reads, 64 MiB of sends in the loop body complete."""
    websocket = WebSocket(ws_server.url_for("/record"))

    async def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            for _ in range(16):
                await websocket.send_binary(bytes(4 * MiB))
            await websocket.close()

    run = run_async(acollect(websocket, on_event, poll=0, timeout=60), timeout=90)
    assert run.first(events.Disconnected).graceful
    record = ws_server.last
    record.wait_closed(10)
    assert len(record.received) == 16


def test_a_send_from_another_thread_waits_for_room(scripted_server: Any) -> None:
    """The seam run_async uses: a threaded lomond.WebSocket driven by connect_events.
    Its sends from another thread wait while more than HIGH_WATER is queued, and
    time out (TransportFail) against a server that reads nothing."""
    import lomond
    from lomond.asyncio.session import HIGH_WATER
    from lomond.asyncio.websocket import connect_events
    from lomond.options import ConnectOptions

    server = scripted_server(never_read)
    websocket = lomond.WebSocket(server.url, send_timeout=1.0)
    peaks: List[int] = []
    raised: List[BaseException] = []

    def send() -> None:
        session = websocket.session
        assert isinstance(session, AsyncioSession)
        try:
            for _ in range(16):
                websocket.send_binary(bytes(4 * MiB))
                peaks.append(session.lifecycle.pending_output)
        except Exception as error:
            raised.append(error)

    async def main() -> List[str]:
        seen: List[str] = []
        threads: List[threading.Thread] = []
        async for event in connect_events(websocket, ConnectOptions(**FAST, poll=0)):
            seen.append(event.name)
            if isinstance(event, events.Ready):
                threads.append(threading.Thread(target=send, daemon=True))
                threads[0].start()
        await asyncio.get_running_loop().run_in_executor(None, threads[0].join, 10)
        return seen

    seen = run_async(main())
    assert seen[-1] == "disconnected"
    # At most one message over HIGH_WATER is ever queued; the stalled send times out.
    assert max(peaks, default=0) <= HIGH_WATER + 4 * MiB + 1024, peaks
    assert raised and isinstance(raised[0], TransportFail), raised


# -- stopping from another thread ------------------------------------------------------


def test_stop_signal_while_connected(ws_server: WSServer, loop_factory: LoopFactory) -> None:
    stop = StopSignal()
    websocket = WebSocket(ws_server.url_for("/echo"))
    stopped: List[List[float]] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            stopped.append(later(0.1, stop.set))

    run = run_async(acollect(websocket, on_event, poll=30, stop=stop),
                    loop_factory=loop_factory)
    assert run.names == ["connecting", "connected", "ready", "poll", "closed", "disconnected"]
    assert run.first(events.Disconnected).graceful
    # Woken at once, not at the next Poll 30 s later.
    assert stopped[0] and run.times[-1] - stopped[0][0] < PROMPT
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000


def test_stop_signal_set_before_connecting() -> None:
    stop = StopSignal()
    stop.set()
    run = run_async(acollect(WebSocket("ws://127.0.0.1:1/"), stop=stop))
    assert run.names == ["connecting", "connect_fail"]
    assert run.first(events.ConnectFail).reason == "stopped before the connection was ready"


@pytest.mark.parametrize("stage", ["tcp", "proxy", "tls", "upgrade"])
def test_stop_signal_during_connect(
    stage: str, scripted_server: Any, ws_server: WSServer
) -> None:
    """A stop is prompt at every step of a connect that hangs, with 30 s timeouts."""
    proxies: Optional[dict] = {}
    if stage == "tcp":
        url = scripted_server(mode="no-accept").url
    elif stage == "proxy":
        url = "ws://target.example/"
        proxies = {"http": f"http://127.0.0.1:{scripted_server(mode='stall').port}"}
    elif stage == "tls":
        url = f"wss://localhost:{scripted_server(mode='stall').port}/"
    else:
        url = ws_server.url_for("/slow-handshake?delay=20")
    stop = StopSignal()
    stopped = later(0.3, stop.set)
    run = run_async(acollect(WebSocket(url, proxies=proxies), stop=stop,
                             connect_timeout=30, handshake_timeout=30))
    assert stopped and run.times[-1] - stopped[0] < PROMPT
    expected = ["connecting", "connect_fail"]
    reason = "stopped before the connection was ready"
    if stage == "upgrade":
        # The socket is open: the lifecycle turns the stop into a close(),
        # which drops a connection not ready yet (so does the threaded driver).
        expected = ["connecting", "connected", "connect_fail", "disconnected"]
        reason = "closed before the connection was ready"
    assert run.names == expected
    assert run.first(events.ConnectFail).reason == reason


def test_close_from_another_thread_via_run_coroutine_threadsafe(
    ws_server: WSServer, loop_factory: LoopFactory
) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    results: List[Any] = []
    threads: List[threading.Thread] = []

    async def main() -> Run:
        loop = asyncio.get_running_loop()

        def close_from_thread() -> None:
            future = asyncio.run_coroutine_threadsafe(websocket.close(4000, "from a thread"), loop)
            results.append(future.result(5))

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Ready):
                threads.append(threading.Thread(target=close_from_thread, daemon=True))
                threads[-1].start()

        return await acollect(websocket, on_event, poll=30)

    run = run_async(main(), loop_factory=loop_factory)
    # The thread sees the close's result after the loop set it: the run can
    # end first, so wait for the thread before looking.
    threads[0].join(5)
    assert results == [None]
    assert run.names[-2:] == ["closed", "disconnected"]
    assert run.first(events.Disconnected).graceful
    ws_server.last.wait_closed()
    assert (ws_server.last.close_code, ws_server.last.close_reason) == (4000, "from a thread")


def test_sends_from_another_thread_via_run_coroutine_threadsafe(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))
    received: List[str] = []

    async def main() -> Run:
        loop = asyncio.get_running_loop()

        def send_from_thread() -> None:
            for n in range(50):
                asyncio.run_coroutine_threadsafe(websocket.send_text(str(n)), loop).result(5)

        async def on_event(event: events.Event) -> None:
            if isinstance(event, events.Ready):
                threading.Thread(target=send_from_thread, daemon=True).start()
            elif isinstance(event, events.Text):
                received.append(event.text)
                if len(received) == 50:
                    await websocket.close()

        return await acollect(websocket, on_event, poll=30)

    run_async(main())
    assert received == [str(n) for n in range(50)]


def test_force_disconnect_from_another_thread(
    ws_server: WSServer, loop_factory: LoopFactory
) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    dropped: List[List[float]] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            dropped.append(later(0.1, websocket.force_disconnect))

    run = run_async(acollect(websocket, on_event, poll=30), loop_factory=loop_factory)
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    disconnected = run.first(events.Disconnected)
    assert disconnected.graceful is False
    assert disconnected.reason == "disconnected by the application"
    assert dropped[0] and run.times[-1] - dropped[0][0] < PROMPT
    ws_server.last.wait_closed()
    assert ws_server.last.close_code is None  # no close frame


def test_force_disconnect_in_the_loop_body(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.force_disconnect()

    run = run_async(acollect(websocket, on_event))
    assert run.names[-1] == "disconnected"
    assert run.first(events.Disconnected).graceful is False


def test_close_from_another_thread_during_the_tcp_connect(scripted_server: Any) -> None:
    """A close() from another thread ends a 30 s TCP connect at once."""
    server = scripted_server(mode="no-accept")
    websocket = WebSocket(server.url)
    closed_at: List[List[float]] = []

    async def main() -> Run:
        loop = asyncio.get_running_loop()

        def close() -> None:
            asyncio.run_coroutine_threadsafe(websocket.close(), loop).result(5)

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Connecting):
                closed_at.append(later(0.2, close))

        return await acollect(websocket, on_event, connect_timeout=30)

    run = run_async(main())
    assert run.names == ["connecting", "connect_fail"]
    assert run.first(events.ConnectFail).reason == "closed before the connection was ready"
    assert closed_at[0] and run.times[-1] - closed_at[0][0] < PROMPT


# -- cancellation ------------------------------------------------------------------------


def test_cancelling_while_waiting_for_data_closes_with_1001(
    ws_server: WSServer, loop_factory: LoopFactory
) -> None:
    websocket = WebSocket(ws_server.url_for("/record"))
    seen: List[str] = []

    async def consume() -> None:
        async for event in websocket.connect(**FAST, poll=30):
            seen.append(event.name)

    async def main() -> BaseException:
        task = asyncio.ensure_future(consume())
        while "ready" not in seen:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the iterator waits for data now
        task.cancel()
        try:
            await asyncio.wait_for(task, 10)
        except BaseException as error:
            return error
        raise AssertionError("the task ended without an exception")

    error = run_async(main(), loop_factory=loop_factory)
    assert isinstance(error, asyncio.CancelledError)
    # The end of the connection was delivered before the CancelledError.
    assert seen == ["connecting", "connected", "ready", "poll", "closed", "disconnected"]
    record = ws_server.last
    record.wait_closed()
    assert (record.close_code, record.close_reason) == (1001, "going away")
    assert websocket.session is None and websocket.is_closed


def test_a_second_cancellation_during_the_closing_handshake_gives_up_at_once(
    scripted_server: Any, loop_factory: LoopFactory
) -> None:
    closes: List[Any] = []
    server = scripted_server(silent_after_close(closes))
    websocket = WebSocket(server.url)
    seen: List[str] = []

    async def consume() -> None:
        async for event in websocket.connect(**dict(FAST, close_timeout=30), poll=30):
            seen.append(event.name)

    async def main() -> float:
        task = asyncio.ensure_future(consume())
        while "ready" not in seen:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()  # the first: close gracefully (1001), waiting up to 30 s
        await asyncio.sleep(0.3)
        assert not task.done()
        started = time.monotonic()
        task.cancel()  # the second: give up at once
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        return time.monotonic() - started

    elapsed = run_async(main(), loop_factory=loop_factory)
    assert elapsed < PROMPT
    assert closes == [(1001, "going away")]
    assert seen[-1] == "poll"  # nothing delivered after the second cancellation
    assert websocket.session is None and websocket.is_closed


@pytest.mark.parametrize("stage", ["tcp", "tls", "upgrade"])
def test_cancelling_during_connect(
    stage: str, scripted_server: Any, ws_server: WSServer, loop_factory: LoopFactory
) -> None:
    if stage == "tcp":
        url = scripted_server(mode="no-accept").url
    elif stage == "tls":
        url = f"wss://localhost:{scripted_server(mode='stall').port}/"
    else:
        url = ws_server.url_for("/slow-handshake?delay=20")
    websocket = WebSocket(url)
    seen: List[str] = []

    async def consume() -> None:
        async for event in websocket.connect(**dict(FAST, connect_timeout=30,
                                                    handshake_timeout=30)):
            seen.append(event.name)

    async def main() -> float:
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        return time.monotonic() - started

    assert run_async(main(), loop_factory=loop_factory) < PROMPT
    assert seen == (["connecting", "connected"] if stage == "upgrade" else ["connecting"])
    assert websocket.session is None
    # Usable again.
    websocket = WebSocket(ws_server.url_for("/close"))
    assert run_async(acollect(websocket)).names[-1] == "disconnected"
