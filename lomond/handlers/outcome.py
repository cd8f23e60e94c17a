"""How a run of a :class:`~lomond.handlers.WebSocketApp` ended."""

from __future__ import annotations

from typing import List, Optional

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
    :ivar reason: why the run ended. If a handler error ended it, that error
        (``"handler <name> raised <Type>: <message>"``: what happened to the
        connection afterwards never hides it). Otherwise the last failure:
        :class:`~lomond.events.ConnectFail`'s reason, the
        :class:`~lomond.events.Rejected` reason (with the HTTP status),
        :class:`~lomond.events.ProtocolError`'s error, or else the last
        :class:`~lomond.events.Disconnected`'s reason (``"closed"`` after a
        close handshake). ``None`` if no connection was attempted.
    :ivar handler: the qualified name of the handler that raised
        :attr:`error` (``"Feed.on_text"``, ``"main.<locals>.show"``), or ``None``.
    """

    close_code: Optional[int] = None
    close_reason: Optional[str] = None
    graceful: bool = False
    connections: int = 0
    error: Optional[BaseException] = None
    reason: Optional[str] = None
    handler: Optional[str] = None


def handler_name(handler: object) -> str:
    """A handler's qualified name (``Class.method`` for a bound method), else its repr."""
    function = getattr(handler, "__func__", handler)
    name = getattr(function, "__qualname__", None)
    return name if isinstance(name, str) else repr(handler)


class OutcomeTracker:
    """Accumulates an :class:`Outcome` from the events of one run (internal)."""

    def __init__(self) -> None:
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self.graceful = False
        self.connections = 0
        self.reason: Optional[str] = None
        #: Whether the current connection attempt already failed with a reason
        #: (a ProtocolError's, say), which its Disconnected must not replace.
        self._failed = False
        #: The first handler error that ended the run, and who raised it.
        self.error: Optional[BaseException] = None
        self.handler: Optional[str] = None
        #: The handler error to re-raise when the run ends (policy "raise").
        self.to_raise: Optional[BaseException] = None
        #: The names of the failure events of the last connection attempt
        #: (``connect_fail``, ``rejected``, ``protocol_error``,
        #: ``unresponsive``, a ``disconnected`` that was not graceful), in
        #: order: what a handler must take to have heard of the failure.
        self.failures: List[str] = []

    def record(self, event: events.Event) -> None:
        """Take what the outcome needs from ``event`` (before its handlers run)."""
        kind = type(event)
        if kind is events.Text or kind is events.Binary:
            return  # messages change nothing here (so the app's dispatch skips this call)
        if isinstance(event, events.Connected):
            self.connections += 1
            self.close_code = self.close_reason = None
        elif isinstance(event, (events.Closing, events.Closed)):
            self.close_code = event.code
            self.close_reason = event.reason
        elif isinstance(event, events.Connecting):
            self._failed = False
            self.failures = []
        elif isinstance(event, (events.ConnectFail, events.Rejected)):
            self._fail(event.reason)
            self.failures.append(event.name)
        elif isinstance(event, events.ProtocolError):
            self._fail(event.error)
            self.failures.append(event.name)
        elif isinstance(event, events.Unresponsive):
            self.failures.append(event.name)
        elif isinstance(event, events.Disconnected):
            self.graceful = event.graceful
            if not self._failed:
                self._set_reason(event.reason)
            self._failed = False
            if not event.graceful:
                self.failures.append(event.name)

    def _fail(self, reason: str) -> None:
        self._failed = True
        self._set_reason(reason)

    def _set_reason(self, reason: str) -> None:
        if self.error is None:  # a handler error stays the reason the run ended
            self.reason = reason

    def handler_error(self, handler: object, error: BaseException) -> None:
        """Record the handler error that ends the run (only the first one counts)."""
        if self.error is None:
            self.error = error
            self.handler = handler_name(handler)
            self.reason = f"handler {self.handler} raised {type(error).__name__}: {error}"

    def unreported_failure(self) -> Optional[List[str]]:
        """The failure events the run ended on, or ``None`` if it did not end on one.

        A run ends on a failure when its last connection attempt failed
        (could not connect, was rejected, broke the protocol, was dropped)
        and no handler error ended it (that error is reported on its own).
        """
        if self.error is not None or not self.failures:
            return None
        return list(self.failures)

    def outcome(self) -> Outcome:
        """The outcome so far."""
        return Outcome(
            close_code=self.close_code,
            close_reason=self.close_reason,
            graceful=self.graceful,
            connections=self.connections,
            error=self.error,
            reason=self.reason,
            handler=self.handler,
        )


__all__ = ["Outcome", "OutcomeTracker", "handler_name"]
