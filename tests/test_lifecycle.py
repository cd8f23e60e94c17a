"""lomond.lifecycle.Lifecycle, without sockets or sleeps.

A fake clock drives the timers, a fake non-blocking ``write`` takes as many
bytes as a test allows (or fails), and what the lifecycle wrote is read back
by a real server-side :class:`~lomond.protocol.Protocol`, so each test checks
the frames on the wire. The drivers' loops over this object are tested
against real peers in test_session.py and handlers/test_hub.py.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import pytest
from core_helpers import server_frame, server_response

from lomond import events
from lomond.errors import TransportFail, WebSocketClosed, WebSocketUnavailable
from lomond.frame import Opcode
from lomond.handshake import parse_url
from lomond.lifecycle import Buffer, Lifecycle
from lomond.options import ConnectOptions
from lomond.protocol import ClientProtocol, Protocol, Side, State, encode_close
from lomond.wakeup import StopSignal

URL = "ws://example.com/feed"
#: Every timer off, so each test turns on the ones it is about.
QUIET = dict(poll=0, ping_rate=0, ping_timeout=None, close_timeout=None)
T0 = 1024.0  # an arbitrary monotonic time; steps are exact binary fractions


class Clock:
    """The driver's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeSocket:
    """The driver's non-blocking write: takes at most ``room`` bytes in all (``None``: any)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.room: Optional[int] = None
        self.error: Optional[OSError] = None
        #: Raised once right after the bytes were taken: a Ctrl-C landing
        #: between a write and the caller's bookkeeping of it.
        self.interrupt_after: Optional[BaseException] = None

    def write(self, data: Buffer) -> int:
        if self.error is not None:
            raise self.error
        taken = len(data) if self.room is None else min(self.room, len(data))
        if self.room is not None:
            self.room -= taken
        self.data += bytes(data[:taken])
        interrupt, self.interrupt_after = self.interrupt_after, None
        if interrupt is not None:
            raise interrupt
        return taken

    def frames(self) -> List[events.Event]:
        """What the server reads from everything written after the upgrade request."""
        end = self.data.find(b"\r\n\r\n")
        assert self.data.startswith(b"GET ") and end > 0, bytes(self.data[:60])
        server = Protocol(Side.SERVER, max_size=None)
        return server.receive_data(bytes(self.data[end + 4:]))


class Harness:
    def __init__(self, send_timeout: float = 30.0, **options: Any) -> None:
        self.clock = Clock()
        self.sock = FakeSocket()
        self.wakes = 0
        self.stop = StopSignal()
        self.responses: List[Any] = []
        self.protocol = ClientProtocol(parse_url(URL), max_size=None)
        self.lifecycle = Lifecycle(
            self.protocol,
            ConnectOptions(**{**QUIET, **options}),
            url=URL,
            send_timeout=send_timeout,
            waker=self,
            clock=self.clock,
            stop=self.stop,
            on_response=self.responses.append,
        )

    def wake(self) -> None:
        self.wakes += 1

    def deliver(self, batch: Any) -> List[events.Event]:
        """Deliver ``batch`` as a driver does: each event, then what follows it."""
        seen: List[events.Event] = []
        for event in batch:
            seen.append(event)
            seen.extend(self.lifecycle.delivered(event))
        return seen

    def connect(self) -> List[events.Event]:
        """Connecting, Connected (the upgrade goes out), then the server's 101."""
        lifecycle = self.lifecycle
        seen = self.deliver(lifecycle.begin())
        seen += self.deliver(lifecycle.connected(self.sock.write))
        seen += self.deliver(lifecycle.receive_data(server_response(self.protocol)))
        return seen

    def later(self, seconds: float) -> Tuple[events.Event, ...]:
        self.clock.now += seconds
        return tuple(self.lifecycle.service())

    def end(self) -> List[events.Event]:
        assert self.lifecycle.ending
        return self.lifecycle.finish()


def names(seen: Any) -> List[str]:
    return [event.name for event in seen]


def same(seen: Any, expected: Any) -> bool:
    """Whether two event sequences match field for field (events compare by identity)."""
    return [repr(event) for event in seen] == [repr(event) for event in expected]


# -- the first events ----------------------------------------------------------------


def test_the_upgrade_goes_out_once_the_connected_handlers_ran() -> None:
    h = Harness()
    assert names(h.lifecycle.begin()) == ["connecting"]
    connected = h.lifecycle.connected(h.sock.write, "http://proxy:3128")
    assert same(connected, [events.Connected(URL, "http://proxy:3128")])
    assert h.sock.data == b""  # a Connected handler may still close instead
    h.deliver(connected)
    assert h.sock.data.startswith(b"GET /feed HTTP/1.1\r\n")


def test_a_close_in_a_connected_handler_sends_no_upgrade() -> None:
    h = Harness()
    h.deliver(h.lifecycle.begin())
    connected = h.lifecycle.connected(h.sock.write)
    h.lifecycle.close()  # from the Connected handler
    h.deliver(connected)
    assert h.sock.data == b""
    assert h.lifecycle.service() == () and h.lifecycle.ending
    final = h.end()
    assert names(final) == ["connect_fail", "disconnected"]
    assert final[0].reason == "closed before the connection was ready"  # type: ignore[attr-defined]


