"""lomond.asyncio.persist(): reconnection, back-off, Retry-After, stopping, on asyncio.

As in test_persist.py, the back-off schedule is checked without sleeping:
``lomond.persist.random`` is fixed and the wait
(``lomond.asyncio.websocket._wait_stop``) is replaced by a recorder. Only
the promise that a stop ends a 30 s wait at once is measured, with a
generous bound.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from typing import Any, AsyncIterator, Callable, List, Optional

import pytest
from core_helpers import LoopFactory, later, names, refused_port, run_async
from peers.ws_server import WSServer

from lomond import events
from lomond.asyncio import WebSocket, persist
from lomond.wakeup import StopSignal

persist_module = importlib.import_module("lomond.persist")
aio_module = importlib.import_module("lomond.asyncio.websocket")

#: How soon a stop must end a wait that would otherwise last 30 s.
PROMPT = 2.0

#: Quick connections for the reconnect loop: frequent polls, no pings.
LOOP = {"poll": 0.05, "ping_rate": 0, "close_timeout": 2}


def attempts(seen: List[events.Event]) -> List[List[str]]:
    """The event names of each connection attempt (split at BackOff), checked for order."""
    result: List[List[str]] = [[]]
    for name in names(seen):
        if name == "back_off":
            result.append([])
        else:
            result[-1].append(name)
    if not result[-1]:
        result.pop()  # stopped during the last back-off
    for attempt in result:
        assert attempt[0] == "connecting", attempt
        if attempt[1] == "connect_fail":
            assert attempt == ["connecting", "connect_fail"]
            continue
        assert attempt[1] == "connected", attempt
        assert attempt[-1] == "disconnected", attempt
        assert attempt.count("ready") <= 1, attempt
    return result


async def drain(
    iterator: AsyncIterator[events.Event],
    on_event: Callable[[events.Event], Any] = lambda event: None,
    timeout: float = 15.0,
) -> List[events.Event]:
    """Run a persist loop to its end (``on_event`` may be async); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    seen: List[events.Event] = []
    try:
        async for event in iterator:
            seen.append(event)
            result = on_event(event)
            if asyncio.iscoroutine(result):
                await result
            assert time.monotonic() < deadline, f"persist still running: {names(seen)}"
    finally:
        await iterator.aclose()  # type: ignore[attr-defined]
    return seen


def record_waits(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    """Replace the back-off wait by a recorder that returns at once; the list of waits."""
    waits: List[float] = []

    async def wait_stop(signals: Any, delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(aio_module, "_wait_stop", wait_stop)
    return waits


# -- the back-off schedule ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fixed, expected",
    [(0.0, [1.0] * 6), (1.0, [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]), (0.5, [1.5, 2.5, 4.5, 5.5])],
)
@pytest.mark.parametrize("stop_with", ["none", "signal", "asyncio-event"])
def test_back_off_events_and_waits(
    monkeypatch: pytest.MonkeyPatch, fixed: float, expected: List[float], stop_with: str
) -> None:
    monkeypatch.setattr(persist_module, "random", lambda: fixed)
    waits = record_waits(monkeypatch)
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")

    async def main() -> List[events.Event]:
        exit_event: Any = {
            "none": None, "signal": StopSignal(), "asyncio-event": asyncio.Event()
        }[stop_with]
        seen: List[events.Event] = []
        loop = persist(websocket, min_wait=1, max_wait=10, exit_event=exit_event, **LOOP)
        backoffs = 0
        async for event in loop:
            seen.append(event)
            if isinstance(event, events.BackOff):
                backoffs += 1
                if backoffs == len(expected):
                    break
        await loop.aclose()
        return seen

    seen = run_async(main())
    delays = [e.delay for e in seen if isinstance(e, events.BackOff)]
    assert delays == pytest.approx(expected)
    # Each wait was exactly what its BackOff announced.
    assert waits == delays[:-1]
    assert all(attempt == ["connecting", "connect_fail"] for attempt in attempts(seen))


def test_cap_resets_after_ready(monkeypatch: pytest.MonkeyPatch, ws_server_factory: Any) -> None:
    monkeypatch.setattr(persist_module, "random", lambda: 1.0)
    waits = record_waits(monkeypatch)
    server = ws_server_factory()
    server.stop()  # down at first; the same port comes back later
    delays: List[float] = []

    async def main() -> List[events.Event]:
        exit_event = asyncio.Event()

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.BackOff):
                delays.append(event.delay)
                if len(delays) == 3:
                    server.start()
                elif len(delays) == 5:
                    exit_event.set()

        websocket = WebSocket(server.url_for("/close"))  # closes right after the handshake
        return await drain(
            persist(websocket, min_wait=0.02, max_wait=10, exit_event=exit_event, **LOOP),
            on_event,
        )

    seen = run_async(main())
    # 3 refused attempts double the cap; each Ready resets it to 2 * min_wait.
    assert delays == pytest.approx([0.04, 0.08, 0.16, 0.04, 0.04])
    assert waits == delays
    ends = [attempt[-1] for attempt in attempts(seen)]
    assert ends == ["connect_fail"] * 3 + ["disconnected"] * 2
    assert names(seen).count("ready") == 2


