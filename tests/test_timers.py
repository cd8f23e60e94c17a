"""lomond.timers.ConnectionTimers: which timer fires when, with explicit times.

Nothing sleeps: each test passes ``now`` itself and drives a real
:class:`~lomond.protocol.ClientProtocol` with the bytes a server would send
(the upgrade response, Close frames), so the timers see the same protocol
states as in a connection. The integration tests (test_session.py,
test_network_faults.py) check that the threaded session acts on what these
timers say; the deadlines themselves are checked here, exactly.
"""

from __future__ import annotations

from typing import List, Optional

import pytest
from core_helpers import open_protocol, server_frame, server_response

from lomond import events
from lomond.frame import Opcode
from lomond.handshake import parse_url
from lomond.options import ConnectOptions
from lomond.protocol import ClientProtocol, State, encode_close
from lomond.timers import INFINITY, ConnectionTimers, Due

#: Everything off, so each test turns on the one timer it is about.
QUIET = dict(poll=0, ping_rate=0, ping_timeout=None, close_timeout=None)

#: An arbitrary monotonic time. Times in these tests are sums of binary
#: fractions (0.25, 0.125, ...), exact in floating point, so each test checks
#: the timer logic and not the rounding of ``now - sent_at``.
T0 = 1024.0


def timers_for(**options: object) -> ConnectionTimers:
    settings = {**QUIET, **options}
    return ConnectionTimers(ConnectOptions(**settings))  # type: ignore[arg-type]


def all_due(timers: ConnectionTimers, protocol: ClientProtocol, now: float) -> List[Due]:
    """Every timer due at ``now``, as a driver collects them (call until None)."""
    fired: List[Due] = []
    for _ in range(10):
        due = timers.due(protocol, now)
        if due is None:
            return fired
        fired.append(due)
        if due in (Due.HANDSHAKE_TIMEOUT, Due.CLOSE_TIMEOUT, Due.UNRESPONSIVE):
            return fired  # the connection ends: a driver stops asking
    raise AssertionError(f"due() keeps firing: {fired}")


def close_from_server(code: int = 1000) -> bytes:
    return server_frame(Opcode.CLOSE, encode_close(code))


# -- the handshake timeout -------------------------------------------------------------


def test_handshake_timeout_counts_from_when_the_handshake_started() -> None:
    timers = timers_for(handshake_timeout=0.8)
    protocol = ClientProtocol(parse_url("wss://example.com/"))
    # Before TLS (or, for ws://, the upgrade) began, nothing can time out.
    assert timers.deadline(protocol) == INFINITY
    assert timers.due(protocol, T0 + 10_000) is None
    timers.handshake_started(T0)
    assert timers.deadline(protocol) == T0 + 0.8
    assert timers.due(protocol, T0 + 0.75) is None
    assert timers.due(protocol, T0 + 0.8) is Due.HANDSHAKE_TIMEOUT


def test_a_trickled_response_does_not_extend_the_handshake_timeout() -> None:
    """The budget is total, not per read: header bytes arriving do not move it."""
    timers = timers_for(handshake_timeout=0.8)
    protocol = ClientProtocol(parse_url("ws://example.com/"))
    timers.handshake_started(T0)
    response = server_response(protocol)
    for n, byte in enumerate(response[:-1]):  # all but the last byte, one at a time
        assert protocol.receive_data(bytes([byte])) == []
        assert timers.due(protocol, T0 + 0.7 * n / len(response)) is None
    assert protocol.state is State.CONNECTING
    assert timers.deadline(protocol) == T0 + 0.8
    assert timers.due(protocol, T0 + 0.8) is Due.HANDSHAKE_TIMEOUT


def test_handshake_timeout_no_longer_applies_once_ready() -> None:
    timers = timers_for(handshake_timeout=0.8)
    protocol = ClientProtocol(parse_url("ws://example.com/"))
    timers.handshake_started(T0)
    ready = protocol.receive_data(server_response(protocol))
    assert [type(e) for e in ready] == [events.Ready]
    timers.ready(T0 + 0.5)
    assert timers.due(protocol, T0 + 100) is None
    assert timers.deadline(protocol) == INFINITY


# -- polls -----------------------------------------------------------------------------


def test_first_poll_right_after_ready_then_every_poll_seconds() -> None:
    timers = timers_for(poll=5)
    protocol = open_protocol()
    assert timers.ready(T0) is True  # the driver delivers one Poll at once
    assert timers.deadline(protocol) == T0 + 5
    assert timers.due(protocol, T0 + 4.999) is None
    assert timers.due(protocol, T0 + 5) is Due.POLL
    assert timers.due(protocol, T0 + 5) is None  # re-armed, not due twice
    assert timers.deadline(protocol) == T0 + 10
    assert timers.due(protocol, T0 + 10) is Due.POLL


