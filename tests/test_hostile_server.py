"""A hostile or broken server, scripted byte by byte (issue 7).

Every case must end in the documented events (see :mod:`lomond.events`) with
a clear reason, with the right close code sent where a Close is possible (the
scripted server reads it), with no exception out of the loop and no hang
(:func:`core_helpers.collect` has a watchdog and checks the event order).

Already covered elsewhere, not repeated here: a wrong ``Sec-WebSocket-Accept``
(test_websocket.py::test_rejected_bad_accept), an unoffered subprotocol
(test_websocket.py::test_rejected_unoffered_subprotocol), an SSH banner
instead of HTTP (test_websocket.py::test_garbage_answer_is_connect_fail),
invalid UTF-8 in a single text frame (test_websocket.py::
test_invalid_utf8_from_the_server), a server that never answers our Close
(test_session.py::test_close_timeout_when_the_server_never_answers).
"""

from __future__ import annotations

import threading
import time
import tracemalloc
import zlib
from typing import Any, List, Optional, Tuple

import pytest
from core_helpers import collect
from peers.raw_server import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    RawConnection,
    build_frame,
    close_payload,
)

from lomond import WebSocket, events
from lomond.persist import persist
from lomond.wakeup import StopSignal

# -- frame-level violations after a good handshake --------------------------------------

#: name -> (bytes the server sends after the handshake, close code, critical,
#: a word the error must contain). ``critical`` is False throughout: before
#: our own Close, every violation is answered with a Close frame carrying the
#: code (RFC 6455 7.1.7), which the script checks on the wire.
BAD_FRAMES = {
    "masked frame": (build_frame(TEXT, b"hi", mask=True), 1002, False, "masked"),
    "reserved data opcode 0x3": (build_frame(0x3, b"?"), 1002, False, "opcode"),
    "reserved control opcode 0xB": (build_frame(0xB, b""), 1002, False, "opcode"),
    "rsv1 without an extension": (build_frame(TEXT, b"x", rsv1=True), 1002, False, "reserved"),
    "rsv2": (build_frame(BINARY, b"x", rsv2=True), 1002, False, "reserved"),
    "rsv3": (build_frame(BINARY, b"x", rsv3=True), 1002, False, "reserved"),
    "length 2**63": (
        build_frame(BINARY, b"", length_override=2**63, length_form=64), 1009, False,
        "significant bit",
    ),
    "length 2**64-1": (
        build_frame(BINARY, b"", length_override=2**64 - 1, length_form=64), 1009, False,
        "significant bit",
    ),
    "length 2**63-1 over max_size": (
        build_frame(BINARY, b"", length_override=2**63 - 1, length_form=64), 1009, False,
        "max_size",
    ),
    "ping of 126 bytes": (build_frame(PING, b"p" * 126), 1002, False, "125"),
    "pong with a 64-bit length": (
        build_frame(PONG, b"", length_override=1 << 40, length_form=64), 1002, False, "125",
    ),
    "close of 126 bytes": (
        build_frame(CLOSE, close_payload(1000, "r" * 124)), 1002, False, "125",
    ),
    "fragmented ping": (build_frame(PING, b"x", fin=False), 1002, False, "fragmented"),
    "invalid UTF-8 across fragments": (
        build_frame(TEXT, b"caf", fin=False)
        + build_frame(CONTINUATION, b"\xc3", fin=False)
        + build_frame(CONTINUATION, b"(", fin=True),
        1007, False, "UTF-8",
    ),
    "UTF-8 truncated at the end of a message": (
        build_frame(TEXT, "é".encode()[:1]), 1007, False, "UTF-8",
    ),
    "surrogate encoded in UTF-8": (build_frame(TEXT, b"\xed\xa0\x80"), 1007, False, "UTF-8"),
    "invalid UTF-8 in a close reason": (
        build_frame(CLOSE, close_payload(1000, b"\xff\xfe")), 1007, False, "UTF-8",
    ),
    "one-byte close payload": (build_frame(CLOSE, b"\x03"), 1002, False, "1-byte"),
    "continuation without a message": (
        build_frame(CONTINUATION, b"x"), 1002, False, "continuation",
    ),
    "new message inside a fragmented one": (
        build_frame(TEXT, b"a", fin=False) + build_frame(BINARY, b"b"), 1002, False,
        "fragmented",
    ),
    "single frame over max_size": (build_frame(BINARY, b"\0" * 2000), 1009, False, "max_size"),
    "fragments over max_size": (
        build_frame(BINARY, b"\0" * 600, fin=False) + build_frame(CONTINUATION, b"\0" * 600),
        1009, False, "max_size",
    ),
}
for _code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535):
    BAD_FRAMES[f"close code {_code}"] = (
        build_frame(CLOSE, close_payload(_code, "x")), 1002, False, f"close code {_code}",
    )


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_bad_frame_fails_the_connection_with_the_right_code(
    scripted_server: Any, name: str
) -> None:
    data, code, critical, word = BAD_FRAMES[name]

    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_frame(TEXT, b"before")
        conn.send_raw(data)
        close = conn.recv_close()
        tail = conn.expect_eof()  # the client drops the connection after its Close
        return close, tail

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/"), max_size=1024))
    assert run.names == [
        "connecting", "connected", "ready", "poll", "text", "protocol_error", "disconnected",
    ]
    assert run.first(events.Text).text == "before"  # what came first is not lost
    error = run.first(events.ProtocolError)
    assert (error.code, error.critical) == (code, critical), error
    assert word.lower() in error.error.lower(), error.error
    disconnected = run.first(events.Disconnected)
    assert disconnected.graceful is False
    assert "protocol error" in disconnected.reason and word.lower() in disconnected.reason.lower()
    close, tail = server.result()
    assert close is not None and close[0] == code, close
    assert tail == b"", "nothing may follow the Close frame"


