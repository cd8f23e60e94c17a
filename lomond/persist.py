"""Persistent connections: reconnect forever, with exponential back-off and full jitter."""

from __future__ import annotations

import email.utils
import inspect
import logging
import random as _random
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Protocol

import attrs

from . import events
from .options import DEFAULT_CONNECT, DEFAULT_PERSIST, ConnectOptions, PersistOptions
from .wakeup import StopSignal, wait_for_stop

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import MoreConnectKeywords
    from .websocket import WebSocket

log = logging.getLogger("lomond.persist")

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


class BackOff:
    """The reconnect loop's bookkeeping: attempts in a row that failed, and ``Retry-After``.

    Shared by :func:`persist` and the :class:`~lomond.handlers.hub.Hub`:
    call :meth:`observe` with each event of a connection, then
    :meth:`next_delay` once it ended.
    """

    __slots__ = ("_failures", "_max_wait", "_ready", "_settings", "_wait_at_least")

    def __init__(self, settings: PersistOptions) -> None:
        self._settings = settings
        self._max_wait = max(settings.max_wait, settings.min_wait)
        self._failures = 0
        self._ready = False
        self._wait_at_least = 0.0

    def observe(self, event: events.Event) -> None:
        """Note a Ready (the cap resets) or a Rejected's ``Retry-After``."""
        if isinstance(event, events.Ready):
            self._ready = True
        elif isinstance(event, events.Rejected) and self._settings.respect_retry_after:
            self._wait_at_least = retry_after(event.response) or 0.0

    def next_delay(self) -> float:
        """The wait before the next attempt (see :func:`back_off_delay`); starts a new attempt."""
        self._failures = 0 if self._ready else self._failures + 1
        delay = max(
            back_off_delay(self._failures, self._settings.min_wait, self._max_wait),
            self._wait_at_least,
        )
        self._ready = False
        self._wait_at_least = 0.0
        return delay


