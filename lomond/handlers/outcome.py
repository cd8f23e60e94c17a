"""How a run of a :class:`~lomond.handlers.WebSocketApp` ended."""

from __future__ import annotations

from typing import Optional

import attrs

from .. import events


@attrs.frozen
class Outcome:
    """The result of :meth:`WebSocketApp.run_forever <lomond.handlers.WebSocketApp.run_forever>`.

    :ivar close_code: the status code of the last connection's close
        handshake (from :class:`~lomond.events.Closing` or
        :class:`~lomond.events.Closed`), or ``None`` if it had none.
    :ivar close_reason: the reason that came with ``close_code``, or ``None``.
    :ivar graceful: the last :class:`~lomond.events.Disconnected`'s ``graceful``
        (``False`` if there was none).
    :ivar connections: how many :class:`~lomond.events.Connected` events there were.
    :ivar error: the handler exception that ended the run (error policy
        ``"close"`` or ``"raise"``), or ``None``.
    :ivar reason: the last Disconnected's ``reason``, or ``None``.
    """

    close_code: Optional[int] = None
    close_reason: Optional[str] = None
    graceful: bool = False
    connections: int = 0
    error: Optional[BaseException] = None
    reason: Optional[str] = None


class OutcomeTracker:
    """Accumulates an :class:`Outcome` from the events of one run (internal)."""

    def __init__(self) -> None:
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self.graceful = False
        self.connections = 0
        self.reason: Optional[str] = None
        #: The first handler error that ended the run.
        self.error: Optional[BaseException] = None
        #: The handler error to re-raise when the run ends (policy "raise").
        self.to_raise: Optional[BaseException] = None

    def record(self, event: events.Event) -> None:
        """Take what the outcome needs from ``event`` (before its handlers run)."""
        kind = type(event)
        if kind is events.Connected:
            self.connections += 1
            self.close_code = self.close_reason = None
        elif kind is events.Closing or kind is events.Closed:
            self.close_code = event.code  # type: ignore[attr-defined]
            self.close_reason = event.reason  # type: ignore[attr-defined]
        elif kind is events.Disconnected:
            self.graceful = event.graceful  # type: ignore[attr-defined]
            self.reason = event.reason  # type: ignore[attr-defined]

    def outcome(self) -> Outcome:
        """The outcome so far."""
        return Outcome(
            close_code=self.close_code,
            close_reason=self.close_reason,
            graceful=self.graceful,
            connections=self.connections,
            error=self.error,
            reason=self.reason,
        )


__all__ = ["Outcome", "OutcomeTracker"]
