"""Concurrency torture (issue 18): many threads send, close and stop at random.

Each test repeats randomized rounds against real peers on loopback until its
time budget is spent, and checks the invariants after every round:

* no deadlock: every loop, sender, ``stop()`` and ``join()`` ends within a
  liveness bound far above the milliseconds it normally takes (a hang fails
  the round with every thread's stack);
* no lost stop: ``close()``, a :class:`~lomond.wakeup.StopSignal`, ``app.stop()``,
  ``hub.remove()``, ``hub.stop()`` and Ctrl-C always end the run;
* nothing lost or reordered before the close: after a graceful close the
  server holds every message whose send returned, each sender's messages in
  the order they were sent, and nothing that was never sent;
* only :class:`~lomond.errors.WebSocketError` from a send;
* no growth in file descriptors (``/proc/self/fd``), no ``ResourceWarning``
  (a subprocess runs with ``python -X dev``).

The tests: (1) the threaded driver, senders at full speed and close() / a
StopSignal / force_disconnect() from a random thread; (2) a started Hub whose
apps threads add, remove, stop, close and send to at random; (3) Ctrl-C once,
twice at once or several times to run_forever() (one app, or a hub) in a
``python -X dev`` child; (4) stops from many threads right after a run starts.
The bugs they found are reduced to regression tests at the end of the file.

Budget per test: ``LOMOND_TORTURE_SECONDS`` if set, else 20 s with
``LOMOND_SLOW=1`` (CI), else 3 s. Each test seeds its own ``random.Random``
and names the seed in every failure; ``LOMOND_TORTURE_SEED=<seed>`` replays it
(the rounds then make the same choices; thread timing still varies). A test
prints its rounds and seed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

import pytest
from core_helpers import Child, check_order, default_sigint, refused_port
from peers.ws_server import ConnectionRecord, WSServer, record_message
from websockets.asyncio.server import ServerConnection

from lomond import WebSocket, events
from lomond.errors import WebSocketError, WebSocketUnavailable
from lomond.handlers import Hub, Outcome, WebSocketApp
from lomond.wakeup import StopSignal

ROOT = Path(__file__).resolve().parent.parent

Message = Union[str, bytes]

#: Options of every connection: no timers but the close timeout.
OPTIONS: Dict[str, Any] = dict(
    ping_rate=0, poll=0, close_timeout=5.0, connect_timeout=5.0, handshake_timeout=5.0
)
#: Liveness bound: how long anything may take before it counts as a hang. The
#: close handshake is bounded by close_timeout (5 s) and normally takes
#: milliseconds; this is far above both.
HANG = 20.0


def budget() -> float:
    """Seconds each torture test runs its rounds for."""
    value = os.environ.get("LOMOND_TORTURE_SECONDS")
    if value:
        return float(value)
    if os.environ.get("LOMOND_SLOW", "") not in ("", "0"):
        return 20.0
    return 3.0


#: The hang guard of conftest.py: the budget, plus the slowest last round.
GUARD = budget() * 2 + 180.0

pytestmark = [
    pytest.mark.hang_timeout(GUARD),
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc"),
]


# -- rounds, seeds and diagnostics ---------------------------------------------------


class Torture:
    """A test's random source, its rounds and its time budget."""

    def __init__(self, name: str) -> None:
        given = os.environ.get("LOMOND_TORTURE_SEED")
        self.seed = int(given) if given else random.SystemRandom().randrange(2**32)
        self.rng = random.Random(self.seed)
        self.name = name
        self.rounds = 0
        self.deadline = time.monotonic() + budget()
        self.started = time.monotonic()

    def more(self) -> bool:
        """Whether to run another round (at least one always runs)."""
        return self.rounds == 0 or time.monotonic() < self.deadline

    def round_rng(self) -> random.Random:
        """A random source for the next round alone (replayable by itself)."""
        return random.Random(self.rng.randrange(2**32))

    @property
    def where(self) -> str:
        return (
            f"[{self.name} round {self.rounds}, seed {self.seed}: replay with "
            f"LOMOND_TORTURE_SEED={self.seed}]"
        )

    def report(self) -> None:
        elapsed = time.monotonic() - self.started
        print(f"{self.name}: {self.rounds} rounds in {elapsed:.1f} s, seed {self.seed}")


def stacks() -> str:
    """Every thread's stack, as faulthandler prints it (for a hang's report)."""
    with tempfile.TemporaryFile("w+") as out:
        faulthandler.dump_traceback(out, all_threads=True)
        out.seek(0)
        return out.read()


def join(thread: threading.Thread, timeout: float, what: str, where: str) -> None:
    """Join ``thread`` or fail with every thread's stack."""
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{where} {what} still running after {timeout:g} s:\n{stacks()}")


