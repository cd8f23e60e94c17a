""":class:`WebSocketApp`: handlers for lomond's events, a run loop and a thread runner."""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
import threading
import traceback
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncGenerator,
    Callable,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Optional,
    Tuple,
    TypeVar,
)

import attrs
import blinker

from .. import events
from .._hints import missing_attribute
from ..constants import DEFAULT_CLOSE_REASON
from ..errors import WebSocketClosed, WebSocketClosing, WebSocketUnavailable
from ..options import ConnectOptions, PersistOptions, split_options
from ..persist import persist
from ..shield import ctrl_c_deferred
from ..status import Status
from ..wakeup import StopSignal
from ..websocket import WebSocket
from .interrupt import graceful_sigint
from .names import APP_METHODS, check_handler_names, check_websocket_options
from .outcome import Outcome, OutcomeTracker, handler_name
from .policy import ErrorPolicy, PolicyAction, check_policy, decide
from .registration import Registration
from .registry import Handler, HandlerRegistry
from .runner import Completion, Runner

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..options import RunKeywords

log = logging.getLogger("lomond.handlers")

T = TypeVar("T")

# Single quotes only: its repr, which the API reference shows, then needs no
# backslashes.
#: Raised by the app's ``send_*`` methods between Connecting and Ready.
NOT_READY = (
    "the websocket is not ready yet (the opening handshake is not done): "
    "send from a 'ready' handler (@app.on('ready') or on_ready), not from "
    "'connecting' or 'connected'"
)

#: The close sent when a handler error stops the app (RFC 6455 section 7.4.1).
HANDLER_ERROR_CLOSE = (Status.INTERNAL_ERROR, "handler error")
#: The close sent when ``KeyboardInterrupt`` (or ``SystemExit``) leaves a handler.
INTERRUPT_CLOSE = (Status.GOING_AWAY, "interrupted")


class StrongSignal(blinker.NamedSignal):
    """A blinker signal whose receivers are held strongly by default.

    ``connect(receiver)`` means ``connect(receiver, weak=False)``, so lambdas
    and closures connected to it are never dropped by the garbage collector.
    """

    def connect(self, receiver: Any, sender: Any = blinker.ANY, weak: bool = False) -> Any:
        """Connect ``receiver`` (strongly, unless ``weak=True``)."""
        return super().connect(receiver, sender, weak)