def test_an_abort_gives_its_reason_to_the_failed_connect() -> None:
    h = Harness()
    h.lifecycle.begin()
    assert not h.lifecycle.aborted()
    h.stop.set()
    assert h.wakes == 1  # the stop woke the driver (the connect's wait)
    assert h.lifecycle.aborted()
    final = h.lifecycle.connect_failed("connect timed out")
    assert same(final, [events.ConnectFail("stopped before the connection was ready")])
    assert h.lifecycle.over
    wakes = h.wakes
    h.stop.clear()
    h.stop.set()
    assert h.wakes == wakes  # detached once over


def test_ready_starts_the_timers_and_brings_the_first_poll() -> None:
    h = Harness(poll=4.0, ping_rate=8.0)
    seen = h.connect()
    assert names(seen) == ["connecting", "connected", "ready", "poll"]
    assert h.responses == [seen[2].response]  # type: ignore[attr-defined]
    # The first ping is due at once (as Lomond 0.3.4 sends it), then every 8 s.
    assert h.lifecycle.deadline() == T0
    assert h.later(0) == ()
    assert names(h.sock.frames()) == ["ping"]
    assert h.lifecycle.deadline() == T0 + 4.0
    assert names(h.later(4.0)) == ["poll"]
    assert same(h.later(4.0), [events.Poll()])
    assert names(h.sock.frames()) == ["ping", "ping"]  # the ping at 8 s went out too


# -- pings, pongs and Unresponsive ------------------------------------------------------


def test_no_pong_within_ping_timeout_is_unresponsive() -> None:
    h = Harness(ping_rate=1.0, ping_timeout=2.0)
    h.connect()
    assert h.later(1.0) == ()
    assert names(h.sock.frames()) == ["ping"]
    assert h.lifecycle.deadline() == T0 + 2.0  # the next ping
    h.later(1.0)
    assert names(h.later(1.0)) == ["unresponsive"]
    final = h.end()
    assert same(final, [events.Disconnected("unresponsive: no pong within 2 s", graceful=False)])


def test_a_pong_resets_the_ping_timeout() -> None:
    h = Harness(ping_rate=1.0, ping_timeout=1.5)
    h.connect()
    h.later(1.0)
    h.deliver(h.lifecycle.receive_data(server_frame(Opcode.PONG)))
    assert h.later(1.0) == () and not h.lifecycle.ending


def test_the_pong_goes_out_before_later_events_are_delivered() -> None:
    h = Harness()
    h.connect()
    data = server_frame(Opcode.PING, b"p") + server_frame(Opcode.TEXT, b"t")
    batch = h.lifecycle.receive_data(data)
    assert names(batch) == ["ping", "text"]
    h.deliver(batch[:1])
    assert same(h.sock.frames(), [events.Pong(b"p")])  # before the Text is delivered


# -- closing --------------------------------------------------------------------------


def test_the_close_echo_follows_what_the_closing_handlers_sent() -> None:
    h = Harness()
    h.connect()
    closing = h.deliver(h.lifecycle.receive_data(server_frame(Opcode.CLOSE, encode_close(1001))))
    assert same(closing, [events.Closing(1001, "")])
    h.lifecycle.send_message(Opcode.TEXT, b"last words")  # from the Closing handler
    assert h.lifecycle.service() == ()
    assert same(h.sock.frames(), [events.Text("last words"), events.Closing(1001, "")])
    # The client waits for the server to close TCP (RFC 6455 section 7.1.1).
    assert not h.lifecycle.ending
    h.lifecycle.receive_eof()
    h.lifecycle.service()
    assert same(h.end(), [events.Disconnected("closed", graceful=True)])


def test_a_stop_request_closes_with_1000() -> None:
    h = Harness()
    h.connect()
    h.stop.set()
    assert h.wakes >= 1
    h.lifecycle.service()
    assert same(h.sock.frames(), [events.Closing(1000, "goodbye")])
    assert h.lifecycle.close_sent_at == T0


def test_the_close_timeout_ends_an_unanswered_close() -> None:
    h = Harness(close_timeout=2.0)
    h.connect()
    h.lifecycle.close(1000, "bye")
    assert h.later(1.0) == () and h.lifecycle.deadline() == T0 + 2.0
    h.later(1.0)
    assert same(h.end(), [events.Disconnected(
        "close timeout: the server did not complete the close handshake", graceful=False
    )])


def test_abandon_sends_a_single_close_1001() -> None:
    h = Harness()
    h.connect()
    h.lifecycle.abandon()
    h.lifecycle.abandon()
    assert same(h.sock.frames(), [events.Closing(1001, "going away")])