def fd_table() -> Dict[int, str]:
    """This process's open descriptors and what they are."""
    table = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            table[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the listing's own descriptor, gone already
    return table


def settle_fds(baseline: Dict[int, str], where: str, timeout: float = 10.0) -> None:
    """Wait until no more descriptors are open than at ``baseline``; fail with the extra ones.

    Descriptors are released when the last reference to their object goes
    (lomond's wake-up pairs by design, see :class:`lomond.wakeup.Wakeup`) and the
    in-process server closes its side a moment after the client: so collect
    garbage and poll, within a bound.
    """
    end = time.monotonic() + timeout
    while True:
        gc.collect()
        if len(fd_table()) <= len(baseline):
            return
        if time.monotonic() >= end:
            break
        time.sleep(0.01)
    now = fd_table()
    extra = {fd: target for fd, target in now.items() if baseline.get(fd) != target}
    raise AssertionError(
        f"{where} {len(now)} descriptors open, {len(baseline)} at the start; new: {extra}"
    )


# -- messages and what became of them ----------------------------------------------------


def text_message(sender: str, n: int) -> str:
    return f"{sender}:{n}"


def binary_message(sender: str, n: int, pad: bytes) -> bytes:
    return f"{sender}:{n}:".encode() + pad


def parse(message: Message) -> Tuple[str, int]:
    """``(sender, n)`` of a message built by :func:`text_message` or :func:`binary_message`."""
    head = message[:64] if isinstance(message, str) else message[:64].decode("latin-1")
    sender, n = head.split(":")[:2]
    return sender, int(n)


@dataclass
class Ledger:
    """One sender's account: the numbers whose send returned, those that may have gone."""

    acked: List[int] = field(default_factory=list)
    maybe: Set[int] = field(default_factory=set)
    errors: List[BaseException] = field(default_factory=list)
    #: Anything but a WebSocketError (TypeError/ValueError are never expected here).
    bad: List[BaseException] = field(default_factory=list)


def check_delivery(
    received: List[Message], ledgers: Dict[str, Ledger], complete: bool, where: str
) -> None:
    """What the server received against what was sent.

    Always: every message was sent (acked or maybe), each sender's messages
    arrive in the order sent, once. With ``complete`` (a graceful close):
    every acked message arrived.
    """
    per_sender: Dict[str, List[int]] = defaultdict(list)
    for message in received:
        sender, n = parse(message)
        per_sender[sender].append(n)
    for sender, numbers in per_sender.items():
        ledger = ledgers.get(sender)
        assert ledger is not None, f"{where} a message from unknown sender {sender!r}"
        assert numbers == sorted(set(numbers)), (
            f"{where} {sender}'s messages reordered or repeated: {numbers[:50]}..."
        )
        sent = set(ledger.acked) | ledger.maybe
        unsent = [n for n in numbers if n not in sent]
        assert not unsent, f"{where} {sender}: received messages never sent: {unsent[:20]}"
    if complete:
        for sender, ledger in ledgers.items():
            got = set(per_sender.get(sender, ()))
            lost = [n for n in ledger.acked if n not in got]
            assert not lost, (
                f"{where} {sender}: {len(lost)} messages lost before a graceful close "
                f"(first {lost[:10]}; {len(ledger.acked)} acked, {len(got)} received)"
            )


class Recorder:
    """A server behaviour: record every message, and say when the handler is done.

    ``ConnectionRecord.closed`` is set when TCP ends, possibly before the
    handler has taken the last queued messages; :meth:`wait_done` waits for
    the handler itself. (websockets runs no handler at all for a connection
    that is no longer open when its handshake finishes: a client that sent
    its Close right after the 101.)
    """

    def __init__(self, server: WSServer, route: str = "/torture") -> None:
        self.server = server
        self.route = route
        self._started: Set[str] = set()
        self._done: Dict[str, threading.Event] = defaultdict(threading.Event)
        self._lock = threading.Lock()
        server.add_behaviour(route, self._handle)

    def _event(self, path: str) -> threading.Event:
        with self._lock:
            return self._done[path]

    async def _handle(self, ws: ServerConnection, rec: ConnectionRecord) -> None:
        self._started.add(rec.path)
        # ?stall=N: after N messages, stop reading until release(): a server
        # that stopped reading, so that sends and the Close wait for it.
        stall = rec.int_param("stall", -1)
        try:
            while True:
                if len(rec.received) == stall:
                    release = self._event(rec.path + "#release")
                    while not release.is_set():
                        await asyncio.sleep(0.005)
                await record_message(ws, rec)
        finally:
            self._event(rec.path).set()

    def release(self, query: str) -> None:
        """A stalled connection (``stall=N``) reads again, to its end."""
        self._event(f"{self.route}?{query}#release").set()

    def url(self, query: str) -> str:
        return self.server.url_for(f"{self.route}?{query}")

    def records(self, query: str) -> List[ConnectionRecord]:
        path = f"{self.route}?{query}"
        return [rec for rec in list(self.server.connections) if rec.path == path]

    def wait_done(self, rec: ConnectionRecord, where: str, timeout: float = HANG) -> None:
        """Wait until the server's handler of ``rec`` took every message and ended."""
        done = self._event(rec.path)

        def finished() -> bool:
            # closed first: the handler starts (if at all) before TCP ends.
            return done.is_set() or (rec.closed.is_set() and rec.path not in self._started)

        end = time.monotonic() + timeout
        while not finished():
            assert time.monotonic() < end, (
                f"{where} the server still holds {rec.path} open after {timeout:g} s:\n{stacks()}"
            )
            time.sleep(0.005)


@pytest.fixture
def recorder(ws_server: WSServer) -> Recorder:
    return Recorder(ws_server)



@contextlib.contextmanager
def resource_warnings() -> Iterator[List[warnings.WarningMessage]]:
    """Record every ``ResourceWarning`` (any thread) while the block runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield caught


def no_resource_warnings(caught: List[warnings.WarningMessage], where: str) -> None:
    gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, f"{where} ResourceWarning: {leaks[:5]}"


# -- 1. the threaded driver: random sends, and close / stop / force_disconnect ---------

#: What ends a round; "a+b": both at once, from two threads.
ACTIONS = ("close", "stop", "force", "close+stop", "close+force", "stop+force")
#: Actions that must close gracefully (Close 1000) once the connection is ready.
GRACEFUL = frozenset({"close", "stop", "close+stop"})


def threaded_round(recorder: Recorder, torture: Torture, baseline: Dict[int, str]) -> str:
    """One connection, senders at full speed, one random ending; check the invariants."""
    rng = torture.round_rng()
    where = torture.where
    query = f"threaded={torture.rounds}&seed={torture.seed}"
    # The server stops reading after a few messages: sends wait for it, the
    # Close waits behind them, and the connection ends at the close timeout.
    stall = rng.random() < 0.1
    options = dict(OPTIONS)
    if stall:
        query += f"&stall={rng.randrange(20)}"
        options["close_timeout"] = 0.5
    action = rng.choice(ACTIONS)
    compress = rng.random() < 0.3
    count = rng.randint(1, 6)
    # Senders and the action do not wait for Ready: they race the handshake.
    early = rng.random() < 0.15
    actor = rng.randrange(count + 1)  # a sender, or (== count) the controller
    fire_after = rng.choice((0, 1, rng.randrange(300)))  # the actor's sends first
    delay = rng.choice((0.0, rng.uniform(0.0, 0.002), rng.uniform(0.0, 0.15)))
    pad = rng.randbytes(2 * 1024 * 1024)
    thread_rngs = [random.Random(rng.randrange(2**32)) for _ in range(count)]
    desc = (
        f"{where} action {action}, {count} senders, actor "
        f"{'controller' if actor == count else actor}, compress {compress}, early {early}, "
        f"stall {stall}"
    )

    ws = WebSocket(recorder.url(query), compress=compress)
    stop = StopSignal()
    seen: List[events.Event] = []
    loop_errors: List[BaseException] = []
    action_errors: List[BaseException] = []
    started, ready, over, fired = (threading.Event() for _ in range(4))
    fire_lock = threading.Lock()
    ready_when_fired: List[bool] = []
    ledgers = {f"s{i}": Ledger() for i in range(count)}

    def loop() -> None:
        try:
            for event in ws.connect(stop=stop, **options):
                seen.append(event)
                started.set()
                if isinstance(event, events.Ready):
                    ready.set()
        except BaseException as error:
            loop_errors.append(error)
        finally:
            over.set()
            started.set()

    def do(kind: str) -> None:
        try:
            if kind == "close":
                ws.close()
            elif kind == "stop":
                stop.set()
            else:
                ws.force_disconnect()
        except BaseException as error:  # none of these may raise
            action_errors.append(error)

    def fire() -> None:
        with fire_lock:
            if fired.is_set():
                return
            fired.set()
        ready_when_fired.append(ready.is_set())
        kinds = action.split("+")
        if len(kinds) == 1:
            do(kinds[0])
            return
        barrier = threading.Barrier(len(kinds))

        def both(kind: str) -> None:
            barrier.wait(HANG)
            do(kind)

        pair = [threading.Thread(target=both, args=(k,), daemon=True) for k in kinds]
        for thread in pair:
            thread.start()
        for thread in pair:
            join(thread, HANG, "an action thread", where)

    def sender(i: int) -> None:
        name = f"s{i}"
        ledger = ledgers[name]
        trng = thread_rngs[i]
        big = trng.random() < 0.5  # this thread sends large messages now and then
        if not early:
            ready.wait(HANG)
        n = 0
        while True:
            if i == actor and len(ledger.acked) >= fire_after:
                # Not before connect() made its session: close() outside a
                # connection does nothing (documented).
                started.wait(HANG)
                fire()
            pick = trng.random()
            try:
                if pick < 0.02:  # a control frame between the messages, unnumbered
                    ws.send_ping(b"p")
                    continue
                if big and pick < 0.1:
                    size = trng.randrange(64 * 1024, len(pad))
                    ws.send_binary(binary_message(name, n, pad[:size]))
                elif pick < 0.2:
                    ws.send_binary(binary_message(name, n, pad[: trng.randrange(200)]))
                else:
                    ws.send_text(text_message(name, n))
            except WebSocketError as error:
                if type(error) is WebSocketUnavailable and not over.is_set():
                    # Not connected yet: nothing was framed; the same number again.
                    time.sleep(0.0005)
                    continue
                ledger.maybe.add(n)  # refused, or queued and then the connection ended
                ledger.errors.append(error)
                return
            except BaseException as error:
                ledger.maybe.add(n)
                ledger.bad.append(error)
                return
            ledger.acked.append(n)
            n += 1

    def controller() -> None:
        (started if early else ready).wait(HANG)
        if actor == count:
            time.sleep(delay)
            fire()
        elif not fired.wait(0.3 if stall else HANG / 2):
            # The actor sender ended before its turn (a failed connect, say),
            # or waits for a server that stopped reading.
            fire()

    loop_thread = threading.Thread(target=loop, name="torture-loop", daemon=True)
    workers = [
        threading.Thread(target=sender, args=(i,), name=f"torture-s{i}", daemon=True)
        for i in range(count)
    ]
    control = threading.Thread(target=controller, name="torture-control", daemon=True)
    loop_thread.start()
    for thread in (*workers, control):
        thread.start()
    try:
        join(loop_thread, HANG, "the event loop", desc)
        for thread in workers:
            join(thread, HANG, f"sender {thread.name}", desc)
        join(control, HANG, "the controller", desc)
    finally:
        recorder.release(query)  # the server side of a stalled connection ends too
        if loop_thread.is_alive() or any(t.is_alive() for t in workers):
            ws.force_disconnect()  # clean up after a hang: never leave a thread behind
            stop.set()
            loop_thread.join(5)
            for thread in workers:
                thread.join(5)

    assert not loop_errors, f"{desc} the event loop raised {loop_errors!r}"
    assert not action_errors, f"{desc} close/stop/force_disconnect raised {action_errors!r}"
    for name, ledger in ledgers.items():
        assert not ledger.bad, f"{desc} {name}: a send raised {ledger.bad!r}"
    check_order(seen)
    assert early or ready.is_set(), f"{desc} never ready: {[e.name for e in seen]}"
    assert fired.is_set(), f"{desc} the action never ran: {[e.name for e in seen]}"
    last = seen[-1]
    records = recorder.records(query)
    assert len(records) <= 1, f"{desc} {len(records)} connections"
    graceful = action in GRACEFUL and ready_when_fired == [True] and not stall
    if graceful:
        assert isinstance(last, events.Disconnected) and last.graceful, (
            f"{desc} not a graceful end: {last!r}"
        )
    if records:
        rec = records[0]
        recorder.wait_done(rec, desc)
        if graceful:
            assert rec.close_code == 1000, f"{desc} the server saw close code {rec.close_code}"
        elif action == "force" and ready_when_fired == [True] and not stall:
            assert rec.close_code is None, f"{desc} a Close {rec.close_code} was sent"
        check_delivery(list(rec.received), ledgers, graceful, desc)
    else:
        assert not ready.is_set(), f"{desc} ready, but the server saw no connection"
    settle_fds(baseline, desc)
    ended = "graceful" if graceful else "early" if not ready_when_fired[0] else "dropped"
    return f"{action}/{'stalled' if stall else ended}"


def test_threaded_driver_random_sends_and_closes(recorder: Recorder) -> None:
    """Senders at full speed on one WebSocket; close(), a StopSignal or force_disconnect()
    from a random thread at a random moment; no deadlock, loss, reordering or fd leak."""
    torture = Torture("threaded")
    gc.collect()
    baseline = fd_table()
    tally: Dict[str, int] = defaultdict(int)
    with resource_warnings() as caught:
        while torture.more():
            tally[threaded_round(recorder, torture, baseline)] += 1
            torture.rounds += 1
        no_resource_warnings(caught, torture.where)
    torture.report()
    print(dict(sorted(tally.items())))


# -- 2. the hub: apps added, removed, stopped and closed at random, sends from threads --


class HubApp:
    """One app on the torture hub, and what each worker sent it."""

    def __init__(self, recorder: Recorder, ident: str, reconnect: bool) -> None:
        self.ident = ident
        self.query = f"hub={ident}"
        self.reconnect = reconnect
        self.app = WebSocketApp(recorder.url(self.query))
        self.ledgers: Dict[str, Ledger] = defaultdict(Ledger)
        self.next: Dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()  # one burst at a time, so numbers stay in send order
        #: Added to the hub after its run ended (a round whose hub.stop() races
        #: the workers): it would connect if the hub ran again.
        self.unstarted = False


def hub_worker(
    hub: Hub,
    recorder: Recorder,
    apps: List[HubApp],
    apps_lock: threading.Lock,
    rng: random.Random,
    worker: int,
    until: threading.Event,
    problems: List[str],
    pad: bytes,
    prefix: str,
) -> None:
    """Random operations on ``hub`` until ``until`` is set; what went wrong goes to ``problems``."""
    name = f"w{worker}"
    made = 0

    def pick() -> Optional[HubApp]:
        with apps_lock:
            return rng.choice(apps) if apps else None

    def add(stop_at_once: bool = False) -> None:
        nonlocal made
        member = HubApp(recorder, f"{prefix}.{worker}.{made}", rng.random() < 0.3)
        made += 1
        options: Dict[str, Any] = dict(OPTIONS)
        if member.reconnect:
            options.update(min_wait=0.01, max_wait=0.05)
        try:
            hub.add(member.app, member.reconnect, **options)
        except RuntimeError as error:  # the hub is stopping (a round that races hub.stop)
            if "is stopping" not in str(error):
                problems.append(f"hub.add raised {error!r}")
            return
        # Read after add(): False means the add came after the hub's run ended
        # (an add before that is handled by the run, see Hub._begin_stopping).
        member.unstarted = not hub.is_running
        with apps_lock:
            apps.append(member)
        if stop_at_once:  # a stop right after add() is never lost
            stopped(member, stop(member), "app.stop() right after hub.add()")

    def stop(member: HubApp) -> Optional[Outcome]:
        if member.unstarted:
            # app.stop() would wait for a hub that no longer runs (a lomond
            # bug: test_app_stop_on_a_hub_that_is_not_running); remove() ends it.
            return remove(member)
        return member.app.stop(HANG)

    def remove(member: HubApp) -> Optional[Outcome]:
        try:
            return hub.remove(member.app, HANG)
        except ValueError:  # it left the hub already: its run is over
            return member.app.join(HANG)

    def stopped(member: HubApp, outcome: Optional[Outcome], what: str) -> None:
        if outcome is None:
            problems.append(f"{what} of {member.ident} returned None after {HANG} s:\n{stacks()}")

    def burst(member: HubApp) -> None:
        app = member.app
        with member.lock:
            ledger = member.ledgers[name]
            for _ in range(rng.randrange(1, 60)):
                n = member.next[name]
                pick = rng.random()
                try:
                    if pick < 0.01:  # above the hub's high-water mark: the send waits
                        app.send_binary(binary_message(name, n, pad * 3))
                    elif pick < 0.05:
                        app.send_binary(binary_message(name, n, pad[: rng.randrange(len(pad))]))
                    else:
                        app.send_text(text_message(name, n))
                except WebSocketError as error:
                    if type(error) is WebSocketUnavailable:
                        return  # not ready (yet, or between connections): nothing framed
                    ledger.maybe.add(n)
                    ledger.errors.append(error)
                    member.next[name] = n + 1
                    return
                except BaseException as error:
                    problems.append(f"{name}: a send to {member.ident} raised {error!r}")
                    return
                ledger.acked.append(n)
                member.next[name] = n + 1

    try:
        while not until.is_set():
            roll = rng.random()
            if roll < 0.2:
                add()
            elif roll < 0.25:
                add(stop_at_once=True)
            else:
                member = pick()
                if member is None:
                    continue
                app = member.app
                if roll < 0.65:
                    if app.is_active:
                        burst(member)
                    else:
                        time.sleep(0.001)
                elif roll < 0.72:
                    stopped(member, stop(member), "app.stop()")
                elif roll < 0.79:
                    stopped(member, remove(member), "hub.remove()")
                elif roll < 0.88:
                    app.close()
                elif roll < 0.9:
                    app.websocket.force_disconnect()
                else:
                    time.sleep(rng.uniform(0, 0.01))
    except BaseException as error:
        problems.append(f"worker {worker} raised {error!r}")


def hub_round(recorder: Recorder, torture: Torture) -> str:
    """One hub: workers add, remove, stop, close and send at random; then hub.stop()."""
    rng = torture.round_rng()
    where = torture.where
    count = rng.randint(2, 5)
    length = rng.uniform(0.2, 1.0)
    # The hub's stop races the workers (adds then fail, or land after the hub ended).
    racing = rng.random() < 0.3
    desc = f"{where} {count} workers for {length:.2f} s, stop racing: {racing}"
    pad = rng.randbytes(2 * 1024 * 1024)
    hub = Hub()
    apps: List[HubApp] = []
    apps_lock = threading.Lock()
    problems: List[str] = []
    until = threading.Event()
    hub.start()
    workers = [
        threading.Thread(
            target=hub_worker,
            args=(hub, recorder, apps, apps_lock, random.Random(rng.randrange(2**32)), i,
                  until, problems, pad, f"{torture.seed}.{torture.rounds}"),
            name=f"torture-hub-w{i}", daemon=True,
        )
        for i in range(count)
    ]
    for thread in workers:
        thread.start()
    stopped_in_time = True
    try:
        time.sleep(length)
        if racing:
            stopped_in_time = hub.stop(HANG)
        until.set()
        for thread in workers:
            join(thread, HANG * 2, f"worker {thread.name}", desc)
        stopped_in_time = hub.stop(HANG) and stopped_in_time
    finally:
        until.set()
        if hub.is_running:
            hub.stop(5)
    assert stopped_in_time, f"{desc} hub.stop({HANG}) returned False:\n{stacks()}"
    assert not problems, f"{desc} " + "\n".join(problems)
    assert hub.join(HANG), f"{desc} the hub's thread still runs:\n{stacks()}"
    assert hub.apps == [], f"{desc} apps left on a stopped hub: {hub.apps}"
    graceful = 0
    for member in apps:
        app = member.app
        outcome = app.join(HANG)
        assert outcome is not None, f"{desc} app {member.ident} never ended:\n{stacks()}"
        assert not app.is_running, f"{desc} app {member.ident} still running"
        records = recorder.records(member.query)
        # A connection closed right after Connected sends no upgrade request.
        assert len(records) <= outcome.connections, (
            f"{desc} app {member.ident}: {outcome.connections} connections, "
            f"the server saw {len(records)}"
        )
        for rec in records:
            recorder.wait_done(rec, desc)
            check_delivery(list(rec.received), member.ledgers, False, f"{desc} {member.ident}")
        if outcome.graceful and outcome.connections == 1:
            graceful += 1
            assert records[0].close_code == 1000, (
                f"{desc} app {member.ident} closed gracefully with {records[0].close_code}"
            )
            check_delivery(
                list(records[0].received), member.ledgers, True, f"{desc} {member.ident}"
            )
    sent = sum(len(ledger.acked) for m in apps for ledger in m.ledgers.values())
    return f"{len(apps)} apps, {graceful} closed gracefully, {sent} messages"


def test_hub_apps_added_and_removed_at_random(recorder: Recorder) -> None:
    """A started Hub; threads add apps (some reconnecting), remove, stop, close them and
    send to them at random; hub.stop() at the end. No lost stop, no deadlock, no loss or
    reordering on a graceful close, no fd leak."""
    torture = Torture("hub")
    gc.collect()
    baseline = fd_table()
    totals = [0, 0, 0]
    with resource_warnings() as caught:
        while torture.more():
            summary = hub_round(recorder, torture)
            for i, word in enumerate(summary.split(", ")):
                totals[i] += int(word.split()[0])
            settle_fds(baseline, torture.where)  # the hub and its apps are gone
            torture.rounds += 1
        no_resource_warnings(caught, torture.where)
    torture.report()
    print(f"{totals[0]} apps, {totals[1]} closed gracefully, {totals[2]} messages acked")



# -- 4. no lost stop: runs start and end in a loop, stops from many threads at once ------


def stop_round(
    recorder: Recorder,
    torture: Torture,
    hub: Hub,
    hub_cycle: List[Hub],
    reused: List[WebSocketApp],
    dead_url: str,
) -> str:
    """One run started and, right away or a moment later, stopped from several threads."""
    rng = torture.round_rng()
    kind = rng.choice(("thread", "thread", "signal", "hub", "hub", "hub-cycle"))
    callers = rng.randint(1, 4)
    wait = rng.choice(("none", "sleep", "ready"))
    url = dead_url if rng.random() < 0.15 else recorder.url(f"stop={torture.seed}.{torture.rounds}")
    reconnect = rng.random() < 0.3
    desc = (
        f"{torture.where} {kind}, {callers} stopping threads, after {wait}, "
        f"reconnect {reconnect}, {'refused' if url == dead_url else 'server'}"
    )
    results: List[Tuple[str, Any]] = []
    errors: List[BaseException] = []
    Call = Tuple[str, Callable[[], Any]]

    def together(calls: List[Call]) -> None:
        """Run ``calls`` in threads released at once; keep what they return or raise."""
        barrier = threading.Barrier(len(calls))

        def call(label: str, fn: Callable[[], Any]) -> None:
            try:
                barrier.wait(HANG)
                results.append((label, fn()))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=call, args=c, daemon=True) for c in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            join(thread, HANG * 2, "a stopping thread", desc)

    def pause(ready: Callable[[float], bool]) -> None:
        if wait == "sleep" or (wait == "ready" and url == dead_url):  # never ready there
            time.sleep(rng.uniform(0.0, 0.02))
        elif wait == "ready":
            assert ready(HANG), f"{desc} never ready"

    options: Dict[str, Any] = dict(OPTIONS)
    if reconnect:
        options.update(min_wait=0.01, max_wait=0.05)
    if kind == "hub-cycle":
        # A second hub, started (again: it is reused) with a few apps and
        # stopped by several threads at once.
        cycled = hub_cycle[0]
        apps = [WebSocketApp(url) for _ in range(rng.randrange(4))]
        cycled.start()
        for app in apps:
            cycled.add(app, reconnect, **options)
        if wait == "sleep" or (wait == "ready" and url == dead_url):  # never ready there
            time.sleep(rng.uniform(0.0, 0.02))
        elif wait == "ready":
            # Not asserted: a stop request left over from the hub's previous
            # run may end this one at once (a lomond bug:
            # test_a_stop_left_over_from_a_hub_run_ends_the_next_run).
            for app in apps:
                app.wait_ready(HANG)
        together([("hub.stop()", lambda: cycled.stop(HANG))] * callers)
        assert not errors, f"{desc} hub.stop() raised {errors!r}"
        assert [r for _, r in results] == [True] * callers, (
            f"{desc} hub.stop() timed out: {results}\n{stacks()}"
        )
        assert cycled.join(HANG), f"{desc} the hub's thread still runs\n{stacks()}"
        for app in apps:
            assert app.join(HANG) is not None and not app.is_running, f"{desc} {app!r} runs"
        return f"{kind}/{len(apps)} apps"
    if kind == "signal":
        # A bare WebSocket and a StopSignal set from many threads, maybe before
        # the loop even started iterating.
        ws = WebSocket(url)
        stop = StopSignal()
        seen: List[events.Event] = []
        ready = threading.Event()

        def loop() -> None:
            try:
                for event in ws.connect(stop=stop, **OPTIONS):
                    seen.append(event)
                    if isinstance(event, events.Ready):
                        ready.set()
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        pause(ready.wait)
        together([("set", stop.set)] * callers)
        try:
            join(thread, HANG, "the event loop after StopSignal.set()", desc)
        finally:
            ws.force_disconnect()
        assert not errors, f"{desc} {errors!r}"
        check_order(seen)
        return f"{kind}/{seen[-1].name}"
    app = reused.pop() if reused and rng.random() < 0.5 else WebSocketApp(url)
    if kind == "thread":
        app.start(reconnect, **options)
        stops: List[Call] = [("app.stop()", lambda: app.stop(HANG))] * callers
    else:
        hub.add(app, reconnect, **options)
        either: Tuple[Call, Call] = (
            ("app.stop()", lambda: app.stop(HANG)),
            ("hub.remove()", lambda: hub.remove(app, HANG)),
        )
        stops = [rng.choice(either) for _ in range(callers)]
    if rng.random() < 0.3:
        stops.append(("close()", app.close))
    pause(app.wait_ready)
    together(stops)
    outcome = app.join(HANG)
    bad = [e for e in errors if not (kind == "hub" and isinstance(e, ValueError))]
    assert not bad, f"{desc} stop raised {bad!r}"  # remove() after the run: ValueError
    assert outcome is not None, f"{desc} the run never ended:\n{stacks()}"
    assert ("app.stop()", None) not in results and ("hub.remove()", None) not in results, (
        f"{desc} a stop returned None (still running after {HANG} s): {results}"
    )
    assert not app.is_running, f"{desc} still running"
    if app.url != dead_url and len(reused) < 3:
        reused.append(app)  # the next run of this app must not see this run's stop
    return f"{kind}/{outcome.connections} connections"


def test_no_lost_stop(recorder: Recorder) -> None:
    """Runs (threads, a hub, a bare WebSocket) start and are stopped right away or soon,
    by several threads at once: every stop returns its Outcome, every run ends."""
    torture = Torture("stops")
    dead_url = f"ws://127.0.0.1:{refused_port()}/"
    gc.collect()
    baseline = fd_table()
    tally: Dict[str, int] = defaultdict(int)
    with resource_warnings() as caught:
        hub = Hub()
        hub.start()
        hub_cycle = [Hub()]
        reused: List[WebSocketApp] = []
        try:
            while torture.more():
                tally[stop_round(recorder, torture, hub, hub_cycle, reused, dead_url)] += 1
                torture.rounds += 1
        finally:
            assert hub.stop(HANG), f"{torture.where} hub.stop() timed out:\n{stacks()}"
            assert hub_cycle[0].stop(HANG), f"{torture.where} hub.stop() timed out"
        del hub, hub_cycle, reused
        settle_fds(baseline, torture.where)
        no_resource_warnings(caught, torture.where)
    torture.report()
    print(dict(sorted(tally.items())))

# -- 3. SIGINT, delivered repeatedly, to run_forever() in a child's main thread ---------

#: The child: an app (or a hub of apps) against a LocalServer started in the
#: child, sender threads hammering sends, run_forever() in the main thread
#: until Ctrl-C. It prints READY once every app is ready, then checks what
#: it can only see from inside and prints one RESULT line (JSON).
SIGINT_CHILD = textwrap.dedent('''
    import faulthandler, gc, json, os, signal, sys, threading, time
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent's "where are you?"

    from lomond.testing import LocalServer
    from lomond.errors import WebSocketError
    from lomond.handlers import Hub, WebSocketApp

    MODE, APPS, SENDERS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    SLOW = float(sys.argv[4])  # the server's pause per message: the close waits behind
    OPTIONS = dict(ping_rate=0, poll=0, close_timeout=5.0, connect_timeout=5.0,
                   handshake_timeout=5.0)

    def fd_table():
        table = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                table[int(name)] = os.readlink("/proc/self/fd/" + name)
            except OSError:
                pass
        return table

    gc.collect()
    baseline = fd_table()
    def run():
        """Everything but the descriptor count, in a function: its objects are gone after."""
        records, records_lock = [], threading.Lock()

        def record(connection):
            entry = dict(path=connection.path, received=[], done=threading.Event(), conn=connection)
            with records_lock:
                records.append(entry)
            try:
                while True:
                    message = connection.recv()
                    if message is None:
                        return
                    entry["received"].append(message)
                    if SLOW:
                        time.sleep(SLOW)
            finally:
                entry["done"].set()

        server = LocalServer(record).start()
        apps = [WebSocketApp(f"{server.url}?app={i}") for i in range(APPS)]
        ready_count = []

        def ready(event):
            ready_count.append(1)
            if len(ready_count) == APPS:
                print("READY", flush=True)

        for app in apps:
            app.on("ready", ready)

        ledgers = {}  # (app, sender) -> [acked, maybe, bad]
        pad = os.urandom(512 * 1024)

        def sender(i, k):
            acked, maybe, bad = ledgers[(i, k)] = [], [], []
            app = apps[i]
            if not app.wait_ready(30):
                bad.append("never ready")
                return
            n = 0
            while True:
                try:
                    if n % 50 == 49:
                        app.send_binary(f"s{k}:{n}:".encode() + pad)
                    else:
                        app.send_text(f"s{k}:{n}")
                except WebSocketError:
                    maybe.append(n)
                    return
                except BaseException as error:
                    bad.append(repr(error))
                    return
                acked.append(n)
                n += 1

        senders = [threading.Thread(target=sender, args=(i, k), daemon=True)
                   for i in range(APPS) for k in range(SENDERS)]
        for thread in senders:
            thread.start()

        marker, late, hub, interrupt = "none", False, None, None
        try:
            try:
                if MODE == "app":
                    apps[0].run_forever(**OPTIONS)
                else:
                    hub = Hub()
                    for app in apps:
                        hub.add(app, **OPTIONS)
                    hub.run_forever()
                marker = "returned"
            except KeyboardInterrupt as error:
                marker = "KeyboardInterrupt"
                # Kept past the SIG_IGN below: its traceback holds the run's
                # frames, and releasing them here would run the finalizers of
                # the run's objects while a late Ctrl-C can still land in them
                # (Python then prints "Exception ignored"; not lomond's to see).
                interrupt = error
            finally:
                # From here on Ctrl-C is the parent's burst arriving late: not ours to see.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        except KeyboardInterrupt:
            late = True
        interrupt = None
        print("ENDED", marker, flush=True)

        result = dict(marker=marker, late=late, problems=[], codes=[], outcomes=[])
        problems = result["problems"]
        for thread in senders:
            thread.join(15)
            if thread.is_alive():
                problems.append("a sender still sends 15 s after the run ended")
        for (i, k), (acked, maybe, bad) in ledgers.items():
            if bad:
                problems.append(f"app {i} sender {k}: {bad}")
        for app in apps:
            if app.is_running:
                problems.append(f"{app!r} still running")
            outcome = app.outcome
            result["outcomes"].append([outcome.close_code, outcome.graceful])
        for entry in records:
            if not entry["done"].wait(15):
                problems.append(f"the server still reads {entry['path']} after 15 s")
            code = entry["conn"].close_code
            result["codes"].append(code)
            i = int(entry["path"].rsplit("=", 1)[1])
            got = {}
            for message in entry["received"]:
                head = message[:40] if isinstance(message, str) else message[:40].decode("latin-1")
                name, n = head.split(":")[:2]
                got.setdefault(int(name[1:]), []).append(int(n))
            for k in range(SENDERS):
                acked, maybe, _ = ledgers.get((i, k), ([], [], []))
                numbers = got.get(k, [])
                if numbers != sorted(set(numbers)):
                    at = next(j for j in range(1, len(numbers)) if numbers[j] <= numbers[j - 1])
                    problems.append(
                        f"app {i} sender {k}: reordered or repeated at {at} of "
                        f"{len(numbers)}: {numbers[max(0, at - 5):at + 5]}"
                    )
                if set(numbers) - set(acked) - set(maybe):
                    problems.append(f"app {i} sender {k}: never sent {set(numbers) - set(acked)}")
                if code == 1000 and set(acked) - set(numbers):
                    lost = sorted(set(acked) - set(numbers))
                    problems.append(f"app {i} sender {k}: lost before Close 1000: {lost[:10]}")
        server.stop()
        return result

    result = run()
    problems = result["problems"]
    gc.collect()
    end = time.monotonic() + 10
    while len(fd_table()) > len(baseline) and time.monotonic() < end:
        time.sleep(0.01)
        gc.collect()
    now = fd_table()
    if len(now) > len(baseline):
        extra = {fd: target for fd, target in now.items() if baseline.get(fd) != target}
        problems.append(f"{len(now)} descriptors open, {len(baseline)} before: {extra}")
    print("RESULT", json.dumps(result), flush=True)
''')


#: How Ctrl-C is pressed in a round: once; twice back to back (the kernel may
#: merge them into one); or a few times at random short intervals.
PATTERNS = ("single", "burst", "several")
#: At most this many Ctrl-C per round. (A third one that landed while a hub
#: dropped its apps after the second once left them running with open
#: sockets: test_a_third_ctrl_c_while_the_hub_drops_its_apps.)
MAX_CTRL_C = {"app": 5, "hub": 5}


def sigint_round(mode: str, torture: Torture, tmp: Path) -> str:
    rng = torture.round_rng()
    pattern = rng.choice(PATTERNS)
    apps = 1 if mode == "app" else rng.randint(2, 5)
    senders = rng.randint(1, 3)
    # A server that reads slowly: the Close waits behind megabytes of messages,
    # so a later Ctrl-C lands during the close handshake.
    slow = rng.choice((0.0, 0.0, 0.0002, 0.001))
    first = rng.uniform(0.0, 0.1)
    if pattern == "single":
        gaps: List[float] = []
    elif pattern == "burst":
        gaps = [rng.choice((0.0, rng.uniform(0.0, 0.002)))]
    else:
        gaps = [rng.uniform(0.0, 0.05) for _ in range(rng.randint(1, MAX_CTRL_C[mode] - 1))]
    desc = (
        f"{torture.where} {mode}, {apps} apps x {senders} senders, Ctrl-C {pattern}: "
        f"after {first:.3f} s, then gaps {[round(g, 4) for g in gaps]}, server pause {slow}"
    )
    child = Child(SIGINT_CHILD, tmp, [mode, str(apps), str(senders), str(slow)], dev=True)
    try:
        child.ready.wait(60)
        assert "READY" in child.lines, (
            f"{desc} the child never got ready: {child.lines}\n{child.stderr}"
        )
        time.sleep(first)
        sent = 0
        for gap in [0.0, *gaps]:
            if gap:
                time.sleep(gap)
            if child.proc.poll() is not None:
                break
            child.proc.send_signal(signal.SIGINT)
            sent += 1
        exited = child.wait_exit(HANG * 2)
        if not exited:
            raise AssertionError(
                f"{desc} the child did not exit within {HANG * 2:g} s of Ctrl-C: "
                f"{child.lines}\n{child.stacks()}"
            )
    finally:
        child.kill()
    stderr = child.stderr
    out = f"{desc} ({sent} sent)\nstdout: {child.lines}\nstderr:\n{stderr}"
    assert child.proc.returncode == 0, f"{out}\nexit status {child.proc.returncode}"
    for bad in ("ResourceWarning", "Exception ignored", "Traceback"):
        assert bad not in stderr, f"{out}\n{bad!r} in the child's stderr"
    results = [line for line in child.lines if line.startswith("RESULT ")]
    assert len(results) == 1, out
    result = json.loads(results[0][len("RESULT "):])
    assert result["marker"] == "KeyboardInterrupt", f"{out}\nrun_forever() did not raise it"
    assert not result["problems"], f"{out}\n" + "\n".join(result["problems"])
    assert len(result["codes"]) == apps, f"{out}\nthe server saw {len(result['codes'])} apps"
    if sent == 1:
        assert result["codes"] == [1000] * apps, f"{out}\nserver close codes {result['codes']}"
        assert result["outcomes"] == [[1000, True]] * apps, f"{out}\noutcomes"
    graceful = result["codes"] == [1000] * apps
    return f"{pattern}/{sent} sent/{'graceful' if graceful else 'interrupted'}"


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT and /proc")
@pytest.mark.parametrize("mode", ["app", "hub"])
def test_sigint_delivered_repeatedly(mode: str, tmp_path: Path) -> None:
    """Ctrl-C once, twice at once, or several times during run_forever() (one app, or a
    hub of apps) while threads send: the child exits promptly by KeyboardInterrupt,
    closes gracefully on a single Ctrl-C, and leaves no socket or ResourceWarning."""
    torture = Torture(f"sigint-{mode}")
    tally: Dict[str, int] = defaultdict(int)
    while torture.more():
        tally[sigint_round(mode, torture, tmp_path)] += 1
        torture.rounds += 1
    torture.report()
    print(dict(sorted(tally.items())))


#: Three apps on a hub in the main thread, against a server that never answers
#: a Close. Ctrl-C once (the graceful close stays pending), Ctrl-C again (the
#: hub drops its apps at once), and a third Ctrl-C arrives while it does so: the
#: app's ``on_disconnect`` hook (the Lomond 0.3 hook, called as each dropped
#: connection ends) presses it, so it lands there every time.
THIRD_CTRL_C_CHILD = textwrap.dedent('''
    import os, signal, threading, time
    from lomond.testing import LocalServer
    from lomond.handlers import Hub, WebSocketApp

    released = threading.Event()
    server = LocalServer(lambda connection: released.wait(60)).start()
    apps = [WebSocketApp(server.url) for _ in range(3)]
    ready, third = [], []

    def press_twice():
        os.kill(os.getpid(), signal.SIGINT)  # graceful close: pending, never answered
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)  # interrupts at once: the hub drops its apps

    def on_ready(event):
        ready.append(event)
        if len(ready) == len(apps):
            threading.Thread(target=press_twice, daemon=True).start()

    def on_disconnect():  # the first dropped connection is over: Ctrl-C once more
        if not third:
            third.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    hub = Hub()
    for app in apps:
        app.on("ready", on_ready)
        app.websocket.on_disconnect = on_disconnect
        hub.add(app, ping_rate=0, poll=0, close_timeout=60)
    try:
        try:
            hub.run_forever()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    print("running", [app.is_running for app in apps], flush=True)
    print("open", [app.websocket.session is not None for app in apps], flush=True)
    released.set()
    server.stop()
''')


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT")
def test_a_third_ctrl_c_while_the_hub_drops_its_apps(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    try:
        done = subprocess.run(
            [sys.executable, "-X", "dev", "-c", THIRD_CTRL_C_CHILD],
            capture_output=True, text=True, env=env, timeout=60, preexec_fn=default_sigint,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"the child hung: {error.stdout!r} {error.stderr!r}") from None
    lines = done.stdout.splitlines()
    assert lines[0] == "KeyboardInterrupt", (lines, done.stderr)
    assert lines[1:] == ["running [False, False, False]", "open [False, False, False]"], (
        lines, done.stderr,
    )
    assert "ResourceWarning" not in done.stderr, done.stderr


def test_app_stop_on_a_hub_that_is_not_running(ws_server: WSServer) -> None:
    hub = Hub()
    app = WebSocketApp(ws_server.url_for("/echo"))
    hub.add(app, **OPTIONS)  # before the hub runs, or after its run ended
    try:
        outcome = app.stop(1.0)
        assert outcome is not None and not app.is_running, "the stop did not end the run"
    finally:
        assert hub.stop(HANG)
    assert app.join(HANG) is not None


def test_a_stop_left_over_from_a_hub_run_ends_the_next_run(ws_server: WSServer) -> None:
    # A server that accepts TCP and never answers the upgrade: closing the app
    # ends its connection from a callback the reactor queued, so its
    # Disconnected handler runs in the reactor's last step.
    silent = socket.create_server(("127.0.0.1", 0))
    hub = Hub()
    try:
        first = WebSocketApp(f"ws://127.0.0.1:{silent.getsockname()[1]}/")
        connected = threading.Event()
        first.on("connected", lambda event: connected.set())
        first.on("disconnected", lambda event: hub.stop())  # from the hub's thread: a request
        hub.add(first, **dict(OPTIONS, handshake_timeout=HANG))
        hub.start()
        assert connected.wait(HANG)
        assert hub.stop(HANG)
        second = WebSocketApp(ws_server.url_for("/echo"))
        hub.add(second, **OPTIONS)
        hub.start()
        assert second.wait_ready(5.0), f"the next run ended at once: {second.outcome}"
        assert hub.is_running
    finally:
        hub.stop(HANG)
        silent.close()
