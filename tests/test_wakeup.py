"""lomond.wakeup: waking a waiting selector from another thread or a signal handler.

:class:`Wakeup` and :class:`StopSignal` are checked with real selectors and
socket pairs. The deadline logic of ``wait()`` is checked with a fake clock
and a fake selector (nothing sleeps), and the reason StopSignal exists - a
``set()`` that takes no lock, so a signal handler may call it while the
interrupted thread holds a lock - in a subprocess with a real signal.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, List, Optional, Tuple

import pytest

from lomond import wakeup as wakeup_module
from lomond.wakeup import Latch, StopSignal, Wakeup, wait_for_stop

ROOT = Path(__file__).resolve().parent.parent

#: A wait that must never run out in a passing test: a wake-up ends it.
LONG = 30.0


@pytest.fixture
def wakeup() -> Iterator[Wakeup]:
    pair = Wakeup()
    yield pair
    pair.close()


@pytest.fixture
def selector(wakeup: Wakeup) -> Iterator[selectors.BaseSelector]:
    with selectors.DefaultSelector() as sel:
        sel.register(wakeup.fileno(), selectors.EVENT_READ)
        yield sel


# -- Wakeup ----------------------------------------------------------------------------


def test_wake_makes_a_pending_select_return(
    wakeup: Wakeup, selector: selectors.BaseSelector
) -> None:
    assert selector.select(0) == []
    threading.Timer(0.05, wakeup.wake).start()
    assert len(selector.select(LONG)) == 1


def test_drain_consumes_every_pending_wake(
    wakeup: Wakeup, selector: selectors.BaseSelector
) -> None:
    for _ in range(1000):
        wakeup.wake()
    assert len(selector.select(0)) == 1
    wakeup.drain()
    assert selector.select(0) == []
    wakeup.drain()  # nothing pending: returns at once
    wakeup.wake()
    assert len(selector.select(0)) == 1


def test_wake_with_a_full_buffer_neither_blocks_nor_raises(
    wakeup: Wakeup, selector: selectors.BaseSelector
) -> None:
    # Far more one-byte writes than a socket pair's buffer holds: once it is
    # full a wake-up is pending anyway, and wake() (which may run in a signal
    # handler) must return at once instead of blocking or raising.
    for _ in range(100_000):
        wakeup.wake()
    assert len(selector.select(0)) == 1
    wakeup.drain()
    assert selector.select(0) == []


class WakeDuringDrain:
    """A reader whose first recv() lets another thread's wake() land mid-drain."""

    def __init__(self, reader: Any, wakeup: Wakeup, before_recv: bool) -> None:
        self.reader, self.wakeup, self.before = reader, wakeup, before_recv
        self.landed = False

    def recv(self, size: int) -> bytes:
        if self.before and not self.landed:
            self.landed = True
            self.wakeup.wake()
        try:
            return bytes(self.reader.recv(size))
        finally:
            if not self.before and not self.landed:
                self.landed = True
                self.wakeup.wake()


@pytest.mark.parametrize("before_recv", [True, False])
def test_a_wake_that_lands_during_drain_never_silences_later_wakes(
    wakeup: Wakeup, selector: selectors.BaseSelector, before_recv: bool
) -> None:
    # One byte per wait (a pending flag): a wake() that lands while drain()
    # reads must not leave the flag set with no byte in the pipe, or every
    # later wake() would be skipped and the loop would sleep through them.
    wakeup.wake()
    real = wakeup._reader
    racer = WakeDuringDrain(real, wakeup, before_recv)
    wakeup._reader = racer  # type: ignore[assignment]
    try:
        wakeup.drain()
    finally:
        wakeup._reader = real
    assert racer.landed
    wakeup.wake()  # a later wake-up must reach the selector
    assert len(selector.select(0)) == 1