# -- Retry-After -----------------------------------------------------------------------


def test_retry_after_respected(ws_server: WSServer, monkeypatch: pytest.MonkeyPatch) -> None:
    waits = record_waits(monkeypatch)
    rejections: List[events.Rejected] = []

    async def main() -> List[events.Event]:
        exit_event = asyncio.Event()

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Rejected):
                rejections.append(event)
                if len(rejections) == 2:
                    exit_event.set()

        websocket = WebSocket(ws_server.url_for("/reject?status=503&retry_after=1"))
        return await drain(
            persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event, **LOOP),
            on_event,
        )

    seen = run_async(main())
    assert attempts(seen)[0] == ["connecting", "connected", "rejected", "disconnected"]
    backoff = next(e for e in seen if isinstance(e, events.BackOff))
    assert backoff.delay == 1.0  # beyond max_wait: the server asked for it
    assert rejections[0].response.status_code == 503
    assert waits[0] == 1.0  # and the loop really waited that long


def test_retry_after_ignored_when_asked(
    ws_server: WSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_waits(monkeypatch)

    async def main() -> List[events.Event]:
        exit_event = StopSignal()

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.BackOff):
                exit_event.set()

        websocket = WebSocket(ws_server.url_for("/reject?status=503&retry_after=60"))
        return await drain(persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event,
                                   respect_retry_after=False, **LOOP), on_event)

    backoff = next(e for e in run_async(main()) if isinstance(e, events.BackOff))
    assert 0.01 <= backoff.delay <= 0.02


def test_rejection_without_retry_after_uses_back_off(ws_server: WSServer) -> None:
    async def main() -> List[events.Event]:
        exit_event = asyncio.Event()

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.BackOff):
                exit_event.set()

        websocket = WebSocket(ws_server.url_for("/reject?status=429"))
        return await drain(
            persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event, **LOOP),
            on_event,
        )

    backoff = next(e for e in run_async(main()) if isinstance(e, events.BackOff))
    assert 0.01 <= backoff.delay <= 0.02


# -- stopping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how", ["signal-from-a-thread", "asyncio-event-from-a-task", "asyncio-event-from-a-thread"]
)
def test_stop_during_a_back_off_is_prompt(how: str) -> None:
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")

    async def main() -> List[Any]:
        loop = asyncio.get_running_loop()
        exit_event: Any = asyncio.Event() if "asyncio-event" in how else StopSignal()
        stopped: List[float] = []

        def stop() -> None:
            stopped.append(time.monotonic())
            exit_event.set()  # an asyncio.Event only from the loop's thread

        def on_event(event: events.Event) -> None:
            if not isinstance(event, events.BackOff):
                return
            assert event.delay == 30
            if how == "signal-from-a-thread":
                later(0.1, stop)
            elif how.endswith("from-a-thread"):
                later(0.1, lambda: loop.call_soon_threadsafe(stop))
            else:
                loop.call_later(0.1, stop)

        seen = await drain(
            persist(websocket, min_wait=30, max_wait=30, exit_event=exit_event, **LOOP),
            on_event,
        )
        return [seen, time.monotonic(), stopped]

    seen, ended, stopped = run_async(main())
    assert names(seen) == ["connecting", "connect_fail", "back_off"]
    # A stop ends a 30 s back-off at once.
    assert stopped and ended - stopped[-1] < PROMPT