class WebSocketApp(Registration):
    """A WebSocket client driven by event handlers.

    Owns a :class:`~lomond.WebSocket` (:attr:`websocket`, built from ``url``
    and ``websocket_options``) and calls handlers for its events.
    Handlers come from two places, called in this order for each event:

    1. methods of a subclass: ``on_event(self, event)`` for every event, then
       ``on_<name>(self, event)`` for events called ``name``
       (``on_ready``, ``on_text``, ``on_closing``, ...), looked up on the
       class when the app is created;
    2. functions registered with :meth:`on` (``@app.on("text")``,
       ``@app.on(Text)``, ``@app.on("*")``), in registration order.

    Every handler for an event finishes before the next event is handled,
    in the thread that runs the loop. What happens when a handler raises is
    set by ``error_policy`` (see :mod:`lomond.handlers.policy`); the
    :meth:`on_error` method and the :attr:`on_error_signal` signal hear of
    every error. Who reports the error is decided by :meth:`report_error`:
    by default its traceback is printed to ``sys.stderr``. A run that ends
    on a connection failure no handler heard of is reported likewise, in
    one line (:meth:`report_failure`).

    A subclass method whose name starts with ``on_`` must be a handler
    (``on_<event name>``, ``on_event``) or one of the hooks (``on_error``):
    anything else (``on_txt``, websocket-client's ``on_message``) is a
    ``ValueError`` when the class is created, naming the right method.
    ``class Mine(WebSocketApp, check_handlers=False)`` turns the check off.

    :param url: a ``ws://`` or ``wss://`` URL.
    :param error_policy: ``"close"`` (default), ``"log"``, ``"raise"`` or a
        callable ``policy(event, exc)`` returning one of them; ``ValueError``
        for anything else.
    :param websocket_options: passed to :class:`~lomond.WebSocket`
        (``protocols``, ``compress``, ``headers``, ...).
    """

    def __init_subclass__(cls, check_handlers: bool = True, **kwargs: Any) -> None:
        """Refuse ``on_*`` methods that would never be called (see the class docstring)."""
        super().__init_subclass__(**kwargs)
        if check_handlers:
            check_handler_names(cls, HOOK_NAMES)

    def __init__(
        self, url: str, error_policy: ErrorPolicy = "close", **websocket_options: Any
    ) -> None:
        check_policy(error_policy)
        check_websocket_options(websocket_options)
        #: The underlying :class:`~lomond.WebSocket`.
        self.websocket = WebSocket(url, **websocket_options)
        #: See :mod:`lomond.handlers.policy`.
        self.error_policy: ErrorPolicy = error_policy
        self._registry = HandlerRegistry()
        #: This app's own blinker namespace (signals are never shared between apps).
        self.signals = blinker.Namespace()
        #: Sent as ``receiver(app, event=event, exc=exc)`` after a handler raised
        #: (and after :meth:`on_error`). Receivers are held strongly; their
        #: order is blinker's (unspecified); an error in one is logged and ignored.
        self.on_error_signal = self.signals["error"] = StrongSignal(
            "error", doc="A handler raised: receiver(app, event=event, exc=exc)."
        )
        self._generic, self._methods = self._find_methods()
        self._dispatch_lock = threading.RLock()
        self._state_lock = threading.Lock()
        # The run's stop request: set from any thread or the SIGINT handler
        # (it takes no lock), it wakes the connection's selector at once.
        self._stop = StopSignal()
        # Set by close() and a handler error *before* the Close goes out: the
        # server's answer can end the connection before the stop is set, and
        # the runner must not take that end for one to reconnect after.
        self._ending = False
        self._finished = threading.Event()
        self._finished.set()
        # wait_ready(): whether a connection is ready; runs started and ended.
        self._ready_condition = threading.Condition()
        self._ready = False
        self._runs_started = self._runs_ended = 0
        self._running = False
        self._loop_thread: Optional[threading.Thread] = None
        self._tracker = OutcomeTracker()
        # Between Connecting and Ready (or the attempt's end): sends are too early.
        self._handshaking = False
        self._last_outcome: Optional[Outcome] = None
        self._runner: Optional[Completion[Outcome]] = None
        # The handler running now, or the last one that ran (one store per
        # call): what a hub names when this app's handler holds its thread.
        self._last_handler: Optional[Handler] = None

    def __repr__(self) -> str:
        state = "running" if self._running else "idle"
        return f"<{type(self).__name__} {self.websocket.url.url!r} {state}>"

    if not TYPE_CHECKING:  # type checkers keep flagging unknown attributes

        def __getattr__(self, name: str) -> Any:
            """Only for missing attributes: websocket-client's names say what to use.

            ``app.send(...)`` is an ``AttributeError`` that says to use
            :meth:`send_text` or :meth:`send_binary`.
            """
            raise missing_attribute(self, name, APP_METHODS)

    def _find_methods(self) -> Tuple[Tuple[Handler, ...], Dict[str, Tuple[Handler, ...]]]:
        """The class's handler methods: ``on_event`` alone, and with ``on_<name>`` per event."""
        on_event = getattr(self, "on_event", None)
        generic: Tuple[Handler, ...] = (on_event,) if callable(on_event) else ()
        methods: Dict[str, Tuple[Handler, ...]] = {}
        for name in events.EVENT_TYPES:
            method = getattr(self, f"on_{name}", None)
            if callable(method):
                methods[name] = (*generic, method)
        return generic, methods

    # -- the WebSocket's API -----------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL (without credentials)."""
        return self.websocket.url.url

    @property
    def is_active(self) -> bool:
        """Connected, ready and not closing: sends will be accepted."""
        return self.websocket.is_active

    @property
    def is_closing(self) -> bool:
        """A Close frame was sent or received and the connection is not gone yet."""
        return self.websocket.is_closing

    @property
    def is_closed(self) -> bool:
        """Not connected (never connected, disconnected, or the close handshake is done)."""
        return self.websocket.is_closed

    @property
    def is_secure(self) -> bool:
        """Whether the URL is ``wss://``."""
        return self.websocket.is_secure

    @property
    def is_running(self) -> bool:
        """Whether a run (:meth:`run_forever` or :meth:`start`) is in progress."""
        return self._running

    def _send(self, send: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a WebSocket send method; during the handshake, say to wait for Ready.

        When the handshake waits because the thread that runs this app is
        held by a handler (a hub's, say), the runner's explanation says so
        instead: that is the cause, not where the send was made.
        """
        try:
            return send(*args, **kwargs)
        except WebSocketUnavailable as error:
            if self._handshaking and not isinstance(error, (WebSocketClosing, WebSocketClosed)):
                runner = self._runner
                busy = runner.explain(self) if runner is not None else None
                if busy is not None:
                    raise WebSocketUnavailable(
                        f"the websocket is not ready yet: {busy}, so the answer to "
                        "the opening handshake waits"
                    ) from None
                raise WebSocketUnavailable(NOT_READY) from None
            raise

    def send_text(self, text: str, compress: bool = True) -> None:
        """Send a text message (see :meth:`lomond.WebSocket.send_text`).

        Before the connection is ready (in a ``connecting`` or ``connected``
        handler) it raises :class:`~lomond.errors.WebSocketUnavailable`
        saying to send from a ``ready`` handler; so do the other ``send_*``.
        """
        self._send(self.websocket.send_text, text, compress)

    def send_binary(self, data: bytes, compress: bool = True) -> None:
        """Send a binary message (see :meth:`lomond.WebSocket.send_binary`)."""
        self._send(self.websocket.send_binary, data, compress)

    def send_json(self, _obj: Any = ..., **kwargs: Any) -> None:
        """Send JSON text (see :meth:`lomond.WebSocket.send_json`)."""
        self._send(self.websocket.send_json, _obj, **kwargs)

    def send_ping(self, data: bytes = b"") -> None:
        """Send a Ping (see :meth:`lomond.WebSocket.send_ping`)."""
        self._send(self.websocket.send_ping, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Send a Pong (see :meth:`lomond.WebSocket.send_pong`)."""
        self._send(self.websocket.send_pong, data)

    def close(self, code: int = Status.NORMAL, reason: str = DEFAULT_CLOSE_REASON) -> None:
        """Start the close handshake, from any thread; returns at once.

        As :meth:`lomond.WebSocket.close`: the run ends once the server
        answers (and, with ``reconnect=True``, does not reconnect, unlike a
        ``websocket.close()`` inside :func:`~lomond.persist.persist`). Use
        :meth:`stop` to also wait for the end.
        """
        with self._state_lock:
            if self._running:
                self._ending = True  # before the Close: its answer may end the connection at once
        self.websocket.close(code, reason)  # before the stop: the stop alone would close with 1000
        with self._state_lock:
            if self._running:
                self._stop.set()  # and do not reconnect

    # -- hooks -----------------------------------------------------------------------------

    def on_error(self, event: events.Event, exc: Exception) -> None:
        """Called when a handler for ``event`` raised ``exc``.

        Override it in a subclass to report errors: an override takes the
        reporting over (see :meth:`report_error`). It does nothing by
        default. An exception raised here is logged and otherwise ignored.
        The error policy applies afterwards.
        """

    def _reporting_taken_over(self) -> bool:
        """Whether the app itself hears of handler errors (see :meth:`report_error`)."""
        return (
            getattr(type(self), "on_error", None) is not WebSocketApp.on_error
            or callable(self.error_policy)
            or bool(self.on_error_signal.receivers)
        )

    def report_error(
        self, event: events.Event, handler: Any, error: Exception, action: PolicyAction
    ) -> None:
        """Make a handler error visible; called once per error, before :meth:`on_error`.

        The rule, first match wins:

        1. logging is configured (the ``lomond.handlers`` logger, ``lomond``
           or the root logger has a handler): the traceback is logged at
           ERROR on ``lomond.handlers``, and the logging setup decides;
        2. the error reaches the caller: the policy chose ``"raise"``
           (``run_forever()`` or ``join()`` raises it): nothing more;
        3. the app hears of errors itself: :meth:`on_error` is overridden,
           ``error_policy`` is a callable, or :attr:`on_error_signal` has a
           receiver: logged at DEBUG only;
        4. otherwise the traceback is printed to ``sys.stderr`` once, as
           :func:`threading.excepthook` does for a thread's exception.

        Override it to report errors some other way.
        """
        name = handler_name(handler)
        if log.hasHandlers():
            log.error(
                "%s handler %s raised %s (policy %r)", event.name, name,
                type(error).__name__, action, exc_info=error,
            )
        elif action == "raise" or self._reporting_taken_over():
            log.debug("%s handler %s raised %r", event.name, name, error)
        else:
            stderr = sys.stderr
            if stderr is None:  # pythonw: nowhere to print
                return
            ending = {
                "close": "closing the connection (error policy 'close')",
                "log": "continuing (error policy 'log')",
                "raise": "closing the connection (error policy 'raise')",
            }[action]
            print(
                f"Exception in lomond handler {name} for {type(event).__name__} "
                f"event of {self!r}; {ending}:",
                file=stderr,
            )
            traceback.print_exception(type(error), error, error.__traceback__, file=stderr)
            stderr.flush()

    def report_failure(self, outcome: Outcome, unhandled: str) -> None:
        """Make a run that ended on a connection failure visible; called once, as it ends.

        Called when a run ends because its last connection attempt failed
        (:class:`~lomond.events.ConnectFail`, :class:`~lomond.events.Rejected`,
        :class:`~lomond.events.ProtocolError`, a dropped connection), and
        not when :meth:`stop`, :meth:`close`, Ctrl-C or a handler error
        (reported by :meth:`report_error`) ended it. ``unhandled`` is the name of the
        failure event (``"connect_fail"``, say). The rule, as for handler
        errors, first match wins:

        1. the app has a handler for one of that attempt's failure events
           (``connect_fail``, ``rejected``, ``protocol_error``,
           ``unresponsive``, ``disconnected``; a method, a registered
           function, ``on_event`` or ``"*"``): it heard of it; logged at
           DEBUG only (this method is then not called);
        2. logging is configured (the ``lomond.handlers`` logger, ``lomond``
           or the root logger has a handler): logged at WARNING on
           ``lomond.handlers``, and the logging setup decides;
        3. otherwise one line is printed to ``sys.stderr``.

        .. not-runnable: what is printed, not code

        The line reads (folded here)::

            lomond: the run of WebSocketApp 'wss://example.org/feed' failed: could not
            connect to example.org:443: Connection refused (ECONNREFUSED)
            (unhandled 'connect_fail' event)

        Override it to report failures some other way.
        """
        line = (
            f"the run of {type(self).__name__} {self.url!r} failed: {outcome.reason} "
            f"(unhandled {unhandled!r} event)"
        )
        if log.hasHandlers():
            log.warning("%s", line)
            return
        stderr = sys.stderr
        if stderr is None:  # pythonw: nowhere to print
            return
        print(f"lomond: {line}", file=stderr)
        stderr.flush()

    def _report_run_failure(self, tracker: OutcomeTracker, outcome: Outcome) -> None:
        """Call :meth:`report_failure` if the run ended on a failure nobody heard of."""
        failures = tracker.unreported_failure()
        if failures is None:
            return
        if any(self.handles(name) for name in failures):
            log.debug("%r: the run ended on %s (handled)", self, outcome.reason)
            return
        try:
            self.report_failure(outcome, failures[0])
        except Exception:
            log.exception("report_failure raised while reporting a failure; ignored")

    # -- dispatch --------------------------------------------------------------------------

    @property
    def outcome(self) -> Outcome:
        """The :class:`Outcome` of the current run, or of the last one.

        Events passed to :meth:`dispatch` outside a run count too (so a unit
        test can check ``app.outcome.error``); a new run starts afresh.
        """
        return self._tracker.outcome()

    def dispatch(self, event: events.Event) -> None:
        """Handle ``event`` as if the connection had produced it.

        The same pipeline as the loop: class methods, then registered
        handlers, then the error policy. Meant for unit tests of handlers,
        without a network. Outside a run, the ``"close"`` policy only records
        the error in :attr:`outcome` (there is nothing to close) and
        ``"raise"`` re-raises it from here, after the remaining handlers ran.
        During a run, it is handled in the caller's thread, serialized with
        the loop's events.
        """
        if not isinstance(event, events.Event):
            raise TypeError(f"dispatch() takes a lomond event, not {event!r}")
        self._dispatch(event)

    def _dispatch(self, event: events.Event) -> None:
        kind = type(event)
        # Messages are nearly every event, and change neither the outcome nor
        # the handshake state: they skip that bookkeeping (a hub dispatches
        # hundreds of thousands a second on one thread).
        message = kind is _TEXT or kind is _BINARY
        with self._dispatch_lock:
            if not message:
                self._before(event)
            name = event.name
            failures: Optional[List[Failure]] = None
            for handler in self._methods.get(name, self._generic) + self._registry.handlers_for(
                name
            ):
                self._last_handler = handler
                try:
                    handler(event)
                except Exception as error:
                    failures = self._failed(failures, event, handler, error)
            if failures is not None or not message:
                self._after(event, failures)

    async def _dispatch_async(self, event: events.Event) -> None:
        """:meth:`_dispatch` for :meth:`run_async`: a handler may be ``async def``.

        Handlers are awaited one at a time, in the same order, with the same
        error handling.
        """
        message = type(event) is _TEXT or type(event) is _BINARY
        with self._dispatch_lock:
            if not message:
                self._before(event)
            name = event.name
            failures: Optional[List[Failure]] = None
            for handler in self._methods.get(name, self._generic) + self._registry.handlers_for(
                name
            ):
                self._last_handler = handler
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception as error:
                    failures = self._failed(failures, event, handler, error)
            if failures is not None or not message:
                self._after(event, failures)

    def _before(self, event: events.Event) -> None:
        """An event other than a message is about to reach the handlers: the bookkeeping."""
        self._tracker.record(event)
        kind = type(event)
        if kind is events.Connecting or kind is events.Connected:
            self._handshaking = True
        elif kind in _HANDSHAKE_OVER:
            self._handshaking = False

    def _failed(
        self,
        failures: Optional[List[Failure]],
        event: events.Event,
        handler: Handler,
        error: Exception,
    ) -> List[Failure]:
        """A handler raised: report it (see :meth:`report_error`) and note the action."""
        if failures is None:
            failures = []
        failures.append((self._handler_failed(event, handler, error), handler, error))
        return failures

    def _after(self, event: events.Event, failures: Optional[List[Failure]]) -> None:
        """The handlers for ``event`` ran: the error policy, then the ready state."""
        if failures is not None:
            self._apply_policy(failures, self._tracker)
        kind = type(event)
        if kind is events.Ready:
            if self._running:
                self._set_ready(self.websocket.is_active)
        elif kind is events.Disconnected:
            self._set_ready(False)

    def _set_ready(self, ready: bool, run_ended: bool = False) -> None:
        with self._ready_condition:
            self._ready = ready
            if run_ended:
                self._runs_ended += 1
            self._ready_condition.notify_all()

    def _handler_failed(
        self, event: events.Event, handler: Handler, error: Exception
    ) -> PolicyAction:
        """Report ``error`` (see :meth:`report_error`), tell the hooks, pick an action."""
        action = decide(self.error_policy, event, error)
        try:
            self.report_error(event, handler, error, action)
        except Exception:
            log.exception("report_error raised while reporting an error; ignored")
        try:
            self.on_error(event, error)
        except Exception:
            log.exception("on_error raised while handling an error; ignored")
        for receiver in list(self.on_error_signal.receivers_for(self)):
            try:
                receiver(self, event=event, exc=error)
            except Exception:
                log.exception("error signal receiver %r raised; ignored", receiver)
        return action

    def _apply_policy(
        self, failures: List[Failure], tracker: OutcomeTracker
    ) -> None:
        """After all of an event's handlers ran: close, or (outside a run) raise."""
        ending = [failure for failure in failures if failure[0] != "log"]
        if not ending:
            return
        first = tracker.error is None
        if first:
            tracker.handler_error(ending[0][1], ending[0][2])
        to_raise = next((error for action, _, error in ending if action == "raise"), None)
        if not self._running:
            if to_raise is not None:
                raise to_raise
            return
        if to_raise is not None and tracker.to_raise is None:
            tracker.to_raise = to_raise
        if first:
            log.info("%r: closing after a handler error (policy %r)", self, ending[0][0])
        self._ending = True
        self.websocket.close(*HANDLER_ERROR_CLOSE)
        self._stop.set()  # and do not reconnect: the handlers are broken

    # -- running ------------------------------------------------------------------------

    def _begin_run(self) -> OutcomeTracker:
        with self._state_lock:
            if self._running:
                raise RuntimeError(f"{self!r} is already running")
            self._running = True
            self._ending = False
            self._stop.clear()
            self._finished.clear()
            self._tracker = tracker = OutcomeTracker()
        with self._ready_condition:
            self._runs_started += 1
            self._ready = False
        return tracker

    # -- the seam for runners: the thread runner and lomond.handlers.hub.Hub -------------

    @property
    def stop_signal(self) -> StopSignal:
        """The current run's stop request (set by :meth:`stop`, a handler error, Ctrl-C).

        A runner attaches its waker to it (see :class:`~lomond.wakeup.StopSignal`).
        """
        return self._stop

    @property
    def ending(self) -> bool:
        """Whether the current run was asked to end: no reconnect may follow.

        True once :meth:`stop`, :meth:`close`, a handler error or Ctrl-C asked
        for the end, even before :attr:`stop_signal` is set (``close()`` sends
        its Close first, so that the stop does not replace its code with 1000).
        A runner asks this, not the stop signal, before it reconnects.
        """
        return self._ending or self._stop.is_set()

    @property
    def last_handler(self) -> Optional[Handler]:
        """The handler running now, or the last one that ran (for diagnostics).

        A :class:`~lomond.handlers.hub.Hub` names it when this app holds the
        hub's thread for too long.
        """
        return self._last_handler

    def handles(self, name: str) -> bool:
        """Whether an event called ``name`` would reach a handler now (a method or registered).

        Runners skip producing Poll events nobody handles: :meth:`run_forever`
        and :meth:`start` check when the run starts, a
        :class:`~lomond.handlers.hub.Hub` when each connection starts.
        """
        return bool(self._methods.get(name, self._generic) or self._registry.handlers_for(name))

    def begin_run(self, runner: Optional[Completion[Outcome]] = None) -> OutcomeTracker:
        """Mark a run as started (``RuntimeError`` if one is in progress): for runners.

        ``runner`` is where :meth:`join` and :meth:`stop` find the run's end
        (and its thread, which they must not wait on). The runner feeds the
        run's events to :meth:`dispatch` and calls :meth:`finish_run` once.
        """
        tracker = self._begin_run()
        if runner is not None:
            self._runner = runner
        return tracker

    def finish_run(self, tracker: OutcomeTracker) -> Outcome:
        """Mark the run begun with :meth:`begin_run` as over; its :class:`Outcome`."""
        outcome = tracker.outcome()
        if not self.ending:
            # Not ended on purpose: by stop(), close() (which sets the stop
            # too), Ctrl-C, a handler error or a hub's stop.
            self._report_run_failure(tracker, outcome)
        # Whole: a late Ctrl-C landing half-way would leave the app running
        # for good, and join() waiting.
        with ctrl_c_deferred():
            with self._state_lock:
                self._last_outcome = outcome
                self._running = False
                self._loop_thread = None
                self._ending = False
                self._stop.clear()
            self._set_ready(False, run_ended=True)
            self._finished.set()
        return outcome

    def run_forever(self, reconnect: bool = False, **options: Unpack[RunKeywords]) -> Outcome:
        """Connect and handle events in this thread until the connection ends.

        With ``reconnect=True``, reconnect whenever the connection ends (with
        :func:`lomond.persist.persist`'s back-off) until :meth:`stop` or
        :meth:`close` is called, or a handler error ends the run.

        :param options: :class:`~lomond.options.ConnectOptions` (``poll``,
            ``ping_rate``, ``ping_timeout``, ``close_timeout``, ...), plus
            :class:`~lomond.options.PersistOptions` (``min_wait``,
            ``max_wait``, ``respect_retry_after``) with ``reconnect=True``
            (``TypeError`` otherwise). An app with no handler for Poll
            events when the run starts gets none (see :meth:`handles`).
        :returns: the run's :class:`Outcome`.
        :raises: with error policy ``"raise"``, the handler's exception, once
            the connection is gone; ``KeyboardInterrupt`` (or ``SystemExit``)
            raised by a handler, after a graceful close (code 1001) bounded
            by ``close_timeout``; ``KeyboardInterrupt`` after Ctrl-C in the
            main thread, once the connection closed gracefully (code 1000;
            a second Ctrl-C interrupts at once, see
            :mod:`lomond.handlers.interrupt`); ``RuntimeError`` if the app
            is running already.
        """
        connect, reconnect_options = split_options(options, "run_forever()", reconnect)
        tracker = self.begin_run()
        return self._run(tracker, reconnect, connect, reconnect_options)

    def _run(
        self,
        tracker: OutcomeTracker,
        reconnect: bool,
        connect: ConnectOptions,
        reconnect_options: PersistOptions,
    ) -> Outcome:
        self._loop_thread = threading.current_thread()
        try:
            if self._stop.is_set():
                log.debug("%r: stopped before connecting", self)
            else:
                source: Iterator[events.Event]
                keywords = self._keywords(connect, reconnect, reconnect_options)
                if reconnect:
                    source = persist(self.websocket, exit_event=self._stop, **keywords)
                else:
                    source = self.websocket.connect(stop=self._stop, **keywords)
                with graceful_sigint(self._stop) as interrupted:
                    # Closing the source inside the block: a third Ctrl-C
                    # must not cut short the closing of the socket.
                    try:
                        self._pump(source)
                    finally:
                        close = getattr(source, "close", None)
                        if close is not None:
                            close()
                if interrupted:
                    raise KeyboardInterrupt
        finally:
            outcome = self.finish_run(tracker)
        if tracker.to_raise is not None:
            raise tracker.to_raise
        return outcome

    def _keywords(
        self, connect: ConnectOptions, reconnect: bool, reconnect_options: PersistOptions
    ) -> Dict[str, Any]:
        """The run's options as keywords for ``connect()``/``persist()``, polls only if handled."""
        if connect.poll and not self.handles("poll"):
            # Nobody listens to Poll events: do not wake every few seconds to
            # deliver them (an idle app then costs nothing).
            connect = attrs.evolve(connect, poll=0)
        keywords: Dict[str, Any] = attrs.asdict(connect)
        if reconnect:
            keywords.update(attrs.asdict(reconnect_options))
        return keywords

    async def run_async(self, reconnect: bool = False, **options: Unpack[RunKeywords]) -> Outcome:
        """:meth:`run_forever` on the running asyncio loop: ``await app.run_async()``.

        The same handlers (plain functions, or ``async def``: each is awaited
        before the next runs, one event at a time), error policies, outcome
        and reconnects (``reconnect=True``, :func:`lomond.asyncio.persist`);
        ``self.send_text()`` and friends work in handlers and from any thread,
        :meth:`stop` and :meth:`close` too. Many apps on one loop need nothing
        more than ``asyncio.gather`` or a ``TaskGroup``. Cancelling the task
        closes the connection gracefully (code 1001) and then re-raises
        ``CancelledError``. Returns the run's :class:`Outcome`.
        """
        # Imported here: a program that never runs an app on asyncio does
        # not pay for importing asyncio.
        from ..asyncio.websocket import connect_events
        from ..asyncio.websocket import persist as persist_async

        connect, reconnect_options = split_options(options, "run_async()", reconnect)
        tracker = self.begin_run()
        self._loop_thread = threading.current_thread()
        try:
            if self._stop.is_set():
                log.debug("%r: stopped before connecting", self)
            else:
                source: AsyncGenerator[events.Event, None]
                keywords = self._keywords(connect, reconnect, reconnect_options)
                if reconnect:
                    source = persist_async(self.websocket, exit_event=self._stop, **keywords)
                else:
                    source = connect_events(
                        self.websocket, ConnectOptions(**keywords), self._stop
                    ).__aiter__()
                try:
                    await self._pump_async(source)
                finally:
                    await source.aclose()
        finally:
            outcome = self.finish_run(tracker)
        if tracker.to_raise is not None:
            raise tracker.to_raise
        return outcome

    async def _pump_async(self, source: AsyncGenerator[events.Event, None]) -> None:
        async for event in source:
            if type(event) is _BACK_OFF and self.ending:
                # persist's last event when it stops: no reconnect follows.
                # The stop may not be set yet (close() sets it after its
                # Close): set it before persist resumes, so it does not reconnect.
                self._stop.set()
                continue
            try:
                await self._dispatch_async(event)
            except BaseException:
                # Cancelled in a handler, or KeyboardInterrupt/SystemExit from
                # one: close gracefully, wait (up to close_timeout), re-raise.
                self._stop.set()
                self.websocket.close(*INTERRUPT_CLOSE)
                async for rest in source:
                    self._tracker.record(rest)
                raise

    def _pump(self, source: Iterator[events.Event]) -> None:
        for event in source:
            if type(event) is _BACK_OFF and self.ending:
                # persist()'s last event when it stops (Lomond 0.3.4's habit):
                # no reconnect follows, so an app is not told of one (nor on a
                # Hub). The stop may not be set yet (close() sets it after its
                # Close): set it before persist resumes, so it does not reconnect.
                self._stop.set()
                continue
            try:
                self._dispatch(event)
            except BaseException:
                # KeyboardInterrupt or SystemExit from a handler: close
                # gracefully, wait (up to close_timeout) for the end, re-raise.
                self._stop.set()
                self.websocket.close(*INTERRUPT_CLOSE)
                for rest in source:
                    self._tracker.record(rest)
                raise

    # -- the thread runner ---------------------------------------------------------------

    def start(self, reconnect: bool = False, **options: Unpack[RunKeywords]) -> None:
        """Run :meth:`run_forever` in a daemon thread and return at once.

        The thread is named ``lomond-app-<host>``. Use :meth:`wait_ready`,
        :meth:`stop` and :meth:`join`. ``RuntimeError`` if already running.
        A :meth:`stop` issued right after ``start()`` is never lost: the run
        then ends without connecting.
        """
        connect, reconnect_options = split_options(options, "start()", reconnect)
        tracker = self.begin_run()

        def target() -> Outcome:
            try:
                return self._run(tracker, reconnect, connect, reconnect_options)
            except BaseException as error:
                if error is not tracker.to_raise:  # a handler error is logged already
                    log.error("%r: the loop ended with an exception", self, exc_info=error)
                raise

        runner: Runner[Outcome] = Runner(target, name=f"lomond-app-{self.websocket.url.host}")
        self._runner = runner
        try:
            runner.start()
        except BaseException:
            with self._state_lock:
                self._running = False
            self._finished.set()
            raise

    run_in_thread = start

    def stop(self, timeout: Optional[float] = 5.0) -> Optional[Outcome]:
        """End the run from any thread: close gracefully, cancel any back-off wait, wait.

        Returns the run's :class:`Outcome`, or ``None`` if it is still running
        after ``timeout`` seconds (or when called from a handler, which cannot
        wait for its own loop). Never raises the run's error (see :meth:`join`).
        On an app that is not running it only returns the last outcome.
        """
        with self._state_lock:
            running = self._running
            if running:
                self._stop.set()
        if running:
            self.websocket.close()
            runner = self._runner
            if runner is not None:
                runner.cancel(self)  # a run that has not started (a hub not running) ends now
            if self._loop_thread is threading.current_thread() or (
                runner is not None
                and not runner.done
                and runner.thread is threading.current_thread()
            ):
                return None  # a handler cannot wait for its own loop (one app's, or a hub's)
        if not self._finished.wait(timeout):
            return None
        runner = self._runner
        if runner is not None:
            runner.wait(timeout)
        return self._last_outcome

    def join(self, timeout: Optional[float] = None) -> Optional[Outcome]:
        """Wait for the thread started by :meth:`start`; its :class:`Outcome`.

        ``None`` if it is still running after ``timeout`` seconds (or if it
        was never started). Raises what ``run_forever`` raised in the thread:
        with error policy ``"raise"``, the handler's exception.
        """
        runner = self._runner
        if runner is not None and not runner.done and runner.thread is threading.current_thread():
            # After the run (a hub's run_forever() returned in this thread,
            # say) there is nothing left to wait for, and no handler runs.
            raise RuntimeError("join() called from a handler: the loop cannot wait for itself")
        if runner is None or not runner.wait(timeout):
            return None
        if runner.exception is not None:
            raise runner.exception
        return runner.result

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait until a connection is ready (and its Ready handlers ran).

        Returns ``True`` once a connection is ready, ``False`` if the run
        ends or ``timeout`` seconds pass first. When the app is not running
        it returns ``False`` at once, except before the app's first run: then
        it waits for that run (which another thread may be about to start).
        """

        def settled() -> bool:
            return self._ready or 0 < self._runs_started == self._runs_ended

        with self._ready_condition:
            self._ready_condition.wait_for(settled, timeout)
            return self._ready

    @contextlib.contextmanager
    def running(
        self, reconnect: bool = False, **options: Unpack[RunKeywords]
    ) -> Iterator[WebSocketApp]:
        """``with app.running(**options):`` starts the app, and stops it on exit.

        On a normal exit, an error the run raised (policy ``"raise"``) is
        re-raised; if the body raised, that exception propagates instead.
        """
        self.start(reconnect, **options)
        try:
            yield self
        finally:
            self.stop()
        self.join(0)


#: A handler error: what the policy decided, the handler, the exception.
Failure = Tuple[PolicyAction, Handler, Exception]
#: The message events, which ``_dispatch`` passes straight to the handlers.
_TEXT, _BINARY = events.Text, events.Binary
_BACK_OFF = events.BackOff
#: Events after which a connection attempt is no longer in its opening handshake.
_HANDSHAKE_OVER = frozenset(
    {
        events.Ready,
        events.ConnectFail,
        events.Rejected,
        events.ProtocolError,
        events.Closing,
        events.Closed,
        events.Disconnected,
    }
)

#: Methods and attributes of WebSocketApp named ``on_*`` that are not event handlers.
HOOK_NAMES: FrozenSet[str] = frozenset(
    name for name in dir(WebSocketApp) if name.startswith("on_")
) | {"on_error_signal", "on_event"}

__all__ = [
    "HANDLER_ERROR_CLOSE",
    "HOOK_NAMES",
    "INTERRUPT_CLOSE",
    "NOT_READY",
    "StrongSignal",
    "WebSocketApp",
]
