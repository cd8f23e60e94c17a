"""Long runs (issue 7): many messages and many reconnects through ``lomond.persist``
against the real ``websockets`` server, checking that memory and file
descriptors stay flat.

Each connection: the server streams ``count`` small text messages, the client
answers the last one with ``done:<number received>``, the server checks it and
closes (1000), and persist reconnects at once. Memory (tracemalloc's current
size, in total and for lomond's own files, and RSS from /proc/self/statm) and
the number of open file descriptors are measured after a warm-up and at the
end; they must not grow beyond a small tolerance. Server and client share the
process, so the figures include both.

``test_soak_small`` (50,000 messages, 20 reconnects) runs in CI;
``test_soak_long`` (1,000,000 messages, 100 reconnects) is marked slow.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import tracemalloc
from typing import Any, Dict

import pytest
from peers.ws_server import ConnectionRecord, WSServer

from lomond import WebSocket, events
from lomond.persist import persist

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)"
)


async def stream_then_check(ws: Any, rec: ConnectionRecord) -> None:
    count = rec.int_param("count", 1000)
    for number in range(count):
        await ws.send(f"m{number}")
    answer = await ws.recv()
    await ws.close(1000 if answer == f"done:{count}" else 1011, "checked")


def measure() -> Dict[str, int]:
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    lomond_dir = os.path.dirname(sys.modules["lomond"].__file__ or "")
    ours = snapshot.filter_traces([tracemalloc.Filter(True, os.path.join(lomond_dir, "*"))])
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return {
        "traced": tracemalloc.get_traced_memory()[0],
        "traced_lomond": sum(stat.size for stat in ours.statistics("filename")),
        "rss": resident_pages * os.sysconf("SC_PAGE_SIZE"),
        "fds": len(os.listdir("/proc/self/fd")),
    }


def soak(server: WSServer, messages: int, reconnects: int, warm_up: int) -> Dict[str, Any]:
    connections = reconnects + 1
    per_connection = messages // connections
    server.add_behaviour("/soak", stream_then_check)
    websocket = WebSocket(server.url_for(f"/soak?count={per_connection}"))
    exit_event = threading.Event()
    figures: Dict[str, Any] = {"received": 0, "ready": 0, "graceful": 0, "closes": []}
    received_here = 0
    started = time.monotonic()
    tracemalloc.start()
    try:
        for event in persist(websocket, poll=60, ping_rate=0, min_wait=0, max_wait=0,
                             exit_event=exit_event, close_timeout=5):
            kind = type(event)
            if kind is events.Text:
                received_here += 1
                if received_here == per_connection:
                    websocket.send_text(f"done:{received_here}")
            elif kind is events.Ready:
                figures["ready"] += 1
                received_here = 0
            elif kind is events.Closing:
                figures["closes"].append(event.code)  # type: ignore[attr-defined]
            elif kind is events.Disconnected:
                figures["received"] += received_here
                figures["graceful"] += event.graceful  # type: ignore[attr-defined]
                done = figures["ready"]
                if done in (warm_up, connections):
                    # Let the server side of this connection finish closing too.
                    server.connections[-1].wait_closed()
                    figures["before" if done == warm_up else "after"] = measure()
                if done == connections:
                    exit_event.set()
            assert time.monotonic() - started < 500, figures
    finally:
        tracemalloc.stop()
    figures["seconds"] = time.monotonic() - started
    figures["per_connection"] = per_connection
    return figures


def check(figures: Dict[str, Any], messages: int, reconnects: int) -> None:
    connections = reconnects + 1
    per_connection = figures["per_connection"]
    assert figures["ready"] == connections
    assert figures["received"] == per_connection * connections
    assert figures["received"] >= messages - connections
    assert figures["closes"] == [1000] * connections  # every "done" count was right
    assert figures["graceful"] == connections
    before, after = figures["before"], figures["after"]
    print(
        f"\nsoak: {figures['received']} messages, {reconnects} reconnects in "
        f"{figures['seconds']:.1f} s; traced {before['traced']} -> {after['traced']} B "
        f"(lomond {before['traced_lomond']} -> {after['traced_lomond']} B), "
        f"RSS {before['rss'] >> 10} -> {after['rss'] >> 10} KiB, "
        f"fds {before['fds']} -> {after['fds']}"
    )
    # Flat: what lomond holds does not grow with messages or connections...
    assert after["traced_lomond"] - before["traced_lomond"] < 64 * 1024, (before, after)
    # ...nor does the process as a whole (the in-process server keeps one small
    # record per connection, hence the allowance).
    assert after["traced"] - before["traced"] < 2 * 1024 * 1024, (before, after)
    assert after["rss"] - before["rss"] < 16 * 1024 * 1024, (before, after)
    assert after["fds"] - before["fds"] <= 1, (before, after)


def test_soak_small(ws_server: WSServer) -> None:
    messages, reconnects = 50_000, 20
    figures = soak(ws_server, messages, reconnects, warm_up=3)
    check(figures, messages, reconnects)


@pytest.mark.slow
def test_soak_long(ws_server: WSServer) -> None:
    messages, reconnects = 1_000_000, 100
    figures = soak(ws_server, messages, reconnects, warm_up=10)
    check(figures, messages, reconnects)
