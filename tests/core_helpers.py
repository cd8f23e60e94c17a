"""The test suite's plain helpers, in one place (fixtures live in conftest.py).

* :func:`collect` runs a connection to the end with a watchdog, so a bug that
  hangs the loop fails one test with the events seen so far instead of
  stalling the whole run; :func:`exchange` is the usual "connect, say hello,
  close after the answer" run on top of it;
* :func:`check_order` asserts the event grammar documented in
  :mod:`lomond.events`;
* :func:`names` and :func:`first` read a list of events;
* :func:`later` runs an action from another thread after a delay;
* :func:`wait_for` waits (with a timeout) for a condition;
* :func:`refused_port` gives a loopback port nothing listens on;
* :func:`run_async` runs a coroutine on a new event loop (asyncio's or
  another factory's, uvloop's say) with a watchdog, and :func:`acollect` /
  :func:`aexchange` are :func:`collect` / :func:`exchange` for a
  :class:`lomond.asyncio.WebSocket` (the asyncio tests use no pytest plugin);
* :func:`open_descriptors` counts this process's file descriptors;
* :func:`raw_upgrade_request` is an opening handshake to send on a raw socket;
* :func:`open_protocol`, :func:`server_response` and :func:`server_frame`
  drive a sans-I/O :class:`~lomond.protocol.ClientProtocol` with the bytes a
  server would send.

Proxy variables are removed from the environment of every test by the
autouse ``no_proxy_env`` fixture in conftest.py.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, TypeVar

from lomond import WebSocket, events
from lomond.frame import build_frame
from lomond.handshake import accept_for, parse_url
from lomond.protocol import ClientProtocol, State

#: Test defaults for connect(): short timeouts, no automatic pings.
FAST: Dict[str, Any] = dict(
    ping_rate=0, close_timeout=3.0, connect_timeout=3.0, handshake_timeout=3.0
)

T = TypeVar("T")


def names(seen: Sequence[events.Event]) -> List[str]:
    """The names of ``seen``, Poll left out (how many polls come depends on timing)."""
    return [event.name for event in seen if event.name != "poll"]


def first(seen: Sequence[events.Event], kind: type) -> Any:
    """The first event of type ``kind`` in ``seen``; fails the test if there is none."""
    for event in seen:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__} in {[e.name for e in seen]}")


def later(delay: float, action: Callable[[], None]) -> List[float]:
    """Run ``action`` after ``delay`` seconds in a daemon thread.

    Returns a list that receives the ``time.monotonic()`` at which the action
    ran (empty until then), for "ended soon after the stop" checks.
    """
    when: List[float] = []

    def go() -> None:
        time.sleep(delay)
        when.append(time.monotonic())
        action()

    threading.Thread(target=go, daemon=True).start()
    return when


class Run:
    """The events of one connection and when each arrived (monotonic seconds)."""

    def __init__(self) -> None:
        self.events: List[events.Event] = []
        self.times: List[float] = []
        self.start = time.monotonic()

    @property
    def names(self) -> List[str]:
        return [e.name for e in self.events]

    def first(self, cls: type) -> Any:
        for event in self.events:
            if isinstance(event, cls):
                return event
        raise AssertionError(f"no {cls.__name__} in {self.names}")

    def time_of(self, cls: type) -> float:
        """Seconds from the start of the run to the first event of type ``cls``."""
        for event, at in zip(self.events, self.times):
            if isinstance(event, cls):
                return at - self.start
        raise AssertionError(f"no {cls.__name__} in {self.names}")

    def of(self, cls: type) -> List[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def collect(
    websocket: WebSocket,
    on_event: Optional[Callable[[events.Event], None]] = None,
    timeout: float = 15.0,
    **options: Any,
) -> Run:
    """Iterate ``websocket.connect(**options)`` to the end; return what happened.

    ``on_event`` is called for each event inside the loop (so it may send or
    close, like a real application). A watchdog force-disconnects after
    ``timeout`` seconds and the test fails: the loop must end by itself.
    """
    kwargs = dict(FAST)
    kwargs.update(options)
    run = Run()
    fired = threading.Event()

    def watchdog() -> None:
        fired.set()
        websocket.force_disconnect()

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    try:
        for event in websocket.connect(**kwargs):
            run.events.append(event)
            run.times.append(time.monotonic())
            if on_event is not None:
                on_event(event)
    finally:
        timer.cancel()
    assert not fired.is_set(), f"the event loop did not end within {timeout}s: {run.names}"
    check_order(run.events)
    return run


def say_hello(websocket: WebSocket) -> None:
    """The default ``on_ready`` of :func:`exchange`: send the text "hello"."""
    websocket.send_text("hello")


def exchange(
    websocket: WebSocket,
    on_ready: Optional[Callable[[WebSocket], None]] = say_hello,
    messages: int = 1,
    timeout: float = 15.0,
    **options: Any,
) -> List[events.Event]:
    """Run one connection: ``on_ready(websocket)`` on Ready, close after ``messages``
    Text or Binary messages; return every event (see :func:`collect`).

    Pass ``on_ready=WebSocket.close`` to close as soon as the connection is
    ready. Connect and handshake timeouts are 10 s unless given (a proxy or
    TLS peer on a busy machine may take a while).
    """
    received = 0

    def on_event(event: events.Event) -> None:
        nonlocal received
        if isinstance(event, events.Ready):
            if on_ready is not None:
                on_ready(websocket)
        elif isinstance(event, (events.Text, events.Binary)):
            received += 1
            if received >= messages:
                websocket.close()

    options.setdefault("connect_timeout", 10.0)
    options.setdefault("handshake_timeout", 10.0)
    return collect(websocket, on_event, timeout, **options).events


MESSAGE_EVENTS = {"text", "binary", "ping", "pong", "poll", "protocol_error", "unresponsive"}


def check_order(evs: List[events.Event]) -> None:
    """Assert the order documented in lomond.events::

        Connecting
        ConnectFail                                   (could not connect; the end)
        Connected -> Rejected -> Disconnected         (handshake refused)
        Connected -> ConnectFail -> Disconnected      (no usable answer to the upgrade)
        Connected -> Ready -> (Text | Binary | Ping | Pong | Poll | ProtocolError
                  | Unresponsive)* -> [Closing | Closed] -> Disconnected
    """
    names = [e.name for e in evs]
    assert names, "no events at all"
    assert names[0] == "connecting", names
    assert names.count("connecting") == 1, names
    if names[1:2] == ["connect_fail"]:
        assert len(names) == 2, f"events after ConnectFail without Connected: {names}"
        return
    assert names[1] == "connected", names
    assert names.count("connected") == 1, names
    assert names[-1] == "disconnected", f"the last event is not Disconnected: {names}"
    assert names.count("disconnected") == 1, f"not exactly one Disconnected: {names}"
    middle = names[2:-1]
    assert middle, f"nothing between Connected and Disconnected: {names}"
    if middle[0] in ("rejected", "connect_fail"):
        assert len(middle) == 1, names
        return
    assert middle[0] == "ready", names
    body = middle[1:]
    if body and body[-1] in ("closing", "closed"):
        body = body[:-1]
    unexpected = [n for n in body if n not in MESSAGE_EVENTS]
    assert not unexpected, f"{unexpected} out of place in {names}"
    # Unresponsive is followed by Disconnected; ProtocolError ends the connection too.
    for terminal in ("unresponsive", "protocol_error"):
        if terminal in body:
            assert body.index(terminal) == len(body) - 1 and body == middle[1:], names
    for event in evs:
        if isinstance(event, events.Disconnected):
            assert isinstance(event.graceful, bool)


def refused_port() -> int:
    """A loopback port that refuses connections (bound, never listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


# -- a sans-I/O protocol fed the bytes a server sends ---------------------------------


def server_response(protocol: ClientProtocol) -> bytes:
    """A correct ``101`` answer to ``protocol``'s upgrade request (RFC 6455 section 4.2.2)."""
    for line in protocol.request().split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
            break
    else:
        raise AssertionError("no Sec-WebSocket-Key in the request")
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_for(key).encode()
        + b"\r\n\r\n"
    )


