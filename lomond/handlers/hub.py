""":class:`Hub`: many :class:`~lomond.handlers.WebSocketApp` connections on one thread.

.. not-runnable: a fragment (symbols and show are yours) that runs until Ctrl-C

``app.start()`` gives each app a thread of its own; a hub runs any number of
apps on a single thread, with one selector and one timer heap
(:class:`~lomond.hub.reactor.Reactor`), over the same sans-I/O protocol::

    from lomond.handlers import Hub, WebSocketApp

    hub = Hub()
    for symbol in symbols:
        app = WebSocketApp(f"wss://example.org/feed/{symbol}")
        app.on("text")(show)
        hub.add(app, reconnect=True)
    hub.run_forever()              # or hub.start() ... hub.stop()

Each app keeps all of its behaviour: handlers and subclass methods, error
policies, :meth:`~lomond.handlers.WebSocketApp.stop`,
:meth:`~lomond.handlers.WebSocketApp.join`, outcomes, reconnects with
jittered back-off (``reconnect=True`` and the
:class:`~lomond.options.PersistOptions`), the connection options, and
sends from any thread.

One thread runs every app's handlers, one event at a time: **a handler that
blocks delays every other app on the hub** (its pings and close handshakes
included). Keep handlers short, and hand slow work to :meth:`Hub.offload`,
which runs it on a pool of threads one task at a time per app, so that an
app's messages are still processed in the order they arrived. Do not wait
for a hub app from a handler on the hub (``wait_ready()``, ``join()``);
``stop()`` there only requests the stop.

A handler that holds the hub's thread longer than ``slow_handler`` seconds
(1 by default) is reported with a warning naming it and its app, as
asyncio's debug mode reports slow callbacks; :meth:`Hub.stop` that times
out, and a send refused because the hub could not process a handshake's
answer yet, say which handler holds the thread.

An idle hub wakes only for its connections' own timers. One difference from
a thread: an app that has no handler for :class:`~lomond.events.Poll` events
(no ``on_poll``/``on_event`` method, nothing registered for ``"poll"`` or
``"*"``) when a connection starts gets no Poll events on that connection, so
its idle connection wakes only for pings.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, TypeVar

import attrs

from .. import events
from ..driver import Session, SessionSettings
from ..errors import WebSocketUnavailable
from ..hub.connector import Connector, check_workers
from ..hub.reactor import Reactor, Timer
from ..hub.session import HubSession
from ..options import ConnectOptions, split_options
from ..persist import BackOff
from ..shield import ctrl_c_deferred
from ..wakeup import StopSignal
from .app import INTERRUPT_CLOSE, WebSocketApp
from .interrupt import graceful_sigint
from .outcome import Outcome, OutcomeTracker, handler_name
from .runner import Completion, Runner
from .serial import SerialExecutor

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..options import RunKeywords

log = logging.getLogger("lomond.hub")

T = TypeVar("T")

#: A send refused during a handshake, and a stop that timed out, name the
#: handler holding the hub's thread once it has held it this long (seconds).
BUSY_HINT = 0.1


class _Member:
    """One app's run on the hub: its connections, back-off waits and end (hub thread)."""

    __slots__ = (
        "app", "back_off", "begun", "completion", "ended", "hub", "options", "session",
        "timer", "tracker",
    )

    def __init__(
        self,
        hub: Hub,
        app: WebSocketApp,
        tracker: OutcomeTracker,
        completion: Completion[Outcome],
        options: ConnectOptions,
        back_off: Optional[BackOff],
    ) -> None:
        self.hub = hub
        self.app = app
        self.tracker = tracker
        self.completion = completion
        self.options = options
        self.back_off = back_off
        self.session: Optional[HubSession] = None
        self.timer: Optional[Timer] = None
        self.begun = False
        self.ended = False

    def wake(self) -> None:
        """A stop request (a :class:`~lomond.wakeup.Wakeable`): look on the hub's thread."""
        self.hub._reactor.call_soon_threadsafe(self.check_stop)

    def stopping(self) -> bool:
        # The app's stop request only (stop(), close(), a handler error):
        # a websocket.close() alone ends a connection, not the run.
        return self.app.ending

    def begin(self) -> None:
        if self.begun or self.ended:
            return
        self.begun = True
        self.completion.thread = threading.current_thread()
        app = self.app
        app.stop_signal.attach(self)
        if self.stopping():
            log.debug("%r: stopped before connecting", app)
            self.end()
            return
        self.connect()

    def _session(
        self, settings: SessionSettings, on_end: Callable[[Session], None]
    ) -> HubSession:
        hub = self.hub
        assert hub._connector is not None
        return HubSession(
            settings, on_end, reactor=hub._reactor, connector=hub._connector,
            emit=self.emit, on_over=self.connection_over, owner=self,
        )

    def connect(self) -> None:
        self.timer = None
        if self.ended:
            return
        if self.stopping():
            self.end()
            return
        options = self.options
        if options.poll and not self.app.handles("poll"):
            # Nobody listens: a Poll would wake the hub for nothing, 10,000
            # connections times every few seconds. Checked per connection.
            options = attrs.evolve(options, poll=0)
        try:
            session = self.app.websocket.open_session(
                self._session, options, self.app.stop_signal
            )
        except WebSocketUnavailable as error:
            log.error("%r: cannot connect on the hub: %s", self.app, error)
            self.end()
            return
        self.session = session
        session.start()

    def emit(self, event: events.Event) -> None:
        """Deliver one event to the app; never raises (the reactor's callbacks must not)."""
        if self.back_off is not None:
            self.back_off.observe(event)
        try:
            self.app.dispatch(event)
        except BaseException as error:
            # KeyboardInterrupt or SystemExit from a handler: as run_forever()
            # does, close this app gracefully; then the hub stops and re-raises.
            self.app.stop_signal.set()
            self.app.websocket.close(*INTERRUPT_CLOSE)
            self.hub._interrupted(error)

    def connection_over(self) -> None:
        """After a connection's last event: back off and reconnect, or end the run."""
        self.session = None
        if self.back_off is None or self.stopping():
            self.end()
            return
        delay = self.back_off.next_delay()
        log.debug("reconnecting to %s in %.2f s", self.app.websocket.url, delay)
        self.emit(events.BackOff(delay))
        if self.stopping():
            self.end()
            return
        self.timer = self.hub._reactor.call_later(delay, self.connect)

    def check_stop(self) -> None:
        # The session sees the stop request itself; between connections
        # (a back-off wait) it is ours to end the run.
        if self.begun and not self.ended and self.session is None and self.stopping():
            self.end()

    def end(self) -> None:
        if self.ended:
            return
        # Whole: a Ctrl-C landing after ``ended`` was set would leave the app
        # running for good (a later end() does nothing).
        with ctrl_c_deferred():
            self.ended = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            app = self.app
            app.stop_signal.detach(self)
            outcome = app.finish_run(self.tracker)
            if self.tracker.to_raise is not None:
                self.completion.set_exception(self.tracker.to_raise)
            else:
                self.completion.set_result(outcome)
        self.hub._member_ended(self)


