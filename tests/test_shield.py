"""lomond.shield: a Ctrl-C held back until a cleanup block is whole."""

from __future__ import annotations

import signal
import threading
from typing import Any, List

import pytest

from lomond.shield import ctrl_c_deferred

needs_main = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers run in the main thread only",
)


@pytest.fixture
def sigint_restored() -> Any:
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


@needs_main
def test_a_ctrl_c_inside_is_raised_after_the_block(sigint_restored: Any) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    steps: List[str] = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_deferred():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")  # the block goes on
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@needs_main
def test_the_handler_in_place_gets_each_signal_after_the_block(sigint_restored: Any) -> None:
    seen: List[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    with ctrl_c_deferred():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        assert seen == []
    assert seen == [signal.SIGINT, signal.SIGINT]


@needs_main
def test_nested_blocks_hold_it_until_the_outer_one_ends(sigint_restored: Any) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    steps: List[str] = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_deferred():
            with ctrl_c_deferred():
                signal.raise_signal(signal.SIGINT)
            steps.append("inner done")
    assert steps == ["inner done"]


@needs_main
def test_no_signal_no_call_and_the_handler_is_back(sigint_restored: Any) -> None:
    seen: List[int] = []

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)

    signal.signal(signal.SIGINT, handler)
    with ctrl_c_deferred():
        pass
    assert seen == [] and signal.getsignal(signal.SIGINT) is handler


@needs_main
def test_an_ignored_sigint_stays_ignored(sigint_restored: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with ctrl_c_deferred():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)


def test_outside_the_main_thread_it_changes_nothing() -> None:
    handlers: List[Any] = []

    def body() -> None:
        before = signal.getsignal(signal.SIGINT)
        with ctrl_c_deferred():
            handlers.append(signal.getsignal(signal.SIGINT) is before)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(5)
    assert handlers == [True]