def open_protocol(url: str = "ws://example.com/", **kwargs: Any) -> ClientProtocol:
    """A :class:`ClientProtocol` that has received a successful upgrade (state OPEN)."""
    protocol = ClientProtocol(parse_url(url), **kwargs)
    received = protocol.receive_data(server_response(protocol))
    assert [type(event) for event in received] == [events.Ready], received
    assert protocol.state is State.OPEN
    return protocol


def raw_upgrade_request(host: str, target: str = "/", key: Optional[str] = None) -> bytes:
    """An opening handshake (RFC 6455 section 4.1), with a fresh key unless one
    is given, for tests that talk to a server over a raw socket."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One unmasked frame, as a server sends it (RFC 6455 section 5.1)."""
    return build_frame(opcode, payload, mask=False)


# -- a Python child process (signals go to a main thread) -------------------------------

#: The checkout the children import lomond from.
ROOT = Path(__file__).resolve().parent.parent


def default_sigint() -> None:
    """In a child (``preexec_fn``): Ctrl-C as in a terminal, even if this run ignores
    SIGINT (a test run started in the background by a shell without job control
    inherits SIG_IGN, and so would every child that a test sends Ctrl-C to)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    """``python -c script *args`` importing lomond from this checkout, ``-X dev`` if asked.

    A thread collects its stdout lines (``ready`` is set on a line ``READY``,
    or when the child ends without one); its stderr goes to a file in ``tmp``.
    """

    def __init__(
        self, script: str, tmp: Path, args: Sequence[str] = (), dev: bool = False
    ) -> None:
        self.stderr_path = tmp / f"stderr-{time.monotonic_ns()}.txt"
        self._stderr = self.stderr_path.open("w")
        self.lines: List[str] = []
        self.ready = threading.Event()
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
        flags = ["-X", "dev"] if dev else []
        self.proc = subprocess.Popen(
            [sys.executable, *flags, "-c", script, *args],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env,
            preexec_fn=default_sigint,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == "READY":
                self.ready.set()
        self.ready.set()  # ended without READY: the caller looks at why

    @property
    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for ``READY``; fail with the child's stderr if it ended without it."""
        self.ready.wait(timeout)
        assert "READY" in self.lines, f"the child did not get ready: {self.stderr}"

    def wait_exit(self, timeout: float) -> bool:
        """Whether the child exited within ``timeout`` seconds."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._reader.join(5)
        return True

    def stacks(self) -> str:
        """The child's thread stacks (faulthandler on SIGUSR1), for a hang's report."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
        return self.stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        self._stderr.close()


