"""Every connection setting in one place: its default, its type and its check.

:class:`ConnectOptions` holds the timers and switches of one connection
(:meth:`WebSocket.connect <lomond.websocket.WebSocket.connect>`),
:class:`PersistOptions` those of the reconnect loop
(:func:`~lomond.persist.persist`). Both are frozen: a connection reads its
options once, and nothing changes them under it.

``connect()``, ``persist()`` and :class:`~lomond.handlers.WebSocketApp`'s
``run_forever()``/``start()`` take these as keyword arguments; the
:class:`ConnectKeywords` and :class:`RunKeywords` typed dictionaries describe
them to type checkers (``**options: Unpack[RunKeywords]``), so a misspelled
or mistyped option is caught by mypy as well as at run time.
"""

from __future__ import annotations

import math
import socket
from typing import Any, Dict, List, Mapping, Optional, Tuple, TypedDict, Union

import attrs

from .constants import DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT

#: A ``(level, option, value)`` tuple for ``socket.setsockopt``.
SocketOption = Tuple[int, int, Union[int, bytes]]


def tcp_keepalive(idle: int = 60, interval: int = 10, count: int = 5) -> List[SocketOption]:
    """``socket_options`` that turn on TCP keepalive, for :class:`~lomond.WebSocket`.

    .. not-runnable: a fragment: ``url`` is yours

    The first probe is sent after ``idle`` seconds without traffic, then one
    every ``interval`` seconds; after ``count`` unanswered probes the kernel
    drops the connection (reported as ``Disconnected``). Options the platform
    lacks are left out (``SO_KEEPALIVE`` is always there; Linux and Windows
    have ``TCP_KEEPIDLE``, macOS calls it ``TCP_KEEPALIVE``)::

        WebSocket(url, socket_options=tcp_keepalive(idle=30, interval=5, count=3))

    Application-level pings (``ping_rate`` and ``ping_timeout``) detect a dead
    server too, and also a stuck one; keepalive also covers idle NAT timeouts
    without waking the application.
    """
    for name, value in (("idle", idle), ("interval", interval), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"tcp_keepalive {name} must be a whole number >= 1")
    options: List[SocketOption] = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    if idle_option is not None:
        options.append((socket.IPPROTO_TCP, idle_option, idle))
    if hasattr(socket, "TCP_KEEPINTVL"):
        options.append((socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval))
    if hasattr(socket, "TCP_KEEPCNT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count))
    return options



def _seconds(allow_none: bool = False, allow_zero: bool = True) -> Any:
    """A validator for a duration in seconds."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and allow_none:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            kind = "a number of seconds" + (" or None" if allow_none else "")
            raise TypeError(f"{attribute.name} must be {kind}, not {value!r}")
        number = float(value)
        if math.isnan(number) or number < 0 or (number == 0 and not allow_zero):
            least = "0 seconds or more" if allow_zero else "more than 0 seconds"
            raise ValueError(f"{attribute.name} must be {least}, not {value!r}")

    return check


def _flag(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, not {value!r}")


@attrs.frozen(kw_only=True)
class ConnectOptions:
    """The options of one connection (Lomond 0.3's ``connect()`` arguments and more).

    :param poll: seconds between :class:`~lomond.events.Poll` events; the
        first comes right after :class:`~lomond.events.Ready` (0 disables them).
    :param ping_rate: seconds between automatic pings, the first right after
        Ready as in Lomond 0.3.4 (0 disables them).
    :param ping_timeout: seconds to wait for a pong after a ping before
        :class:`~lomond.events.Unresponsive` and a disconnect (``None`` or 0: never).
    :param auto_pong: answer the server's pings (RFC 6455 section 5.5.2).
    :param close_timeout: seconds to wait for the server to complete the close
        handshake before dropping the connection (``None`` or 0: wait forever).
    :param connect_timeout: seconds for the TCP connect and any proxy CONNECT.
    :param handshake_timeout: seconds for TLS and the upgrade response together.
    """

    poll: float = attrs.field(default=5.0, validator=_seconds())
    ping_rate: float = attrs.field(default=30.0, validator=_seconds())
    ping_timeout: Optional[float] = attrs.field(
        default=None, validator=_seconds(allow_none=True)
    )
    auto_pong: bool = attrs.field(default=True, validator=_flag)
    close_timeout: Optional[float] = attrs.field(default=30.0, validator=_seconds(allow_none=True))
    connect_timeout: float = attrs.field(
        default=DEFAULT_CONNECT_TIMEOUT, validator=_seconds(allow_zero=False)
    )
    handshake_timeout: float = attrs.field(
        default=DEFAULT_HANDSHAKE_TIMEOUT, validator=_seconds(allow_zero=False)
    )


@attrs.frozen(kw_only=True)
class PersistOptions:
    """The options of the reconnect loop (:func:`~lomond.persist.persist`).

    :param min_wait: the shortest wait between attempts, in seconds.
    :param max_wait: the longest (the back-off cap stops doubling there).
    :param respect_retry_after: wait at least what a rejected handshake's
        ``Retry-After`` header asks for (RFC 7231 section 7.1.3), even beyond
        ``max_wait``.
    """

    min_wait: float = attrs.field(default=5.0, validator=_seconds())
    max_wait: float = attrs.field(default=30.0, validator=_seconds())
    respect_retry_after: bool = attrs.field(default=True, validator=_flag)


#: The default connection options, for signatures that spell them out
#: (Lomond 0.3's ``connect()``).
DEFAULT_CONNECT = ConnectOptions()
#: The default reconnect options (``persist()``'s signature).
DEFAULT_PERSIST = PersistOptions()

#: The keyword names of :class:`ConnectOptions`.
CONNECT_OPTION_NAMES = frozenset(field.name for field in attrs.fields(ConnectOptions))
#: The keyword names of :class:`PersistOptions`.
PERSIST_OPTION_NAMES = frozenset(field.name for field in attrs.fields(PersistOptions))


class MoreConnectKeywords(TypedDict, total=False):
    """:class:`ConnectKeywords` that :func:`~lomond.persist.persist` does not name itself."""

    auto_pong: bool
    close_timeout: Optional[float]
    connect_timeout: float
    handshake_timeout: float


class ConnectKeywords(MoreConnectKeywords, total=False):
    """The keyword arguments that build a :class:`ConnectOptions` (for type checkers)."""

    poll: float
    ping_rate: float
    ping_timeout: Optional[float]


class RunKeywords(ConnectKeywords, total=False):
    """:class:`ConnectKeywords` plus the reconnect loop's (:class:`PersistOptions`)."""

    min_wait: float
    max_wait: float
    respect_retry_after: bool


def split_options(
    options: Mapping[str, Any], where: str, allow_persist: bool = True
) -> tuple[ConnectOptions, PersistOptions]:
    """Build both option values from keyword arguments, checking every name.

    ``where`` names the function in error messages (``"start()"``, say). A
    reconnect option where reconnects are off is a ``TypeError`` that says
    so, rather than being silently ignored.
    """
    connect: Dict[str, Any] = {}
    persist: Dict[str, Any] = {}
    for name, value in options.items():
        if name in CONNECT_OPTION_NAMES:
            connect[name] = value
        elif name in PERSIST_OPTION_NAMES:
            if not allow_persist:
                raise TypeError(f"{name} applies to reconnects: pass reconnect=True to use it")
            persist[name] = value
        else:
            known = ", ".join(sorted(CONNECT_OPTION_NAMES | PERSIST_OPTION_NAMES))
            raise TypeError(
                f"{where} got an unexpected keyword argument {name!r} (options: {known})"
            )
    return ConnectOptions(**connect), PersistOptions(**persist)


__all__ = [
    "CONNECT_OPTION_NAMES", "DEFAULT_CONNECT", "DEFAULT_PERSIST", "PERSIST_OPTION_NAMES",
    "ConnectKeywords", "ConnectOptions", "MoreConnectKeywords", "PersistOptions", "RunKeywords",
    "SocketOption", "split_options", "tcp_keepalive",
]
