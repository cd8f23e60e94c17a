"""Error policies: what a :class:`~lomond.handlers.WebSocketApp` does when a handler raises.

* ``"close"`` (the default): close the connection gracefully with status 1011
  (internal error) and stop (no reconnect); :attr:`~lomond.handlers.outcome.Outcome.error` holds the
  exception.
* ``"log"``: log it and keep going.
* ``"raise"``: like ``"close"``, then re-raise the exception from
  ``run_forever()`` (or ``join()``) once the connection is gone.
* a callable ``policy(event, exc)`` returning one of those strings, chosen per
  error (if it raises or returns something else, ``"close"`` applies).

Whatever the policy, the error is reported once (to stderr by default, see
:meth:`WebSocketApp.report_error <lomond.handlers.WebSocketApp.report_error>`)
and the remaining handlers for the event still run.
"""

from __future__ import annotations

import logging
from typing import Callable, Literal, Union, cast

from .. import events

log = logging.getLogger("lomond.handlers")

#: What to do about one error.
PolicyAction = Literal["close", "log", "raise"]

#: The ``error_policy`` argument: an action, or a callable choosing one per error.
ErrorPolicy = Union[PolicyAction, Callable[[events.Event, Exception], str]]

ACTIONS = ("close", "log", "raise")


def check_policy(policy: object) -> None:
    """``ValueError`` unless ``policy`` is one of :data:`ACTIONS` or a callable."""
    if callable(policy):
        return
    if not isinstance(policy, str) or policy not in ACTIONS:
        raise ValueError(
            f"error_policy must be 'close', 'log', 'raise' or a callable, not {policy!r}"
        )


def decide(policy: ErrorPolicy, event: events.Event, error: Exception) -> PolicyAction:
    """The action ``policy`` picks for ``error`` raised while handling ``event``."""
    if isinstance(policy, str):
        return policy
    try:
        action = policy(event, error)
    except Exception:
        log.exception("the error policy %r raised; closing", policy)
        return "close"
    if action in ACTIONS:
        return cast(PolicyAction, action)
    log.error("the error policy %r returned %r, not 'close', 'log' or 'raise'; closing",
              policy, action)
    return "close"


__all__ = ["ACTIONS", "ErrorPolicy", "PolicyAction", "check_policy", "decide"]