def open_descriptors() -> int:
    """How many file descriptors this process has open (Linux: ``/proc/self/fd``)."""
    return len(os.listdir("/proc/self/fd"))


# -- asyncio: a coroutine on a new loop, a connection run to its end ---------------------

#: Makes a new event loop: ``asyncio.new_event_loop`` or ``uvloop.new_event_loop``.
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def run_async(
    main: Awaitable[T], timeout: float = 30.0, loop_factory: Optional[LoopFactory] = None
) -> T:
    """Run ``main`` on a new event loop and close the loop, as ``asyncio.run`` does.

    The loop comes from ``loop_factory`` (default: asyncio's own). A watchdog
    cancels ``main`` after ``timeout`` seconds (twice if need be: a first
    cancellation closes a connection gracefully) and fails the test, so a
    hung coroutine fails one test instead of stalling the run. Tasks left
    running are cancelled, async generators and the default executor (DNS
    look-ups) shut down, before the loop is closed.
    """
    loop = (loop_factory or asyncio.new_event_loop)()
    tasks: List[asyncio.Future[Any]] = []
    try:
        return loop.run_until_complete(_watched(main, timeout, tasks))
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            # A KeyboardInterrupt (or SystemExit) leaves the loop at once, with
            # nobody to retrieve it from the task: retrieve it here, or asyncio
            # logs "Task exception was never retrieved" whenever it is collected.
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()


async def _watched(main: Awaitable[T], timeout: float, tasks: List[asyncio.Future[Any]]) -> T:
    task = asyncio.ensure_future(main)
    tasks.append(task)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        return task.result()
    for _ in range(2):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if done:
            break
    raise AssertionError(f"the coroutine did not end within {timeout:g} s")


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


#: What :func:`acollect` calls for each event: a plain function or a coroutine function.
AsyncOnEvent = Callable[[events.Event], Any]


def aclose_after(websocket: Any, kind: type, count: int) -> AsyncOnEvent:
    """An :func:`acollect` ``on_event`` that closes ``websocket`` at the ``count``-th ``kind``."""
    seen: List[events.Event] = []

    async def on_event(event: events.Event) -> None:
        if isinstance(event, kind):
            seen.append(event)
            if len(seen) == count:
                await websocket.close()

    return on_event


async def acollect(
    websocket: Any,
    on_event: Optional[AsyncOnEvent] = None,
    timeout: float = 15.0,
    **options: Any,
) -> Run:
    """:func:`collect` for a :class:`lomond.asyncio.WebSocket`, inside a coroutine.

    ``async for event in websocket.connect(**FAST, **options)`` to the end;
    ``on_event`` (plain or ``async def``, awaited) runs for each event inside
    the loop body. A watchdog thread force-disconnects after ``timeout``
    seconds and the test fails; the order of the events is checked.
    """
    kwargs = dict(FAST)
    kwargs.update(options)
    run = Run()
    fired = threading.Event()

    def watchdog() -> None:
        fired.set()
        websocket.force_disconnect()

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    try:
        async for event in websocket.connect(**kwargs):
            run.events.append(event)
            run.times.append(time.monotonic())
            if on_event is not None:
                result = on_event(event)
                if inspect.isawaitable(result):
                    await result
    finally:
        timer.cancel()
    assert not fired.is_set(), f"the event loop did not end within {timeout}s: {run.names}"
    check_order(run.events)
    return run


async def asay_hello(websocket: Any) -> None:
    """The default ``on_ready`` of :func:`aexchange`: send the text "hello"."""
    await websocket.send_text("hello")


async def aexchange(
    websocket: Any,
    on_ready: Optional[Callable[[Any], Awaitable[None]]] = asay_hello,
    messages: int = 1,
    timeout: float = 15.0,
    **options: Any,
) -> List[events.Event]:
    """:func:`exchange` for a :class:`lomond.asyncio.WebSocket`: ``await on_ready(websocket)``
    on Ready, close after ``messages`` messages; every event."""
    received = 0

    async def on_event(event: events.Event) -> None:
        nonlocal received
        if isinstance(event, events.Ready):
            if on_ready is not None:
                await on_ready(websocket)
        elif isinstance(event, (events.Text, events.Binary)):
            received += 1
            if received >= messages:
                await websocket.close()

    options.setdefault("connect_timeout", 10.0)
    options.setdefault("handshake_timeout", 10.0)
    return (await acollect(websocket, on_event, timeout, **options)).events