class Hub:
    """Runs many :class:`~lomond.handlers.WebSocketApp` connections on one thread.

    :param connect_workers: threads that open connections (DNS, TCP, proxy,
        TLS; name resolution blocks, so it happens there). At most this many
        connects are in progress at once; the rest queue.
    :param offload_workers: threads for :meth:`offload` (started when first used).
    :param name: the name of the thread :meth:`start` creates.
    :param slow_handler: seconds a handler (or anything else on the hub's
        thread) may hold the thread before a warning names it and its app;
        ``None`` turns the warning off.

    See the module documentation for what runs where.
    """

    def __init__(
        self,
        *,
        connect_workers: int = 8,
        offload_workers: int = 8,
        name: str = "lomond-hub",
        slow_handler: Optional[float] = 1.0,
    ) -> None:
        check_workers(connect_workers, "connect_workers")
        check_workers(offload_workers, "offload_workers")
        if slow_handler is not None and (
            isinstance(slow_handler, bool)
            or not isinstance(slow_handler, (int, float))
            or not slow_handler > 0
            or math.isinf(slow_handler)
        ):
            raise ValueError(f"slow_handler must be seconds > 0 or None, not {slow_handler!r}")
        #: The name of the thread :meth:`start` creates.
        self.name = name
        self._connect_workers = connect_workers
        self._offload_workers = offload_workers
        self._reactor = Reactor(slow_handler, self._slow)
        # One bound method for every app's completion, not one closure each.
        self._explain_delay = self._explain
        self._cancel_unstarted = self._stop_unstarted
        self._connector: Optional[Connector] = None
        self._lock = threading.Lock()
        self._members: Dict[WebSocketApp, _Member] = {}
        self._running = False
        self._stopping = False
        self._stop = StopSignal()
        self._done = threading.Event()
        self._done.set()
        self._interrupt: Optional[BaseException] = None
        self._runner: Optional[Runner[None]] = None
        self._serial: Optional[SerialExecutor] = None

    def __repr__(self) -> str:
        state = "running" if self._running else "idle"
        return f"<Hub {self.name!r} {state}, {len(self._members)} apps>"

    # -- apps ---------------------------------------------------------------------------

    @property
    def apps(self) -> List[WebSocketApp]:
        """The apps on the hub (added and not ended)."""
        with self._lock:
            return list(self._members)

    @property
    def is_running(self) -> bool:
        """Whether the hub's loop runs (:meth:`run_forever` or :meth:`start`)."""
        return self._running

    def add(
        self, app: WebSocketApp, reconnect: bool = False, **options: Unpack[RunKeywords]
    ) -> None:
        """Run ``app`` on the hub (from any thread; it connects once the hub runs).

        The same as ``app.run_forever(reconnect, **options)``, on the hub's
        thread: ``app.stop()``, ``app.join()``, ``app.wait_ready()`` and
        :attr:`~lomond.handlers.WebSocketApp.outcome` work as for
        :meth:`~lomond.handlers.WebSocketApp.start`. The app leaves the hub
        when its run ends. ``RuntimeError`` if the app is running already or
        the hub is stopping; ``TypeError``/``ValueError`` for wrong options.
        """
        if not isinstance(app, WebSocketApp):
            raise TypeError(f"Hub.add() takes a WebSocketApp, not {app!r}")
        connect, persist_options = split_options(options, "Hub.add()", reconnect)
        back_off = BackOff(persist_options) if reconnect else None
        completion: Completion[Outcome] = Completion(
            self._reactor.thread, self._explain_delay, self._cancel_unstarted
        )
        with self._lock:
            if self._stopping:
                raise RuntimeError(f"{self!r} is stopping: cannot add {app!r}")
            tracker = app.begin_run(completion)
            member = _Member(self, app, tracker, completion, connect, back_off)
            self._members[app] = member
        self._reactor.call_soon_threadsafe(member.begin)

    def remove(self, app: WebSocketApp, timeout: Optional[float] = 5.0) -> Optional[Outcome]:
        """Stop ``app`` (a graceful close) and wait for its run to end: ``app.stop(timeout)``.

        Returns its :class:`~lomond.handlers.Outcome`, or ``None`` while it
        is still closing (or when called from the hub's thread, which cannot
        wait for itself). ``ValueError`` if the app is not on this hub.
        """
        with self._lock:
            member = self._members.get(app)
            if member is None:
                raise ValueError(f"{app!r} is not on {self!r}")
            idle = not self._running
        if idle:
            self._end_unstarted([member])
        return app.stop(timeout)

    def _stop_unstarted(self, app: WebSocketApp) -> None:
        """``app.stop()`` on a hub that is not running: its run ends now, as remove() ends it."""
        with self._lock:
            member = self._members.get(app)
            idle = not self._running
        if member is not None and idle:
            self._end_unstarted([member])

    def offload(
        self, app: WebSocketApp, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` off the hub's thread, after ``app``'s earlier offloads.

        For slow work in a handler: the hub goes on serving the other apps,
        and one app's tasks run one at a time in the order they were
        offloaded (so its messages are processed in order). Tasks of
        different apps run in parallel, on ``offload_workers`` threads.
        Returns a :class:`concurrent.futures.Future`. Send replies from the
        task with ``app.send_text()`` and friends: sends work from any thread.
        """
        with self._lock:
            serial = self._serial
            if serial is None:
                pool = ThreadPoolExecutor(
                    self._offload_workers, thread_name_prefix=f"{self.name}-work"
                )
                serial = self._serial = SerialExecutor(pool)
        return serial.submit(app, fn, *args, **kwargs)

    # -- running ---------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Run the hub in this thread until :meth:`stop` (apps may come and go meanwhile).

        :meth:`stop` closes every app gracefully and returns once they all
        ended. In the main thread, Ctrl-C does the same, then
        ``KeyboardInterrupt`` is raised; so is a ``KeyboardInterrupt`` (or
        ``SystemExit``) that a handler raised. ``RuntimeError`` if running.
        """
        self._prepare()
        self._loop()

    def start(self) -> None:
        """Run :meth:`run_forever` in a daemon thread (named ``name``); returns at once.

        A :meth:`stop` right after ``start()`` is never lost.
        """
        self._prepare()
        runner: Runner[None] = Runner(self._loop, name=self.name)
        self._runner = runner
        try:
            runner.start()
        except BaseException:
            self._finish()
            raise

    def _prepare(self) -> None:
        # In the caller's thread, so that a stop() issued as soon as start()
        # returns finds the hub running and is seen by its loop.
        with self._lock:
            if self._running:
                raise RuntimeError(f"{self!r} is running already")
            self._running = True
            self._stopping = False
            self._interrupt = None
            self._stop.clear()
            self._done.clear()
            self._connector = Connector(self._connect_workers)
        self._stop.attach(self)

    def _loop(self) -> None:
        thread = threading.current_thread()
        with self._lock:
            for member in self._members.values():
                member.completion.thread = thread
        interrupted: List[int] = []
        try:
            with graceful_sigint(self._stop) as interrupted:
                try:
                    self._reactor.run()
                except BaseException:
                    # A second Ctrl-C (or another exception) left the loop: no
                    # graceful close any more, but no socket is left open either,
                    # and every app's run ends (join() and stop() return). Still
                    # in graceful_sigint: a further Ctrl-C cannot cut this short.
                    self._abort_members()
                    raise
        finally:
            self._finish()
        if self._interrupt is not None:
            raise self._interrupt
        if interrupted:
            raise KeyboardInterrupt

    def _finish(self) -> None:
        self._stop.detach(self)
        if self._connector is not None:
            self._connector.shutdown()
        with self._lock:
            self._running = False
            self._stopping = False
        self._done.set()

    def stop(self, timeout: Optional[float] = 10.0) -> bool:
        """Close every app gracefully, then end the loop; from any thread.

        Waits up to ``timeout`` seconds for that (each app's close is bounded
        by its ``close_timeout``) and returns whether the hub stopped; from
        the hub's own thread it only requests the stop (``False``).
        """
        self._stop.set()
        with self._lock:
            running = self._running
            unstarted = [] if running else list(self._members.values())
        if unstarted:
            self._end_unstarted(unstarted)
        if not running:
            return True
        if self._reactor.in_loop():
            return False
        if self._done.wait(timeout):
            return True
        with self._lock:
            left = list(self._members)
        log.warning(
            "%r.stop(%s) timed out: %s", self, timeout,
            self.busy_report() or f"still closing: {', '.join(map(repr, left)) or 'nothing'}",
        )
        return False

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the thread :meth:`start` created; whether it ended.

        Re-raises what ``run_forever()`` raised there (``KeyboardInterrupt``
        from a handler, say).
        """
        runner = self._runner
        if runner is None:
            return not self._running
        if not runner.wait(timeout):
            return False
        if runner.exception is not None:
            raise runner.exception
        return True

    # -- what holds the hub's thread --------------------------------------------------------

    def busy_report(self) -> Optional[str]:
        """What has held the hub's thread for a while now (``None`` if nothing): from any thread.

        Names the app and its handler, as in "the hub's thread has been
        running on_text of <App ...> for 2.5 s".
        """
        return self._held(None)

    def _explain(self, app: WebSocketApp) -> Optional[str]:
        """Why ``app``'s handshake waits, if the hub's thread is the cause (any thread)."""
        member = self._members.get(app)
        return None if member is None else self._held(member.session)

    def _held(self, session: Optional[HubSession]) -> Optional[str]:
        """What holds the hub's thread: held for :data:`BUSY_HINT` already, or at all
        while bytes wait unread on ``session``'s socket (an answer the hub cannot read)."""
        busy = self._reactor.busy
        if busy is None:
            return None
        callback, since = busy
        held = time.monotonic() - since
        if held < BUSY_HINT and not (session is not None and session.input_waiting()):
            return None
        return f"the hub's thread has been running {_describe(callback)} for {held:.1f} s"

    def _slow(self, callback: Callable[..., None], seconds: float) -> None:
        """The reactor's report of a callback that held the thread too long (hub's thread)."""
        log.warning(
            "%s held the hub's thread for %.2f s (slow_handler=%g s): every app on %r waited "
            "meanwhile; hand slow work to Hub.offload()",
            _describe(callback), seconds, self._reactor.slow_callback, self,
        )

    # -- internal, on the hub's thread -----------------------------------------------------

    def wake(self) -> None:
        """The hub's stop signal was set (a :class:`~lomond.wakeup.Wakeable`)."""
        self._reactor.call_soon_threadsafe(self._begin_stopping)

    def _begin_stopping(self) -> None:
        if not self._stop.is_set():
            return  # queued by an earlier run's stop, after that run ended
        with self._lock:
            if not self._running:
                return
            self._stopping = True
            members = list(self._members.values())
        for member in members:
            member.app.stop_signal.set()
            member.app.websocket.close()
        if not members:
            self._reactor.stop()

    def _abort_members(self) -> None:
        with self._lock:
            members = list(self._members.values())
        for member in members:
            session = member.session
            if session is not None:
                session.abort()
            member.begun = True
            member.end()

    def _end_unstarted(self, members: List[_Member]) -> None:
        # The hub does not run: nothing else touches these members, so
        # their runs end here, in the caller's thread.
        for member in members:
            if not member.begun:
                member.begun = True
                member.end()

    def _member_ended(self, member: _Member) -> None:
        with self._lock:
            if self._members.get(member.app) is member:
                del self._members[member.app]
            last = self._stopping and not self._members
        if last:
            self._reactor.stop()

    def _interrupted(self, error: BaseException) -> None:
        if self._interrupt is None:
            self._interrupt = error
        self._stop.set()


def _describe(callback: Callable[..., None]) -> str:
    """A hub callback in words: the app it runs for, and that app's last handler."""
    target = getattr(callback, "__self__", None)
    member = target if isinstance(target, _Member) else getattr(target, "owner", None)
    if not isinstance(member, _Member):
        return f"the callback {callback!r}"
    app = member.app
    handler = app.last_handler
    if handler is None:
        return f"{app!r}"
    return f"the handler {handler_name(handler)} of {app!r}"


__all__ = ["BUSY_HINT", "Hub"]