def test_poll_is_rearmed_from_when_it_was_delivered() -> None:
    """A late look (a slow handler) does not bring a burst of Polls to catch up."""
    timers = timers_for(poll=1)
    protocol = open_protocol()
    timers.ready(T0)
    assert all_due(timers, protocol, T0 + 3.5) == [Due.POLL]
    assert timers.deadline(protocol) == T0 + 4.5


def test_poll_zero_disables_polls() -> None:
    timers = timers_for(poll=0)
    protocol = open_protocol()
    assert timers.ready(T0) is False
    assert all_due(timers, protocol, T0 + 1e6) == []
    assert timers.deadline(protocol) == INFINITY


# -- automatic pings and the ping timeout ----------------------------------------------


def test_automatic_pings_every_ping_rate_seconds() -> None:
    timers = timers_for(ping_rate=0.25)
    protocol = open_protocol()
    timers.ready(T0)
    assert timers.deadline(protocol) == T0
    times = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
    fired = [t for t in times if timers.due(protocol, T0 + t) is Due.PING]
    assert fired == [0.0, 0.25, 0.5, 0.75]


def test_the_first_ping_right_after_ready_as_in_lomond_0_3_4() -> None:
    """Lomond 0.3.4 pings right after Ready, then every ``ping_rate`` seconds (issue 20)."""
    timers = timers_for(ping_rate=30, poll=5)
    protocol = open_protocol()
    assert timers.ready(T0) is True  # the first Poll, delivered by the driver
    assert timers.deadline(protocol) == T0
    assert all_due(timers, protocol, T0) == [Due.PING]
    timers.ping_sent(T0)
    assert timers.deadline(protocol) == T0 + 5  # the next Poll; the next ping at T0 + 30
    assert all_due(timers, protocol, T0 + 29.5) == [Due.POLL]
    assert all_due(timers, protocol, T0 + 30) == [Due.PING]
    assert timers.deadline(protocol) == T0 + 34.5


def test_a_dead_connection_is_unresponsive_within_ping_timeout_of_ready() -> None:
    # The first ping leaves at Ready: no ping_rate to sit through before it.
    timers = timers_for(ping_rate=30, ping_timeout=2)
    protocol = open_protocol()
    timers.ready(T0)
    assert all_due(timers, protocol, T0) == [Due.PING]
    timers.ping_sent(T0)
    assert timers.deadline(protocol) == T0 + 2
    assert all_due(timers, protocol, T0 + 2) == [Due.UNRESPONSIVE]


def test_ping_rate_zero_sends_no_pings() -> None:
    timers = timers_for(ping_rate=0, poll=0.0625)
    protocol = open_protocol()
    timers.ready(T0)
    fired = {d for n in range(1, 200) for d in all_due(timers, protocol, T0 + n * 0.0625)}
    assert fired == {Due.POLL}


def test_ping_timeout_counts_from_the_first_unanswered_ping() -> None:
    timers = timers_for(ping_rate=0.25, ping_timeout=0.625)
    protocol = open_protocol()
    timers.ready(T0)
    assert timers.due(protocol, T0 + 0.25) is Due.PING
    timers.ping_sent(T0 + 0.25)
    assert timers.due(protocol, T0 + 0.5) is Due.PING
    timers.ping_sent(T0 + 0.5)  # still unanswered: the clock keeps the first one
    assert timers.deadline(protocol) == T0 + 0.75  # the next ping comes first
    assert timers.due(protocol, T0 + 0.75) is Due.PING
    timers.ping_sent(T0 + 0.75)
    assert timers.deadline(protocol) == T0 + 0.875  # 0.25 + 0.625
    assert timers.due(protocol, T0 + 0.8125) is None
    assert timers.due(protocol, T0 + 0.875) is Due.UNRESPONSIVE


def test_pongs_keep_the_connection() -> None:
    timers = timers_for(ping_rate=0.125, ping_timeout=0.375)
    protocol = open_protocol()
    timers.ready(T0)
    now = T0
    for _ in range(48):  # 6 s of pings, each answered 0.0625 s later
        now += 0.125
        assert all_due(timers, protocol, now) == [Due.PING]
        timers.ping_sent(now)
        assert all_due(timers, protocol, now + 0.0625) == []
        timers.pong_received()
    assert timers.ping_sent_at is None
    assert all_due(timers, protocol, now + 0.0625) == []


def test_a_manual_ping_starts_the_clock_with_auto_pings_off() -> None:
    timers = timers_for(ping_rate=0, ping_timeout=0.5)
    protocol = open_protocol()
    timers.ready(T0)
    assert timers.deadline(protocol) == INFINITY  # nothing sent, nothing to wait for
    timers.ping_sent(T0 + 1)  # send_ping() from the application
    assert timers.deadline(protocol) == T0 + 1.5
    assert timers.due(protocol, T0 + 1.375) is None
    assert timers.due(protocol, T0 + 1.5) is Due.UNRESPONSIVE


def test_the_ping_timeout_fires_at_the_deadline_it_names() -> None:
    timers = timers_for(ping_rate=0, ping_timeout=0.4)
    protocol = open_protocol()
    timers.ready(1000.0)
    timers.ping_sent(1001.0)
    deadline = timers.deadline(protocol)
    assert timers.due(protocol, deadline) is Due.UNRESPONSIVE