class ExitEvent(Protocol):
    """What ``exit_event`` must offer: ``wait(timeout)`` (``threading.Event`` does)."""

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds for the event; whether it is set."""
        ...


def persist(
    websocket: WebSocket,
    poll: float = DEFAULT_CONNECT.poll,
    min_wait: float = DEFAULT_PERSIST.min_wait,
    max_wait: float = DEFAULT_PERSIST.max_wait,
    ping_rate: float = DEFAULT_CONNECT.ping_rate,
    ping_timeout: Optional[float] = DEFAULT_CONNECT.ping_timeout,
    exit_event: Optional[ExitEvent] = None,
    respect_retry_after: bool = DEFAULT_PERSIST.respect_retry_after,
    **connect_options: Unpack[MoreConnectKeywords],
) -> Iterator[events.Event]:
    """Run ``websocket`` forever, reconnecting whenever the connection ends.

    ``websocket`` is a :class:`~lomond.websocket.WebSocket`, or any object
    with Lomond 0.3's ``connect(poll=..., ping_rate=..., ping_timeout=...)``
    method (a subclass that overrides ``connect()``, say): nothing else of
    it is used.

    Every connection yields the usual events (``Connecting`` ...
    ``Disconnected``), then a :class:`~lomond.events.BackOff` event
    announces the wait before the next attempt (see :func:`back_off_delay`):
    a random delay between ``min_wait`` and a cap that doubles after each
    attempt that did not reach Ready, up to ``max_wait`` ("full jitter", so
    that many clients dropped at once do not reconnect in step). A Ready
    resets the cap. With ``respect_retry_after`` (the default), after a
    rejected handshake whose response has a ``Retry-After`` header (RFC 7231
    section 7.1.3) the wait is at least what the server asked for (even
    beyond ``max_wait``).

    ``websocket.close()`` ends the current connection only: persist
    reconnects after the back-off, as Lomond 0.3.4 does (closing a stale
    feed forces a fresh connection). Only ``exit_event`` ends the loop (or
    leaving the ``for`` loop). Once it is set, a live connection is closed
    gracefully (RFC 6455 section 7.1.2, code 1000) and the loop ends after
    that connection's ``BackOff``, the last event, as in 0.3.4; set before
    the first attempt, the loop yields nothing. ``exit_event`` is used as it
    is, never modified:

    - a :class:`~lomond.wakeup.StopSignal` wakes the loop at once, whatever
      it is doing (connecting, connected, waiting to reconnect);
    - anything else with ``wait(timeout)`` (a ``threading.Event``, as in
      Lomond 0.3) ends a back-off wait at once (the wait is
      ``exit_event.wait(delay)``, as in 0.3.4), and is looked at between
      events otherwise (with ``is_set()`` if it has one, else
      ``wait(0)``): while connected within ``poll`` seconds, while
      connecting when the attempt ends. Pass a
      :class:`~lomond.wakeup.StopSignal` where a stop must be immediate.

    Other keyword arguments (``connect_timeout``, ``close_timeout``, ...)
    are passed to ``connect()``; they and the waits are checked when
    ``persist()`` is called (``TypeError``, ``ValueError``).
    """
    options = ConnectOptions(poll=poll, ping_rate=ping_rate, ping_timeout=ping_timeout,
                             **connect_options)
    settings = PersistOptions(
        min_wait=min_wait, max_wait=max_wait, respect_retry_after=respect_retry_after
    )
    connect = getattr(websocket, "connect", None)
    if not callable(connect):
        raise TypeError("persist() needs a WebSocket (an object with a connect() method)")
    if exit_event is not None and not callable(getattr(exit_event, "wait", None)):
        raise TypeError(
            f"exit_event must have a wait(timeout) method (a threading.Event, a "
            f"lomond.wakeup.StopSignal), not {exit_event!r}"
        )
    return _persist(websocket, connect, options, settings, exit_event)


def _connect_keywords(
    connect: Callable[..., Any], options: ConnectOptions, stop: StopSignal
) -> Dict[str, Any]:
    """The keyword arguments ``connect`` takes: ours takes every option and ``stop=``.

    A 0.3-style override (``connect(self, poll=5, ping_rate=30, ...)``) gets
    only the options it names; the ones it does not name keep its defaults.
    """
    keywords: Dict[str, Any] = {**attrs.asdict(options), "stop": stop}
    try:
        parameters = inspect.signature(connect).parameters.values()
    except (TypeError, ValueError):
        return {name: keywords[name] for name in ("poll", "ping_rate", "ping_timeout")}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return keywords
    names = {p.name for p in parameters}
    return {name: value for name, value in keywords.items() if name in names}


def _is_set(exit_event: ExitEvent) -> bool:
    """Whether ``exit_event`` is set, asking no more of it than ``wait()``."""
    is_set = getattr(exit_event, "is_set", None)
    if callable(is_set):
        return bool(is_set())
    return bool(exit_event.wait(0))


def _persist(
    websocket: WebSocket,
    connect: Callable[..., Iterator[events.Event]],
    options: ConnectOptions,
    settings: PersistOptions,
    exit_event: Optional[ExitEvent],
) -> Iterator[events.Event]:
    # A StopSignal exit_event (or ours, when there is none or it is another
    # kind of object) is passed to connect(stop=...) and is what wakes us.
    exit_signal = exit_event if isinstance(exit_event, StopSignal) else StopSignal()
    foreign = exit_event if exit_event is not None and exit_event is not exit_signal else None
    keywords = _connect_keywords(connect, options, exit_signal)

    def stopping() -> bool:
        if foreign is not None and not exit_signal.is_set() and _is_set(foreign):
            exit_signal.set()  # the connection in progress closes gracefully at once
        return exit_signal.is_set()

    back_off = BackOff(settings)
    while not stopping():
        connection = connect(**keywords)
        try:
            closing = False
            for event in connection:
                back_off.observe(event)
                yield event
                # A stop the signal could not carry (a foreign exit_event,
                # or a connect() without stop=) is seen between events.
                if not closing and stopping():
                    closing = True
                    close_websocket = getattr(websocket, "close", None)
                    if callable(close_websocket):  # duck typing: connect() is all we need
                        close_websocket()
        finally:
            # Also when the caller stops iterating or its handler raises:
            # the socket is closed now, not whenever the generator is collected.
            close = getattr(connection, "close", None)
            if close is not None:
                close()
        delay = back_off.next_delay()
        log.debug("reconnecting to %s in %.2f s", getattr(websocket, "url", websocket), delay)
        # Also when stopping: Lomond 0.3.4's last event is the BackOff it
        # waited on (a set exit_event's wait returns at once).
        yield events.BackOff(delay)
        if foreign is not None:
            if foreign.wait(delay):  # set() ends it at once; no thread, no patching
                exit_signal.set()
        else:
            wait_for_stop((exit_signal,), delay)


__all__ = ["BackOff", "ExitEvent", "back_off_delay", "persist", "random", "retry_after"]
