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

#: Seconds between checks of ``exit_event`` while waiting; bounds how long a
#: stop can take.
EXIT_CHECK_INTERVAL = 0.05

random = _random.random


def retry_after(response: Any) -> Optional[float]:
    """Seconds asked for by a ``Retry-After`` header (RFC 7231 section 7.1.3), if any."""
    value = response.get("retry-after") if response is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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

    Between attempts a :class:`~lomond.events.BackOff` event announces the
    wait: a random delay between ``min_wait`` and a cap that starts at
    ``2 * min_wait`` and doubles after each attempt that did not reach Ready,
    up to ``max_wait`` ("full jitter", so that many clients dropped at once
    do not reconnect in step). A Ready resets the cap. A rejected handshake
    with a ``Retry-After`` header waits at least that long.

    The loop ends when ``exit_event`` is set (a graceful close is started if
    connected) or when ``websocket.close()`` is called, also during a wait;
    either is noticed within :data:`EXIT_CHECK_INTERVAL` seconds.
    Other keyword arguments are passed to :meth:`WebSocket.connect`.
    """
    exit_event = exit_event or threading.Event()
    close_requested = websocket._close_requested
    close_requested.clear()
    failures = 0
    while not (exit_event.is_set() or close_requested.is_set()):
        ready = False
        wait_at_least = 0.0
        for event in websocket._connect_for_persist(
            exit_event,
            poll=poll,
            ping_rate=ping_rate,
            ping_timeout=ping_timeout,
            **connect_options,
        ):
            if isinstance(event, events.Ready):
                ready = True
            elif isinstance(event, events.Rejected):
                wait_at_least = retry_after(event.response) or 0.0
            yield event
        if exit_event.is_set() or close_requested.is_set():
            break
        failures = 0 if ready else failures + 1
        cap = min(max_wait, min_wait * 2 ** max(failures, 1))
        delay = max(min_wait + random() * max(0.0, cap - min_wait), wait_at_least)
        yield events.BackOff(delay)
        log.debug("reconnecting to %s in %.2f s", websocket.url.url, delay)
        deadline = time.monotonic() + delay
        while not (exit_event.is_set() or close_requested.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            exit_event.wait(min(remaining, EXIT_CHECK_INTERVAL))


__all__ = ["persist", "random", "retry_after"]
