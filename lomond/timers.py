"""The clocks of one connection, without I/O: what is due, and when to wake next.

A driver (the threaded :class:`~lomond.sync.session.WebsocketSession`, or a
loop serving many connections) tells :class:`ConnectionTimers` the current
time and what happened (the handshake started, Ready arrived, a ping left,
a pong came back); :meth:`ConnectionTimers.due` answers which timer fired,
and :meth:`ConnectionTimers.deadline` when the driver must look again.
Nothing here sleeps, so a driver wakes only for a connection's own timers.
"""

from __future__ import annotations

import enum
from typing import Optional

from .options import ConnectOptions
from .protocol import ClientProtocol, State

#: A deadline that never comes: the timer is off.
INFINITY = float("inf")


class Due(enum.Enum):
    """A timer that fired."""

    #: No complete upgrade response within ``handshake_timeout`` (TLS included).
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    #: The server did not finish the close handshake within ``close_timeout``.
    CLOSE_TIMEOUT = "close_timeout"
    #: No pong within ``ping_timeout`` of the oldest unanswered ping.
    UNRESPONSIVE = "unresponsive"
    #: Time for a :class:`~lomond.events.Poll` event.
    POLL = "poll"
    #: Time for an automatic ping.
    PING = "ping"


class ConnectionTimers:
    """Poll, auto-ping, ping timeout, close timeout and handshake timeout of one connection.

    Times are ``time.monotonic()`` values passed in by the driver.
    """

    __slots__ = (
        "_closing", "_options", "close_deadline", "handshake_deadline", "next_ping",
        "next_poll", "ping_sent_at",
    )

    def __init__(self, options: ConnectOptions) -> None:
        self._options = options
        self.handshake_deadline = INFINITY
        self.next_poll = INFINITY
        self.next_ping = INFINITY
        self.close_deadline = INFINITY
        #: When the oldest unanswered ping left, or ``None``.
        self.ping_sent_at: Optional[float] = None
        self._closing = False

    def handshake_started(self, now: float) -> None:
        """TLS (or, for ``ws://``, the upgrade) began: one budget covers both."""
        self.handshake_deadline = now + self._options.handshake_timeout

    def ready(self, now: float) -> bool:
        """The upgrade succeeded; whether a Poll is due right away.

        Lomond 0.3 programs subscribe on the first Poll, so the driver
        delivers one right after Ready (when polls are on), then one every
        ``poll`` seconds. The first automatic ping is due at once too (as
        Lomond 0.3.4 sends it), then one every ``ping_rate`` seconds: a
        connection that is dead from the start (RFC 6455 section 5.5.2: a
        Ping "may serve ... to verify that the remote endpoint is still
        responsive") is found within ``ping_timeout``, not ``ping_rate +
        ping_timeout``.
        """
        options = self._options
        self.next_poll = now + options.poll if options.poll else INFINITY
        self.next_ping = now if options.ping_rate else INFINITY
        return bool(options.poll)

    def ping_sent(self, now: float) -> None:
        """A ping left; the ping timeout counts from the oldest unanswered one."""
        if self.ping_sent_at is None:
            self.ping_sent_at = now

    def pong_received(self) -> None:
        """A pong answers every ping sent so far."""
        self.ping_sent_at = None

    def close_started(self, now: float) -> None:
        """Our Close frame was framed at ``now``: the close timeout counts from then.

        Without this call it counts from the first :meth:`due` that sees the
        close handshake started (a Close received, say).
        """
        if not self._closing:
            self._closing = True
            close_timeout = self._options.close_timeout
            if close_timeout:
                self.close_deadline = now + close_timeout

    def _sync(self, protocol: ClientProtocol, now: float) -> None:
        # The close handshake changes which timers matter; the protocol's
        # state may change from any thread (close()), so it is read here,
        # each time the driver looks.
        if protocol.close_received:
            # Only the TCP close (or the close timeout) comes next: no Poll
            # or Unresponsive between Closing/Closed and Disconnected.
            self.next_poll = self.next_ping = INFINITY
            self.ping_sent_at = None
        elif protocol.close_sent:
            self.next_ping = INFINITY
            self.ping_sent_at = None  # close_timeout bounds the wait now
        if not self._closing and (protocol.close_sent or protocol.close_received):
            self.close_started(now)

    def due(self, protocol: ClientProtocol, now: float) -> Optional[Due]:
        """The timer that fired by ``now``, if any; a periodic one is re-armed.

        Call it again until it returns ``None``: more than one may be due.
        """
        if protocol.state is State.CONNECTING:
            return Due.HANDSHAKE_TIMEOUT if now >= self.handshake_deadline else None
        self._sync(protocol, now)
        if now >= self.close_deadline:
            return Due.CLOSE_TIMEOUT
        ping_timeout = self._options.ping_timeout
        sent_at = self.ping_sent_at
        # The same sum as deadline(): a driver woken at that deadline finds it due.
        if ping_timeout and sent_at is not None and now >= sent_at + ping_timeout:
            return Due.UNRESPONSIVE
        if now >= self.next_poll:
            self.next_poll = now + self._options.poll
            return Due.POLL
        if now >= self.next_ping:
            self.next_ping = now + self._options.ping_rate
            return Due.PING
        return None

    def deadline(self, protocol: ClientProtocol) -> float:
        """The next time :meth:`due` may fire (``INFINITY``: only bytes can wake us)."""
        if protocol.state is State.CONNECTING:
            return self.handshake_deadline
        deadline = min(self.next_poll, self.next_ping, self.close_deadline)
        ping_timeout = self._options.ping_timeout
        if ping_timeout and self.ping_sent_at is not None:
            deadline = min(deadline, self.ping_sent_at + ping_timeout)
        return deadline


__all__ = ["INFINITY", "ConnectionTimers", "Due"]
