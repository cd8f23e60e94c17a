"""Persistent connections: reconnect forever, with exponential back-off and full jitter."""

from __future__ import annotations

import contextlib
import email.utils
import inspect
import logging
import random as _random
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Tuple, Union

import attrs

from . import events
from .options import DEFAULT_PERSIST, ConnectOptions, PersistOptions
from .wakeup import StopSignal, wait_for_stop

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import MoreConnectKeywords
    from .websocket import WebSocket

log = logging.getLogger("lomond.persist")

#: What ``exit_event`` may be: a ``threading.Event`` (as in Lomond 0.3) or a
#: :class:`~lomond.wakeup.StopSignal`.
ExitEvent = Union[threading.Event, StopSignal]

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


def persist(
    websocket: WebSocket,
    poll: float = 5,
    min_wait: float = DEFAULT_PERSIST.min_wait,
    max_wait: float = DEFAULT_PERSIST.max_wait,
    ping_rate: float = 30,
    ping_timeout: Optional[float] = None,
    exit_event: Optional[ExitEvent] = None,
    respect_retry_after: bool = DEFAULT_PERSIST.respect_retry_after,
    **connect_options: Unpack[MoreConnectKeywords],
) -> Iterator[events.Event]:
    """Run ``websocket`` forever, reconnecting whenever the connection ends.

    ``websocket`` is a :class:`~lomond.websocket.WebSocket`, or any object
    with Lomond 0.3's ``connect(poll=..., ping_rate=..., ping_timeout=...)``
    method (a subclass that overrides ``connect()``, say).

    Every connection yields the usual events (``Connecting`` ...
    ``Disconnected``). Between attempts a :class:`~lomond.events.BackOff`
    event announces the wait (see :func:`back_off_delay`): a random delay
    between ``min_wait`` and a cap that doubles after each attempt that did
    not reach Ready, up to ``max_wait`` ("full jitter", so that many clients
    dropped at once do not reconnect in step). A Ready resets the cap. With
    ``respect_retry_after`` (the default), after a rejected handshake whose
    response has a ``Retry-After`` header the wait is at least what the
    server asked for (even beyond ``max_wait``).

    The loop ends when ``exit_event`` is set (a graceful close is started if
    connected) or when ``websocket.close()`` is called, also during a wait.
    ``exit_event`` may be a :class:`~lomond.wakeup.StopSignal` or a
    ``threading.Event``; either wakes the loop at once. (A
    ``threading.Event`` cannot wake a selector, so while this loop runs its
    ``set`` method is wrapped to do so. A ``set`` bound before the loop
    started, as in ``threading.Timer(5, event.set)``, still ends a back-off
    wait at once, but while connected it is seen at the next event, at worst
    ``poll`` seconds later: pass a :class:`~lomond.wakeup.StopSignal` where
    that matters.) Other keyword arguments (``connect_timeout``,
    ``close_timeout``, ...) are passed to ``connect()``; they and the waits
    are checked when ``persist()`` is called.
    """
    options = ConnectOptions(poll=poll, ping_rate=ping_rate, ping_timeout=ping_timeout,
                             **connect_options)
    settings = PersistOptions(
        min_wait=min_wait, max_wait=max_wait, respect_retry_after=respect_retry_after
    )
    connect = getattr(websocket, "connect", None)
    if not callable(connect):
        raise TypeError("persist() needs a WebSocket (an object with a connect() method)")
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


@contextlib.contextmanager
def _stop_signal(exit_event: Optional[ExitEvent]) -> Iterator[StopSignal]:
    """A :class:`StopSignal` that is set when ``exit_event`` is.

    A ``threading.Event`` cannot wake a selector, so while the loop runs its
    ``set`` method is wrapped (on that one instance, and restored after) to
    set the signal too. An object that does not allow that is still looked
    at between events.
    """
    if exit_event is None or isinstance(exit_event, StopSignal):
        yield exit_event if exit_event is not None else StopSignal()
        return
    signal = StopSignal()
    original = exit_event.set

    def set_and_wake() -> None:
        original()
        signal.set()

    try:
        exit_event.set = set_and_wake  # type: ignore[method-assign]
        wrapped = True
    except (AttributeError, TypeError):
        wrapped = False
    if exit_event.is_set():
        signal.set()
    try:
        yield signal
    finally:
        if wrapped:
            try:
                del exit_event.set
            except AttributeError:
                pass


def _persist(
    websocket: WebSocket,
    connect: Callable[..., Iterator[events.Event]],
    options: ConnectOptions,
    settings: PersistOptions,
    exit_event: Optional[ExitEvent],
) -> Iterator[events.Event]:
    close_requested = getattr(websocket, "close_requested", None)
    signals: Tuple[StopSignal, ...] = ()
    if isinstance(close_requested, StopSignal):
        close_requested.clear()
        signals = (close_requested,)
    with _stop_signal(exit_event) as exit_signal:
        signals = (exit_signal, *signals)
        keywords = _connect_keywords(connect, options, exit_signal)

        def stopping() -> bool:
            return any(signal.is_set() for signal in signals) or (
                exit_event is not None and exit_event.is_set()
            )

        back_off = BackOff(settings)
        while not stopping():
            connection = connect(**keywords)
            try:
                closing = False
                for event in connection:
                    back_off.observe(event)
                    yield event
                    # A request the signal could not carry (a connect() without
                    # stop=, or an exit_event set through a bound method taken
                    # before this loop wrapped it) is seen between events.
                    if not closing and stopping():
                        closing = True
                        websocket.close()
            finally:
                # Also when the caller stops iterating or its handler raises:
                # the socket is closed now, not whenever the generator is collected.
                close = getattr(connection, "close", None)
                if close is not None:
                    close()
            if stopping():
                break
            delay = back_off.next_delay()
            log.debug("reconnecting to %s in %.2f s", websocket.url, delay)
            yield events.BackOff(delay)
            _back_off(signals, exit_event, delay)


def _back_off(
    signals: Tuple[StopSignal, ...], exit_event: Optional[ExitEvent], delay: float
) -> None:
    """Sleep ``delay`` seconds unless a stop is requested; no polling.

    A ``threading.Event`` set through a method bound before the loop wrapped
    it cannot wake a selector: a helper thread waits on the event itself
    for the length of this one wait, so that such a stop also ends it at once.
    """
    if exit_event is None or isinstance(exit_event, StopSignal) or exit_event.is_set():
        wait_for_stop(signals, delay)
        return
    released = StopSignal()
    event = exit_event

    def watch() -> None:
        if event.wait(delay):
            released.set()

    watcher = threading.Thread(target=watch, name="lomond-persist-wait", daemon=True)
    watcher.start()
    wait_for_stop((*signals, released), delay)


__all__ = ["BackOff", "ExitEvent", "back_off_delay", "persist", "random", "retry_after"]