def test_stop_signal_from_another_thread_ends_a_back_off(loop_factory: LoopFactory) -> None:
    """The same, simply: a StopSignal set by another thread, on each loop."""
    websocket = WebSocket(f"ws://127.0.0.1:{refused_port()}/")
    exit_event = StopSignal()
    stopped: List[List[float]] = []

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.BackOff):
            stopped.append(later(0.1, exit_event.set))

    async def main() -> List[events.Event]:
        return await drain(
            persist(websocket, min_wait=30, max_wait=30, exit_event=exit_event, **LOOP), on_event
        )

    seen = run_async(main(), loop_factory=loop_factory)
    ended = time.monotonic()
    assert names(seen) == ["connecting", "connect_fail", "back_off"]
    assert stopped[0] and ended - stopped[0][0] < PROMPT


@pytest.mark.parametrize("how", ["signal", "asyncio-event"])
def test_stop_while_connected(how: str, ws_server: WSServer, loop_factory: LoopFactory) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    async def main() -> List[Any]:
        loop = asyncio.get_running_loop()
        exit_event: Any = asyncio.Event() if how == "asyncio-event" else StopSignal()
        stopped: List[float] = []

        def stop() -> None:
            stopped.append(time.monotonic())
            exit_event.set()

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Ready):
                loop.call_later(0.1, stop)

        seen = await drain(
            persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event,
                    poll=30, ping_rate=0, close_timeout=2),
            on_event,
        )
        return [seen, time.monotonic(), stopped]

    seen, ended, stopped = run_async(main(), loop_factory=loop_factory)
    # The last event is the BackOff waited on, as in lomond.persist.persist.
    assert names(seen) == ["connecting", "connected", "ready", "closed", "disconnected", "back_off"]
    assert seen[-2].graceful
    # Woken at once, not at the next Poll 30 s later.
    assert stopped and ended - stopped[0] < PROMPT
    ws_server.last.wait_closed()
    assert ws_server.last.close_code == 1000
    assert len(ws_server.connections) == 1


@pytest.mark.parametrize("stage", ["tcp", "proxy", "tls", "upgrade"])
def test_stop_while_connecting(stage: str, scripted_server: Any, ws_server: WSServer) -> None:
    """A stop from another thread is prompt at every step of a connect that hangs."""
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
    exit_event = StopSignal()
    websocket = WebSocket(url, proxies=proxies)

    async def main() -> List[events.Event]:
        stopped.extend([later(0.3, exit_event.set)])
        return await drain(persist(websocket, exit_event=exit_event, connect_timeout=30,
                                   handshake_timeout=30, **LOOP))

    stopped: List[List[float]] = []
    seen = run_async(main())
    ended = time.monotonic()
    assert stopped[0] and ended - stopped[0][0] < PROMPT
    assert names(seen).count("back_off") == 1 and names(seen)[-1] == "back_off"
    assert names(seen)[0] == "connecting"
    assert "connect_fail" in names(seen)
    assert "ready" not in names(seen)


def test_close_while_connected_reconnects(ws_server: WSServer) -> None:
    """websocket.close() ends the connection, not the loop (Lomond 0.3.4's habit)."""
    websocket = WebSocket(ws_server.url_for("/echo"))

    async def main() -> List[events.Event]:
        exit_event = StopSignal()
        readies: List[Any] = []
        closing: List[Any] = []

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Ready):
                readies.append(event)
                if len(readies) == 1:
                    closing.append(asyncio.ensure_future(websocket.close()))
                else:
                    exit_event.set()

        return await drain(
            persist(websocket, exit_event=exit_event, min_wait=0.01, max_wait=0.02, **LOOP),
            on_event,
        )

    seen = run_async(main())
    one = ["connecting", "connected", "ready", "closed", "disconnected", "back_off"]
    assert names(seen) == one + one
    assert len(ws_server.connections) == 2


def test_a_close_before_the_loop_does_not_end_it(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    async def main() -> List[events.Event]:
        await websocket.close()  # not connected: only noted
        exit_event = StopSignal()

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Ready):
                exit_event.set()

        return await drain(persist(websocket, exit_event=exit_event, **LOOP), on_event)

    assert "ready" in names(run_async(main()))


