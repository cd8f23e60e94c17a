"""lomond.options: the defaults, the checks and their messages, and split_options().

Unit tests of the option values alone (no connection): what each option
defaults to, which values are refused with which exception and message,
and how keyword arguments are sorted into connection and reconnect options.
test_options.py checks the options' effects on real connections.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import attrs
import pytest

from lomond import WebSocket
from lomond.constants import DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT
from lomond.options import (
    CONNECT_OPTION_NAMES,
    DEFAULT_CONNECT,
    DEFAULT_PERSIST,
    PERSIST_OPTION_NAMES,
    ConnectKeywords,
    ConnectOptions,
    PersistOptions,
    RunKeywords,
    split_options,
)
from lomond.persist import persist

# -- defaults --------------------------------------------------------------------------


def test_connect_defaults() -> None:
    assert attrs.asdict(ConnectOptions()) == {
        "poll": 5.0,
        "ping_rate": 30.0,
        "ping_timeout": None,
        "auto_pong": True,
        "close_timeout": 30.0,
        "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "handshake_timeout": DEFAULT_HANDSHAKE_TIMEOUT,
    }
    assert DEFAULT_CONNECT == ConnectOptions()


def test_persist_defaults() -> None:
    assert attrs.asdict(PersistOptions()) == {
        "min_wait": 5.0, "max_wait": 30.0, "respect_retry_after": True,
    }
    assert DEFAULT_PERSIST == PersistOptions()


def test_option_names_match_the_typed_keywords() -> None:
    # The TypedDicts that type checkers see name exactly the options that exist.
    assert ConnectKeywords.__optional_keys__ == CONNECT_OPTION_NAMES
    assert RunKeywords.__optional_keys__ == CONNECT_OPTION_NAMES | PERSIST_OPTION_NAMES
    assert not ConnectKeywords.__required_keys__ and not RunKeywords.__required_keys__
    assert not CONNECT_OPTION_NAMES & PERSIST_OPTION_NAMES


def test_options_are_frozen() -> None:
    options = ConnectOptions(poll=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.poll = 2  # type: ignore[misc]


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        ConnectOptions(5)  # type: ignore[call-arg]


# -- what is accepted ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"poll": 0, "ping_rate": 0},  # 0 turns them off
        {"poll": 0.01, "ping_rate": 1, "ping_timeout": 0.5},
        {"ping_timeout": 0, "close_timeout": 0},  # 0: never
        {"ping_timeout": None, "close_timeout": None},
        {"connect_timeout": 0.001, "handshake_timeout": 1e9},
        {"auto_pong": False},
        {"poll": math.inf},
    ],
)
def test_valid_connect_options(options: Dict[str, Any]) -> None:
    built = ConnectOptions(**options)
    for name, value in options.items():
        assert getattr(built, name) == value


# -- what is refused, and the messages ---------------------------------------------------


@pytest.mark.parametrize(
    "name, value, error, message",
    [
        ("poll", -1, ValueError, "poll must be 0 seconds or more, not -1"),
        ("poll", "5", TypeError, "poll must be a number of seconds, not '5'"),
        ("poll", None, TypeError, "poll must be a number of seconds, not None"),
        ("poll", True, TypeError, "poll must be a number of seconds, not True"),
        ("poll", math.nan, ValueError, "poll must be 0 seconds or more, not nan"),
        ("ping_rate", -0.5, ValueError, "ping_rate must be 0 seconds or more, not -0.5"),
        ("ping_timeout", -1, ValueError, "ping_timeout must be 0 seconds or more, not -1"),
        ("ping_timeout", "x", TypeError,
         "ping_timeout must be a number of seconds or None, not 'x'"),
        ("close_timeout", -2, ValueError, "close_timeout must be 0 seconds or more, not -2"),
        ("connect_timeout", 0, ValueError, "connect_timeout must be more than 0 seconds"),
        ("connect_timeout", None, TypeError,
         "connect_timeout must be a number of seconds, not None"),
        ("handshake_timeout", 0.0, ValueError, "handshake_timeout must be more than 0 seconds"),
        ("auto_pong", 1, TypeError, "auto_pong must be True or False, not 1"),
        ("auto_pong", None, TypeError, "auto_pong must be True or False, not None"),
    ],
)
def test_invalid_connect_options(name: str, value: Any, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        ConnectOptions(**{name: value})
    # The message names the option, what it must be and the value given.
    assert str(raised.value).startswith(message)
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize(
    "name, value, error, message",
    [
        ("min_wait", -1, ValueError, "min_wait must be 0 seconds or more, not -1"),
        ("max_wait", "30", TypeError, "max_wait must be a number of seconds, not '30'"),
        ("respect_retry_after", "yes", TypeError,
         "respect_retry_after must be True or False, not 'yes'"),
    ],
)
def test_invalid_persist_options(name: str, value: Any, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        PersistOptions(**{name: value})
    assert str(raised.value) == message


def test_invalid_options_are_refused_when_connect_is_called() -> None:
    # Checked before anything happens: the first next() raises, no Connecting.
    with pytest.raises(ValueError, match="ping_rate must be 0 seconds or more"):
        next(iter(WebSocket("ws://127.0.0.1:1/").connect(ping_rate=-1)))
    with pytest.raises(ValueError, match="min_wait must be 0 seconds or more"):
        persist(WebSocket("ws://127.0.0.1:1/"), min_wait=-1)
    with pytest.raises(TypeError, match="close_timeout must be a number of seconds or None"):
        persist(WebSocket("ws://127.0.0.1:1/"), close_timeout="soon")  # type: ignore[arg-type]


# -- split_options ---------------------------------------------------------------------


def test_split_options_sorts_the_names() -> None:
    connect, reconnect = split_options(
        {"poll": 1, "close_timeout": None, "min_wait": 2, "respect_retry_after": False},
        "run_forever()",
    )
    assert connect == ConnectOptions(poll=1, close_timeout=None)
    assert reconnect == PersistOptions(min_wait=2, respect_retry_after=False)


def test_split_options_with_nothing_gives_the_defaults() -> None:
    assert split_options({}, "start()") == (DEFAULT_CONNECT, DEFAULT_PERSIST)


def test_split_options_unknown_name_lists_the_options() -> None:
    with pytest.raises(TypeError) as raised:
        split_options({"pol": 1}, "start()")
    message = str(raised.value)
    assert message.startswith("start() got an unexpected keyword argument 'pol' (options: ")
    listed = message.split("(options: ", 1)[1].rstrip(")").split(", ")
    assert listed == sorted(CONNECT_OPTION_NAMES | PERSIST_OPTION_NAMES)


def test_split_options_reconnect_option_without_reconnects() -> None:
    with pytest.raises(TypeError, match="max_wait applies to reconnects: pass reconnect=True"):
        split_options({"max_wait": 3}, "start()", allow_persist=False)
    # Connection options are still fine there.
    connect, _ = split_options({"poll": 2}, "start()", allow_persist=False)
    assert connect.poll == 2


def test_split_options_checks_the_values() -> None:
    with pytest.raises(ValueError, match="poll must be 0 seconds or more, not -3"):
        split_options({"poll": -3}, "start()")