@pytest.mark.parametrize("ping_timeout", [None, 0])
def test_no_ping_timeout_waits_forever(ping_timeout: Optional[float]) -> None:
    timers = timers_for(ping_timeout=ping_timeout)
    protocol = open_protocol()
    timers.ready(T0)
    timers.ping_sent(T0)
    assert timers.due(protocol, T0 + 1e6) is None
    assert timers.deadline(protocol) == INFINITY


def test_poll_and_ping_due_together_both_fire() -> None:
    timers = timers_for(poll=1, ping_rate=1)
    protocol = open_protocol()
    timers.ready(T0)
    assert all_due(timers, protocol, T0 + 1) == [Due.POLL, Due.PING]


# -- the close timeout -----------------------------------------------------------------


def test_close_timeout_after_our_close() -> None:
    timers = timers_for(close_timeout=0.5, poll=30)
    protocol = open_protocol()
    timers.ready(T0)
    protocol.send_close(1000, "bye")
    # The driver looks right after the close was sent: the clock starts then.
    assert all_due(timers, protocol, T0 + 1) == []
    assert timers.deadline(protocol) == T0 + 1.5
    assert timers.due(protocol, T0 + 1.375) is None
    assert timers.due(protocol, T0 + 1.5) is Due.CLOSE_TIMEOUT


def test_close_timeout_counts_from_close_started() -> None:
    """Told when the Close was framed, the timeout counts from then, however late the
    driver looks (a Close held back behind a stuck send counts from close())."""
    timers = timers_for(close_timeout=0.5, poll=30)
    protocol = open_protocol()
    timers.ready(T0)
    protocol.send_close(1000, "bye")
    timers.close_started(T0 + 0.25)
    timers.close_started(T0 + 0.375)  # only the first counts
    assert timers.deadline(protocol) == T0 + 0.75
    assert timers.due(protocol, T0 + 1) is Due.CLOSE_TIMEOUT


def test_close_timeout_after_the_servers_close() -> None:
    """The server's Close was echoed but TCP stays open: the close timeout ends it."""
    timers = timers_for(close_timeout=0.5, poll=30)
    protocol = open_protocol()
    timers.ready(T0)
    received = protocol.receive_data(close_from_server(1001))
    assert [type(e) for e in received] == [events.Closing]
    protocol.data_to_send()  # the echo
    assert protocol.handshake_complete and not protocol.should_close
    assert all_due(timers, protocol, T0 + 2) == []
    assert timers.due(protocol, T0 + 2.375) is None
    assert timers.due(protocol, T0 + 2.5) is Due.CLOSE_TIMEOUT


@pytest.mark.parametrize("close_timeout", [None, 0])
def test_no_close_timeout_waits_for_the_server(close_timeout: Optional[float]) -> None:
    timers = timers_for(close_timeout=close_timeout)
    protocol = open_protocol()
    timers.ready(T0)
    protocol.send_close(1000, "")
    assert timers.due(protocol, T0 + 1e6) is None
    assert timers.deadline(protocol) == INFINITY


def test_nothing_but_the_close_timeout_after_the_servers_close() -> None:
    """Closing -> Disconnected: no Poll, Ping or Unresponsive in between."""
    timers = timers_for(poll=0.0625, ping_rate=0.125, ping_timeout=0.5, close_timeout=3)
    protocol = open_protocol()
    timers.ready(T0)
    assert timers.due(protocol, T0 + 0.125) is Due.POLL
    assert timers.due(protocol, T0 + 0.125) is Due.PING
    timers.ping_sent(T0 + 0.125)  # never answered
    protocol.receive_data(close_from_server())
    protocol.data_to_send()
    assert all_due(timers, protocol, T0 + 0.25) == []
    # Long past the ping timeout: still nothing until the close timeout.
    assert all_due(timers, protocol, T0 + 3.125) == []
    assert timers.deadline(protocol) == T0 + 3.25
    assert timers.due(protocol, T0 + 3.25) is Due.CLOSE_TIMEOUT


def test_no_pings_after_our_close_but_polls_go_on() -> None:
    """Until the server answers our Close, Polls continue (the application may still
    read); pings stop and the close timeout, not the ping timeout, bounds the wait."""
    timers = timers_for(poll=1, ping_rate=1, ping_timeout=0.5, close_timeout=10)
    protocol = open_protocol()
    timers.ready(T0)
    timers.ping_sent(T0 + 0.125)
    protocol.send_close(1000, "")
    assert all_due(timers, protocol, T0 + 0.25) == []
    assert all_due(timers, protocol, T0 + 1) == [Due.POLL]
    assert all_due(timers, protocol, T0 + 2) == [Due.POLL]
    assert all_due(timers, protocol, T0 + 10.125) == [Due.POLL]
    assert timers.due(protocol, T0 + 10.25) is Due.CLOSE_TIMEOUT