def test_exit_event_must_be_a_stop_signal_or_an_asyncio_event() -> None:
    websocket = WebSocket("ws://127.0.0.1:1/")

    async def main() -> None:
        async for _ in persist(websocket, exit_event=threading.Event()):  # type: ignore[arg-type]
            pass

    with pytest.raises(TypeError, match=r"StopSignal or an asyncio\.Event"):
        run_async(main())


def test_bad_waits_rejected() -> None:
    async def main() -> None:
        async for _ in persist(WebSocket("ws://127.0.0.1:1/"), min_wait=-1):
            pass

    with pytest.raises(ValueError):
        run_async(main())


def test_connect_options_are_passed_on(ws_server: WSServer) -> None:
    fails: List[str] = []

    async def main() -> None:
        exit_event = asyncio.Event()

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.ConnectFail):
                fails.append(event.reason)
                exit_event.set()

        websocket = WebSocket(ws_server.url_for("/slow-handshake?delay=5"))
        await drain(persist(websocket, exit_event=exit_event, handshake_timeout=0.2, **LOOP),
                    on_event)

    run_async(main())
    # The message names the timeout that fired: the one given to persist().
    assert fails == ["no response to the upgrade request within 0.2 s"]


def test_closing_the_generator_closes_the_connection_at_once(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    async def main() -> bool:
        loop = persist(websocket, **LOOP)
        async for event in loop:
            if isinstance(event, events.Ready):
                break
        await loop.aclose()
        return websocket.is_closed

    assert run_async(main())


def test_closing_the_generator_closes_the_connection_soon(ws_server: WSServer) -> None:
    websocket = WebSocket(ws_server.url_for("/echo"))

    async def main() -> None:
        loop = persist(websocket, **LOOP)
        async for event in loop:
            if isinstance(event, events.Ready):
                break
        await loop.aclose()
        for _ in range(100):
            if websocket.is_closed:
                return
            await asyncio.sleep(0.02)

    run_async(main())
    record = ws_server.last
    record.wait_closed(2)
    assert (record.close_code, record.close_reason) == (1001, "going away")
    assert websocket.is_closed


# -- a server that goes away and comes back --------------------------------------------


@pytest.mark.hang_timeout(60)
def test_server_restarts(ws_server: WSServer) -> None:
    restarts = 3
    websocket = WebSocket(ws_server.url_for("/echo"))
    threads: List[threading.Thread] = []

    async def main() -> List[events.Event]:
        exit_event = asyncio.Event()
        readies = 0

        async def on_event(event: events.Event) -> None:
            nonlocal readies
            if isinstance(event, events.Ready):
                readies += 1
                await websocket.send_text(f"message {readies}")
            elif isinstance(event, events.Text):
                assert event.text == f"message {readies}"
                if readies <= restarts:
                    # Alternate a clean shutdown (close frame 1001) and an abort.
                    thread = threading.Thread(
                        target=ws_server.restart, kwargs={"abort": readies % 2 == 0},
                        daemon=True,
                    )
                    threads.append(thread)
                    thread.start()
                else:
                    exit_event.set()

        return await drain(
            persist(websocket, min_wait=0.01, max_wait=0.05, exit_event=exit_event, **LOOP),
            on_event, timeout=30,
        )

    seen = run_async(main(), timeout=45)
    for thread in threads:
        thread.join(5)
    per_attempt = attempts(seen)
    connected = [a for a in per_attempt if "connected" in a]
    assert len(connected) == restarts + 1
    assert all(a.count("ready") == 1 and a.count("text") == 1 for a in connected)
    texts = [e.text for e in seen if isinstance(e, events.Text)]
    assert texts == [f"message {n}" for n in range(1, restarts + 2)]
    graceful = [e.graceful for e in seen if isinstance(e, events.Disconnected)]
    assert graceful == [n % 2 == 1 for n in range(1, restarts + 1)] + [True]
    accepted = [rec for rec in ws_server.connections if rec.accepted]
    assert [rec.received for rec in accepted] == [[t] for t in texts]