def test_valid_close_codes_are_accepted(scripted_server: Any) -> None:
    """The counterpart of the table above: codes a server may send are not violations."""
    for code in (1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999):

        def script(conn: RawConnection, code: int = code) -> Any:
            conn.handshake()
            conn.send_close(code, "ok")
            return conn.recv_close()

        server = scripted_server(script)
        run = collect(WebSocket(server.url_for("/")))
        assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
        assert (run.first(events.Closing).code, run.first(events.Closing).reason) == (code, "ok")
        assert server.result() == (code, "")


# -- bad opening handshakes ------------------------------------------------------------


def _flood(conn: RawConnection, first: bytes, line: bytes, limit: int = 8 << 20) -> int:
    """Send ``first`` then ``line`` forever (up to ``limit`` bytes) until the client drops."""
    sent = 0
    try:
        conn.send_raw(first)
        while sent < limit:
            conn.send_raw(line)
            sent += len(line)
    except OSError:
        return sent
    return sent


@pytest.mark.parametrize(
    "first, line",
    [
        (b"HTTP/1.1 101 Switching Protocols\r\n", b"X-Filler: " + b"a" * 1000 + b"\r\n"),
        (b"", bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"") * 4),
    ],
    ids=["header block that never ends", "binary garbage"],
)
def test_endless_response_header_block(scripted_server: Any, first: bytes, line: bytes) -> None:
    def script(conn: RawConnection) -> int:
        conn.read_request()
        return _flood(conn, first, line)

    server = scripted_server(script)
    start = time.monotonic()
    run = collect(WebSocket(server.url_for("/")))
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]
    assert "65536" in run.first(events.ConnectFail).reason
    assert time.monotonic() - start < 3.0
    # The client stopped reading soon after 64 KiB (plus what socket buffers hold).
    assert server.result() < 8 << 20


def _handshake_with(headers: List[Tuple[str, str]]) -> Any:
    def script(conn: RawConnection) -> Any:
        conn.handshake(extra_headers=headers)
        # The client must not send frames: it drops the connection.
        return conn.expect_eof()

    return script


@pytest.mark.parametrize(
    "compress, headers, word",
    [
        (False, [("Sec-WebSocket-Extensions", "permessage-deflate")], "not offered"),
        (True, [("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")], "not offered"),
        (True, [("Sec-WebSocket-Extensions", "permessage-deflate, permessage-deflate")],
         "more than one"),
        (True, [("Sec-WebSocket-Extensions", "permessage-deflate; evil=1")], "unknown"),
        (True, [("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=99")],
         "window"),
        (False, [("Sec-WebSocket-Protocol", "chat")], "protocol"),
    ],
    ids=["extension not offered", "other extension", "two extensions", "unknown parameter",
         "bad window bits", "subprotocol when none offered"],
)
def test_unrequested_extension_or_subprotocol_is_rejected(
    scripted_server: Any, compress: bool, headers: List[Tuple[str, str]], word: str
) -> None:
    server = scripted_server(_handshake_with(headers))
    run = collect(WebSocket(server.url_for("/"), compress=compress))
    assert run.names == ["connecting", "connected", "rejected", "disconnected"]
    assert word in run.first(events.Rejected).reason.lower()
    assert server.result() == b""  # no frame, not even a Close, before the handshake is done


# -- decompression bomb ---------------------------------------------------------------

