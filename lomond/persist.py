"""Persistent connections: reconnect forever, with exponential back-off and full jitter."""

from __future__ import annotations

import email.utils
import logging
import random as _random
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional

from . import events

if TYPE_CHECKING:
    from .websocket import WebSocket

log = logging.getLogger("lomond.persist")

#: Seconds between checks of ``exit_event`` and ``websocket.close()`` while
#: waiting; bounds how long a stop can take.
EXIT_CHECK_INTERVAL = 0.05

#: The cap stops doubling after this many failures in a row (``max_wait`` is
#: reached long before; this only keeps ``2 ** failures`` finite).
_MAX_DOUBLINGS = 32

#: ``random()``: a float in [0, 1). Module level, so tests can replace it.
random = _random.random


def retry_after(response: Any) -> Optional[float]:
    """Seconds asked for by a ``Retry-After`` header (RFC 7231 section 7.1.3), if any.

    Both forms are understood: delay-seconds (``120``) and an HTTP-date.
    """
    value = response.get("retry-after") if response is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    try:
        return max(0.0, when.timestamp() - time.time())
    except (OverflowError, OSError, ValueError):
        return None


def back_off_delay(failures: int, min_wait: float, max_wait: float) -> float:
    """The wait before the next attempt, after ``failures`` attempts in a row that failed.

    Full jitter: uniformly random between ``min_wait`` and a cap that starts
    at ``2 * min_wait`` and doubles with each failure, up to ``max_wait``
    (with ``min_wait=0``, the cap is ``max_wait`` at once).
    """
    if min_wait > 0:
        cap = min(max_wait, min_wait * 2.0 ** min(max(failures, 1), _MAX_DOUBLINGS))
    else:
        cap = max_wait
    return min_wait + random() * max(0.0, cap - min_wait)


def persist(
    websocket: WebSocket,
    poll: float = 5,
    min_wait: float = 5,
    max_wait: float = 30,
    ping_rate: float = 30,
    ping_timeout: Optional[float] = None,
    exit_event: Optional[threading.Event] = None,
    **connect_options: Any,
) -> Iterator[events.Event]:
    """Run ``websocket`` forever, reconnecting whenever the connection ends.

    Every connection yields the usual events (``Connecting`` ...
    ``Disconnected``). Between attempts a :class:`~lomond.events.BackOff`
    event announces the wait (see :func:`back_off_delay`): a random delay
    between ``min_wait`` and a cap that doubles after each attempt that did
    not reach Ready, up to ``max_wait`` ("full jitter", so that many clients
    dropped at once do not reconnect in step). A Ready resets the cap. After
    a rejected handshake whose response has a ``Retry-After`` header, the wait
    is at least what the server asked for (even beyond ``max_wait``).

    The loop ends when ``exit_event`` is set (a graceful close is started if
    connected) or when ``websocket.close()`` is called, also during a wait;
    a stop is noticed within :data:`EXIT_CHECK_INTERVAL` seconds.
    Other keyword arguments (``connect_timeout``, ``close_timeout``, ...) are
    passed to :meth:`WebSocket.connect`.
    """
    if min_wait < 0 or max_wait < 0:
        raise ValueError("min_wait and max_wait must not be negative")
    max_wait = max(max_wait, min_wait)
    exit_event = exit_event or threading.Event()
    close_requested = websocket._close_requested
    close_requested.clear()

    def stopping() -> bool:
        return exit_event.is_set() or close_requested.is_set()

    failures = 0
    while not stopping():
        ready = False
        wait_at_least = 0.0
        connection = websocket._connect_for_persist(
            exit_event,
            poll=poll,
            ping_rate=ping_rate,
            ping_timeout=ping_timeout,
            **connect_options,
        )
        try:
            for event in connection:
                if isinstance(event, events.Ready):
                    ready = True
                elif isinstance(event, events.Rejected):
                    wait_at_least = retry_after(event.response) or 0.0
                yield event
        finally:
            # Also when the caller stops iterating or its handler raises:
            # the socket is closed now, not whenever the generator is collected.
            close = getattr(connection, "close", None)
            if close is not None:
                close()
        if stopping():
            break
        failures = 0 if ready else failures + 1
        delay = max(back_off_delay(failures, min_wait, max_wait), wait_at_least)
        log.debug("reconnecting to %s in %.2f s", websocket.url.url, delay)
        yield events.BackOff(delay)
        deadline = time.monotonic() + delay
        while not stopping():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            exit_event.wait(min(remaining, EXIT_CHECK_INTERVAL))


__all__ = ["EXIT_CHECK_INTERVAL", "back_off_delay", "persist", "random", "retry_after"]