def test_close_goes_out_behind_a_stuck_send_and_returns_at_once() -> None:
    h = Harness(close_timeout=4.0)
    h.connect()
    h.sock.room = 100
    h.lifecycle.send_message(Opcode.BINARY, b"x" * 1000)
    wakes = h.wakes
    assert h.lifecycle.pending_output > 0 and h.lifecycle.wants_write
    h.lifecycle.close()  # does not wait for the socket
    assert h.wakes > wakes
    h.later(4.0)  # counted from close(), not from when the Close leaves
    assert h.lifecycle.ending and h.lifecycle.end_reason is not None
    assert "close timeout" in h.lifecycle.end_reason


# -- the send queue -----------------------------------------------------------------------


def test_queued_frames_are_written_in_order_when_the_socket_takes_them() -> None:
    h = Harness()
    h.connect()
    written = len(h.sock.data)
    h.sock.room = 3
    for number in range(5):
        h.lifecycle.send_message(Opcode.TEXT, f"message {number}".encode())
    assert h.lifecycle.pending_output == sum(len(f"message {n}") + 6 for n in range(5)) - 3
    h.sock.room = None
    h.lifecycle.flush()
    assert h.lifecycle.pending_output == 0 and not h.lifecycle.wants_write
    assert len(h.sock.data) > written
    assert same(h.sock.frames(), [events.Text(f"message {n}") for n in range(5)])


def test_a_server_that_reads_nothing_times_the_send_out() -> None:
    h = Harness(send_timeout=8.0)
    h.connect()
    h.sock.room = 0
    h.lifecycle.send_message(Opcode.BINARY, b"x")
    assert h.lifecycle.deadline() == T0 + 8.0
    h.later(8.0)
    reason = "send timed out after 8 s: the server is not reading"
    assert h.lifecycle.send_failure == reason
    assert same(h.end(), [events.Disconnected(reason, graceful=False)])
    assert h.lifecycle.pending_output == 1 + 6  # what was left unsent


def test_a_failed_write_drops_the_connection_and_says_why() -> None:
    h = Harness()
    h.connect()
    h.sock.error = BrokenPipeError(32, "Broken pipe")
    with pytest.raises(TransportFail, match=r"send failed: Broken pipe \(EPIPE\)"):
        h.lifecycle.send_message(Opcode.TEXT, b"lost")
    assert h.lifecycle.dropped == h.lifecycle.send_failure == "send failed: Broken pipe (EPIPE)"
    with pytest.raises(WebSocketClosed):
        h.lifecycle.send_message(Opcode.TEXT, b"again")
    h.lifecycle.service()
    assert h.end()[-1].reason == "send failed: Broken pipe (EPIPE)"  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["flush", "partial flush", "send"])
def test_a_write_cut_short_by_ctrl_c_writes_nothing_more(where: str) -> None:
    # The torture test's repeated messages: a KeyboardInterrupt right after a
    # flush's write left the written chunk queued, and a sender's flush wrote
    # it again. What reached the socket is unknown then: nothing more goes out.
    h = Harness()
    h.connect()
    if where != "send":
        h.sock.room = 3
        h.lifecycle.send_message(Opcode.TEXT, b"first")  # 3 bytes out, the rest queued
        h.sock.room = 2 if where == "partial flush" else None
    h.sock.interrupt_after = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        if where != "send":
            h.lifecycle.flush()
        else:
            h.lifecycle.send_message(Opcode.TEXT, b"second")
    written = bytes(h.sock.data)
    reason = "send failed: a write was interrupted (what reached the socket is unknown)"
    assert h.lifecycle.send_failure == h.lifecycle.dropped == reason
    h.lifecycle.flush()
    with pytest.raises(WebSocketClosed):
        h.lifecycle.send_message(Opcode.TEXT, b"third")
    h.lifecycle.close()
    h.lifecycle.abandon()
    assert bytes(h.sock.data) == written  # nothing written twice, nothing after
    h.lifecycle.service()
    assert h.end()[-1].reason == reason  # type: ignore[attr-defined]


def test_sends_are_refused_before_the_socket_and_after_the_end() -> None:
    h = Harness()
    h.lifecycle.begin()
    with pytest.raises(WebSocketUnavailable, match="not connected yet"):
        h.lifecycle.send_message(Opcode.TEXT, b"early")
    h.lifecycle.connected(h.sock.write)
    with pytest.raises(WebSocketUnavailable, match="not ready yet"):
        h.lifecycle.send_message(Opcode.TEXT, b"still early")
    h.lifecycle.drop("test over")
    h.lifecycle.service()
    h.end()
    with pytest.raises(WebSocketClosed):
        h.lifecycle.send_control(Opcode.PING, b"")
    assert h.protocol.state is State.CLOSED


# -- the handshake ----------------------------------------------------------------------


def test_no_answer_to_the_upgrade_within_handshake_timeout() -> None:
    h = Harness(handshake_timeout=2.0)
    h.deliver(h.lifecycle.begin())
    h.lifecycle.timers.handshake_started(T0)
    h.deliver(h.lifecycle.connected(h.sock.write))
    assert h.later(1.0) == ()
    h.later(1.0)
    final = h.end()
    reason = "no response to the upgrade request within 2 s"
    assert same(final, [events.ConnectFail(reason), events.Disconnected(reason, graceful=False)])
