"""Load (issue 7): many threads sending at once while the event loop receives.

The server (the real ``websockets`` server) checks every message itself, as
it arrives: each must be exactly ``"<thread>:<seq>"`` with ``seq`` the next
number for that thread, which catches a lost, duplicated, reordered or torn
message (interleaved frames would also break the framing, which websockets
reports as a protocol error). It acknowledges progress while the client sends,
so the loop is receiving throughout, and reports a summary at the end.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, List

from core_helpers import collect
from peers.ws_server import ConnectionRecord, WSServer

from lomond import WebSocket, events

THREADS = 8
PER_THREAD = 10_000
ACK_EVERY = 1_000


async def verify(ws: Any, rec: ConnectionRecord) -> None:
    """Check each ``thread:seq`` message; ack every ACK_EVERY; summary at the end."""
    expected = rec.int_param("threads", THREADS) * rec.int_param("per_thread", PER_THREAD)
    next_seq: Dict[int, int] = {}
    errors: List[str] = []
    count = 0
    while count < expected:
        message = await ws.recv()
        count += 1
        if not isinstance(message, str):
            errors.append(f"binary message {message[:20]!r}")
            continue
        thread_s, sep, seq_s = message.partition(":")
        if not (sep and thread_s.isdigit() and seq_s.partition(":")[0].isdigit()):
            errors.append(f"torn message {message[:40]!r}")
            continue
        seq_s, _, padding = seq_s.partition(":")
        thread, seq = int(thread_s), int(seq_s)
        if padding != "p" * (seq * 7919 % rec.int_param("pad", 1)):
            errors.append(f"thread {thread}, {seq}: bad padding ({len(padding)} chars)")
        want = next_seq.get(thread, 0)
        if seq != want:
            errors.append(f"thread {thread}: got {seq}, expected {want}")
        next_seq[thread] = seq + 1
        if count % ACK_EVERY == 0:
            await ws.send(f"ack:{count}")
    await ws.send(json.dumps({"count": count, "errors": errors[:20], "next": next_seq}))
    await ws.close(1000, "verified")


def run_senders(
    server: WSServer, threads: int, per_thread: int, pad: int, compress: bool
) -> None:
    server.add_behaviour("/verify", verify)
    websocket = WebSocket(
        server.url_for(f"/verify?threads={threads}&per_thread={per_thread}&pad={pad}"),
        compress=compress,
    )
    failures: List[BaseException] = []
    senders: List[threading.Thread] = []
    start = threading.Event()

    def sender(thread: int) -> None:
        start.wait(5)
        try:
            for seq in range(per_thread):
                if pad > 1:
                    websocket.send_text(f"{thread}:{seq}:" + "p" * (seq * 7919 % pad))
                else:
                    websocket.send_text(f"{thread}:{seq}")
        except BaseException as error:
            failures.append(error)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            assert websocket.supports_compression == compress
            for index in range(threads):
                thread = threading.Thread(target=sender, args=(index,), daemon=True)
                senders.append(thread)
                thread.start()
            start.set()  # all at once, to contend for the send lock

    run = collect(websocket, on_event, timeout=60, poll=30)
    for thread in senders:
        thread.join(10)
        assert not thread.is_alive()
    assert failures == []
    texts = [event.text for event in run.of(events.Text)]
    acks = [text for text in texts if text.startswith("ack:")]
    total = threads * per_thread
    # The loop received while the threads were sending.
    assert acks == [f"ack:{n}" for n in range(ACK_EVERY, total + 1, ACK_EVERY)]
    summary = json.loads(texts[-1])
    assert summary["errors"] == []
    assert summary["count"] == total
    assert summary["next"] == {str(i): per_thread for i in range(threads)}
    assert run.names[-2:] == ["closing", "disconnected"]
    assert run.first(events.Closing).code == 1000
    assert run.first(events.Disconnected).graceful


def test_eight_threads_times_ten_thousand_messages(ws_server: WSServer) -> None:
    """The issue's case: 80,000 small ``thread:seq`` messages, uncompressed."""
    run_senders(ws_server, THREADS, PER_THREAD, pad=1, compress=False)


def test_eight_threads_large_compressed_messages(ws_server: WSServer) -> None:
    """Messages up to 256 KiB, so writes are partial and threads wait for buffer
    space, and compressed, so they share the compressor: frames must still leave
    whole and in the compressor's order."""
    run_senders(ws_server, THREADS, 250, pad=256 * 1024, compress=True)