def test_an_unreferenced_wakeup_closes_its_sockets() -> None:
    before = len(os.listdir("/proc/self/fd"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        pair = Wakeup()
        assert len(os.listdir("/proc/self/fd")) == before + 2
        pair.wake()
        del pair  # no close(): dropping the last reference releases both sockets
        assert len(os.listdir("/proc/self/fd")) == before
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_after_close_wake_does_nothing() -> None:
    pair = Wakeup()
    pair.close()
    assert pair.fileno() == -1
    pair.wake()
    pair.drain()


# -- StopSignal ------------------------------------------------------------------------


def test_stop_signal_flag() -> None:
    signal = StopSignal()
    assert not signal.is_set() and repr(signal) == "<StopSignal clear>"
    signal.set()
    assert signal.is_set() and repr(signal) == "<StopSignal set>"
    signal.set()  # idempotent
    signal.clear()
    assert not signal.is_set()


def test_set_wakes_an_attached_selector(
    wakeup: Wakeup, selector: selectors.BaseSelector
) -> None:
    signal = StopSignal()
    signal.attach(wakeup)
    assert selector.select(0) == []
    threading.Timer(0.05, signal.set).start()
    assert len(selector.select(LONG)) == 1
    assert signal.is_set()


def test_attach_when_already_set_wakes_at_once(
    wakeup: Wakeup, selector: selectors.BaseSelector
) -> None:
    signal = StopSignal()
    signal.set()
    signal.attach(wakeup)
    assert len(selector.select(0)) == 1


def test_set_wakes_every_attached_wakeup() -> None:
    signal = StopSignal()
    pairs = [Wakeup() for _ in range(3)]
    try:
        with selectors.DefaultSelector() as sel:
            for pair in pairs:
                signal.attach(pair)
                sel.register(pair.fileno(), selectors.EVENT_READ)
            signal.set()
            assert len(sel.select(0)) == 3
    finally:
        for pair in pairs:
            pair.close()


def test_detach_stops_the_wakeups(wakeup: Wakeup, selector: selectors.BaseSelector) -> None:
    signal = StopSignal()
    other = Wakeup()
    try:
        signal.attach(wakeup)
        signal.attach(other)
        signal.detach(wakeup)
        signal.detach(wakeup)  # not attached any more: nothing to do
        signal.set()
        assert selector.select(0) == []
        assert signal.is_set()
        with selectors.DefaultSelector() as sel:
            sel.register(other.fileno(), selectors.EVENT_READ)
            assert len(sel.select(0)) == 1  # the other one is still attached
    finally:
        other.close()


def test_set_after_the_wakeup_was_closed_does_not_raise() -> None:
    signal = StopSignal()
    pair = Wakeup()
    signal.attach(pair)
    pair.close()
    signal.set()
    assert signal.is_set()


# -- wait() ----------------------------------------------------------------------------


def test_wait_returns_at_once_when_set() -> None:
    signal = StopSignal()
    signal.set()
    assert signal.wait(0) is True
    assert signal.wait(None) is True


def test_wait_times_out_when_not_set() -> None:
    assert StopSignal().wait(0) is False
    assert StopSignal().wait(0.01) is False


def test_wait_is_ended_by_set_from_another_thread() -> None:
    signal = StopSignal()
    threading.Timer(0.05, signal.set).start()
    assert signal.wait(LONG) is True
    # No timeout at all: only set() ends it.
    signal.clear()
    threading.Timer(0.05, signal.set).start()
    assert signal.wait(None) is True


def test_wait_for_any_of_several_signals() -> None:
    first, second = StopSignal(), StopSignal()
    threading.Timer(0.05, second.set).start()
    assert wait_for_stop((first, second), LONG) is True
    assert second.is_set() and not first.is_set()


def test_wait_leaves_no_wakeup_attached() -> None:
    # After wait() returns, its private wake-up pair is detached and closed:
    # a later set() has nothing stale to write to (and must not fail).
    signal = StopSignal()
    assert signal.wait(0.01) is False
    threading.Timer(0.05, signal.set).start()
    assert signal.wait(LONG) is True
    signal.set()


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def monotonic(self) -> float:
        return self.now


class FakeSelector:
    """Records each select() timeout; advances the fake clock by it (or by a
    scripted amount, for a wake-up that comes early)."""

    def __init__(self, clock: FakeClock, wakes: List[Tuple[float, StopSignal, bool]]) -> None:
        self.clock = clock
        self.timeouts: List[Optional[float]] = []
        self.wakes = wakes  # (after seconds, signal, set it?) per select() call

    def __enter__(self) -> FakeSelector:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def register(self, fileobj: Any, events: int) -> None:
        pass

    def select(self, timeout: Optional[float] = None) -> List[Any]:
        self.timeouts.append(timeout)
        if self.wakes:
            after, signal, really = self.wakes.pop(0)
            self.clock.now += after
            if really:
                signal.set()
            return [object()]
        assert timeout is not None, "would wait forever"
        self.clock.now += timeout
        return []


def fake_wait(
    monkeypatch: pytest.MonkeyPatch, wakes: List[Tuple[float, StopSignal, bool]]
) -> Tuple[FakeClock, FakeSelector]:
    """Give lomond.wakeup (only it) a fake ``time`` and ``selectors`` module."""
    clock = FakeClock()
    selector = FakeSelector(clock, wakes)
    monkeypatch.setattr(wakeup_module, "time", SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(
        wakeup_module,
        "selectors",
        SimpleNamespace(DefaultSelector=lambda: selector, EVENT_READ=selectors.EVENT_READ),
    )
    return clock, selector


def test_wait_timeout_is_one_select_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """No polling: a 30 s wait with nothing happening is a single select(30)."""
    clock, selector = fake_wait(monkeypatch, [])
    assert StopSignal().wait(30) is False
    assert selector.timeouts == [30]
    assert clock.now == 530.0


def test_a_spurious_wake_waits_only_for_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    signal = StopSignal()
    clock, selector = fake_wait(monkeypatch, [(12.0, signal, False)])
    assert signal.wait(30) is False
    assert selector.timeouts == [30, 18]  # the deadline stays where it was
    assert clock.now == 530.0


def test_set_during_the_wait_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    signal = StopSignal()
    clock, selector = fake_wait(monkeypatch, [(4.0, signal, True)])
    assert signal.wait(30) is True
    assert selector.timeouts == [30]
    assert clock.now == 504.0


def test_wait_without_timeout_selects_without_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    signal = StopSignal()
    _, selector = fake_wait(monkeypatch, [(1e6, signal, True)])
    assert signal.wait() is True
    assert selector.timeouts == [None]


# -- from a signal handler -------------------------------------------------------------

SIGNAL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    sys.path.insert(0, sys.argv[1])
    from lomond.wakeup import StopSignal

    stop = StopSignal()
    lock = threading.Lock()

    def handler(signum, frame):
        # Runs in the main thread, between two of its bytecodes, while it
        # holds `lock` and waits in stop.wait(): a set() that needed a lock
        # the interrupted thread holds would deadlock here.
        stop.set()

    signal.signal(signal.SIGUSR1, handler)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    with lock:
        woken = stop.wait(60)
    print("woken" if woken else "timed out")
""")


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR1"), reason="needs SIGUSR1")
def test_set_from_a_signal_handler_while_the_main_thread_holds_a_lock() -> None:
    # The handler's set() ends a 60 s wait; the subprocess is given 20 s.
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_SCRIPT, str(ROOT)],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "woken", result.stderr


# -- issue 18 regressions --------------------------------------------------------------


class CountingWakeable:
    """A fake :class:`~lomond.wakeup.Wakeable` that counts its wake-ups."""

    __slots__ = ("woken",)

    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


#: Threads that attach or detach at once, and objects per thread.
RACERS, PER_RACER = 8, 400


def race(work: Any, batches: List[List[CountingWakeable]]) -> None:
    """Run ``work(batch)`` for each batch in its own thread, all released together.

    A tiny switch interval makes the threads interleave inside attach()/detach().
    """
    barrier = threading.Barrier(len(batches))

    def run(batch: List[CountingWakeable]) -> None:
        barrier.wait(10)
        work(batch)

    threads = [threading.Thread(target=run, args=(batch,), daemon=True) for batch in batches]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(previous)
    assert not any(thread.is_alive() for thread in threads), "attach/detach did not finish"


def test_concurrent_attaches_are_all_kept() -> None:
    signal = StopSignal()
    batches = [[CountingWakeable() for _ in range(PER_RACER)] for _ in range(RACERS)]

    def attach_all(batch: List[CountingWakeable]) -> None:
        for kept in batch:
            signal.attach(kept)
            # A short-lived registration in between, as a connection that
            # starts and ends while others attach: on CPython the rebuilt
            # tuple of attach() alone is rarely interrupted, detach() is.
            passing = CountingWakeable()
            signal.attach(passing)
            signal.detach(passing)

    race(attach_all, batches)
    signal.set()
    lost = sum(1 for batch in batches for kept in batch if kept.woken == 0)
    assert lost == 0, f"{lost} of {RACERS * PER_RACER} attached wakeables were not woken"


def test_concurrent_detaches_leave_none_attached() -> None:
    signal = StopSignal()
    batches = [[CountingWakeable() for _ in range(PER_RACER)] for _ in range(RACERS)]
    for batch in batches:
        for wakeable in batch:
            signal.attach(wakeable)

    def detach_all(batch: List[CountingWakeable]) -> None:
        for wakeable in batch:
            signal.detach(wakeable)

    race(detach_all, batches)
    signal.clear()
    signal.set()
    still = sum(1 for batch in batches for wakeable in batch if wakeable.woken)
    assert still == 0, f"{still} of {RACERS * PER_RACER} detached wakeables were still woken"


# -- Latch -------------------------------------------------------------------------------


def test_latch_is_set_once_and_says_which_call_set_it() -> None:
    latch = Latch()
    assert not latch.is_set()
    assert not latch.wait(0.01)  # times out unset
    assert latch.set() is True
    assert latch.set() is False
    assert latch.is_set() and latch.wait(0) and latch.wait()


def test_latch_releases_a_waiter_in_another_thread() -> None:
    latch = Latch()
    results: List[bool] = []
    waiter = threading.Thread(target=lambda: results.append(latch.wait(LONG)))
    waiter.start()
    threading.Timer(0.05, latch.set).start()
    waiter.join(LONG)
    assert results == [True]