BOMB_SIZE = 100 * 1024 * 1024
_bomb: List[bytes] = []


def bomb() -> bytes:
    """100 MiB of zeros, raw-deflated (about 100 KB), without the 4-byte tail."""
    if not _bomb:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        chunk = bytes(1 << 20)
        parts = [compressor.compress(chunk) for _ in range(BOMB_SIZE >> 20)]
        parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
        _bomb.append(b"".join(parts)[:-4])
    return _bomb[0]


@pytest.mark.parametrize("fragments", [1, 50])
def test_decompression_bomb_is_stopped_at_max_size(scripted_server: Any, fragments: int) -> None:
    data = bomb()
    assert len(data) < 200_000
    if fragments == 1:
        wire = build_frame(BINARY, data, rsv1=True)
    else:
        step = len(data) // fragments + 1
        pieces = [data[i:i + step] for i in range(0, len(data), step)]
        wire = build_frame(BINARY, pieces[0], rsv1=True, fin=False)
        wire += b"".join(build_frame(CONTINUATION, p, fin=False) for p in pieces[1:-1])
        wire += build_frame(CONTINUATION, pieces[-1])

    def script(conn: RawConnection) -> Any:
        request = conn.handshake(
            extra_headers={"Sec-WebSocket-Extensions": "permessage-deflate"}
        )
        assert "permessage-deflate" in (request.headers.get("Sec-WebSocket-Extensions") or "")
        try:
            conn.send_raw(wire)
        except OSError:
            pass  # the client may drop before reading all the fragments
        return conn.recv_close()

    server = scripted_server(script)
    tracemalloc.start()
    try:
        run = collect(WebSocket(server.url_for("/"), compress=True, max_size=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.names == [
        "connecting", "connected", "ready", "poll", "protocol_error", "disconnected",
    ]
    error = run.first(events.ProtocolError)
    assert error.code == 1009 and not error.critical
    assert "limit" in error.error
    # Everything allocated in this process (server thread included) stayed far
    # below the 100 MiB the bomb inflates to: about max_size plus buffers.
    assert peak < 12 * 1024 * 1024, f"peak allocation {peak / 2**20:.1f} MiB"
    assert server.result() == (1009, "message inflates to more than the 1048576 byte limit")


# -- slow and half-dead servers ---------------------------------------------------------


def trickle_script(
    answer_close: bool, received: List[float], closes: Optional[List[Any]] = None
) -> Any:
    """Trickle one frame a byte per second; check for the client's Close in between.

    When the Close arrives: if ``answer_close``, send the rest of the frame at
    once and answer the Close; otherwise go on trickling, never answering.
    """
    frame = build_frame(TEXT, b"drip " * 20)
    closes = [] if closes is None else closes

    def script(conn: RawConnection) -> Any:
        conn.handshake()
        for index in range(len(frame)):
            conn.send_raw(frame[index:index + 1])
            try:
                close = conn.recv_close(timeout=1.0)
            except TimeoutError:
                continue
            received.append(time.monotonic())
            closes.append(close)
            if not answer_close:
                conn.hold(10)  # ignore it, keep the connection open
                return close
            conn.send_raw(frame[index + 1:])
            conn.send_close(*close)
            return close  # the server closes TCP first (RFC 6455 section 7.1.1)
        raise AssertionError("the client never sent a Close")

    return script


def test_trickled_frame_does_not_delay_close_from_another_thread(scripted_server: Any) -> None:
    received: List[float] = []
    server = scripted_server(trickle_script(True, received))
    websocket = WebSocket(server.url_for("/"))
    timing = {}

    def closer() -> None:
        timing["called"] = time.monotonic()
        websocket.close(1001, "leaving")
        timing["returned"] = time.monotonic()

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            timer = threading.Timer(1.5, closer)  # a few bytes are in by then
            timer.daemon = True
            timer.start()

    run = collect(websocket, on_event, close_timeout=5)
    assert timing["returned"] - timing["called"] < 0.2, "close() blocked"
    assert received and received[0] - timing["called"] < 0.5, "the Close left late"
    assert run.names == [
        "connecting", "connected", "ready", "poll", "text", "closed", "disconnected",
    ]
    assert run.first(events.Text).text == "drip " * 20
    finished = run.times[-1]
    assert finished - timing["called"] < 1.5
    assert run.first(events.Disconnected).graceful
    assert server.result() == (1001, "leaving")


def test_trickling_server_ignoring_close_is_dropped_after_close_timeout(
    scripted_server: Any,
) -> None:
    received: List[float] = []
    closes: List[Any] = []
    server = scripted_server(trickle_script(False, received, closes))
    websocket = WebSocket(server.url_for("/"))
    timing = {}

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            timing["closed"] = time.monotonic()
            threading.Thread(target=websocket.close, daemon=True).start()

    run = collect(websocket, on_event, close_timeout=1.0)
    assert run.names == ["connecting", "connected", "ready", "poll", "disconnected"]
    elapsed = run.times[-1] - timing["closed"]
    assert 0.9 <= elapsed < 2.0, elapsed
    assert "close timeout" in run.first(events.Disconnected).reason
    assert closes == [(1000, "goodbye")]


def test_trickled_frame_does_not_delay_a_persist_exit(scripted_server: Any) -> None:
    received: List[float] = []
    server = scripted_server(trickle_script(True, received))
    websocket = WebSocket(server.url_for("/"))
    exit_event = StopSignal()  # wakes the connection (a threading.Event waits for an event)
    seen: List[str] = []
    start = time.monotonic()
    set_at: List[float] = []
    for event in persist(websocket, poll=30, ping_rate=0, min_wait=0.1, max_wait=0.1,
                         exit_event=exit_event, close_timeout=5):
        seen.append(event.name)
        if isinstance(event, events.Ready):
            def stop() -> None:
                set_at.append(time.monotonic())
                exit_event.set()

            timer = threading.Timer(1.5, stop)
            timer.daemon = True
            timer.start()
        assert time.monotonic() - start < 10, seen
    ended = time.monotonic()
    # The last event is the BackOff the loop waited on, as in Lomond 0.3.4 (issue 20).
    assert seen == ["connecting", "connected", "ready", "poll", "text", "closed", "disconnected",
                    "back_off"]
    assert ended - set_at[0] < 1.5
    assert received[0] - set_at[0] < 0.5
    assert server.result() == (1000, "goodbye")


def test_half_close_without_a_close_frame(scripted_server: Any) -> None:
    """FIN from the server, mid-message: no message, not graceful, and the client closes."""

    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_text("complete")
        conn.send_raw(build_frame(TEXT, b"partial message")[:8])
        conn.shutdown_write()
        return conn.expect_eof()  # the client must close its side, sending nothing

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "text", "disconnected"]
    disconnected = run.first(events.Disconnected)
    assert not disconnected.graceful
    assert "without a close frame" in disconnected.reason
    assert server.result() == b""


def test_half_close_after_a_close_frame_is_graceful(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_close(1001, "going away")
        conn.shutdown_write()
        close = conn.recv_close()
        return close, conn.expect_eof()

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
    assert run.first(events.Disconnected).graceful
    assert server.result() == ((1001, ""), b"")


@pytest.mark.parametrize("where", ["in the header", "in the payload", "in a fragment"])
def test_tcp_reset_in_the_middle_of_a_message(scripted_server: Any, where: str) -> None:
    big = build_frame(BINARY, b"z" * 100_000)
    partial = {
        "in the header": big[:3],
        "in the payload": big[:50_000],
        "in a fragment": build_frame(TEXT, b"first half ", fin=False) + b"\x80",
    }[where]

    def script(conn: RawConnection) -> None:
        conn.handshake()
        conn.send_text("whole")
        conn.send_raw(partial)
        conn.sleep(0.2)  # let the client take the bytes: a RST can discard unread data
        conn.reset()

    run = collect(WebSocket(scripted_server(script).url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "text", "disconnected"]
    disconnected = run.first(events.Disconnected)
    assert not disconnected.graceful
    assert "ECONNRESET" in disconnected.reason or "reset" in disconnected.reason.lower()


def test_reset_during_the_handshake_is_connect_fail(scripted_server: Any) -> None:
    def script(conn: RawConnection) -> None:
        conn.read_request()
        conn.send_raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
        conn.sleep(0.2)
        conn.reset()

    run = collect(WebSocket(scripted_server(script).url_for("/")))
    assert run.names == ["connecting", "connected", "connect_fail", "disconnected"]
    assert "handshake" in run.first(events.ConnectFail).reason


def test_server_keeps_talking_after_its_close(scripted_server: Any) -> None:
    """Frames (even garbage) after the server's Close are not data (RFC 6455 5.5.1)."""

    def script(conn: RawConnection) -> Any:
        conn.handshake()
        conn.send_close(1000, "done")
        conn.send_text("after close")
        conn.send_raw(b"\xff" * 64)
        return conn.recv_close()

    server = scripted_server(script)
    run = collect(WebSocket(server.url_for("/")))
    assert run.names == ["connecting", "connected", "ready", "poll", "closing", "disconnected"]
    assert run.first(events.Disconnected).graceful
    assert server.result() == (1000, "")
