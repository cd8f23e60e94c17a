"""Catching handler names that would never be called.

A subclass method ``on_txt`` or ``on_message`` (websocket-client's name) is
never called by :class:`~lomond.handlers.WebSocketApp`, and a keyword
argument ``on_message=...`` is not one lomond knows. Both are mistakes that
would otherwise fail silently or with an unhelpful message, so they are
refused with the name to use instead.
"""

from __future__ import annotations

import difflib
from typing import AbstractSet, Any, Dict, Mapping, Optional, Tuple

from .. import events
from .._hints import WEBSOCKET_METHODS

#: What to write instead of websocket-client's callback names.
WEBSOCKET_CLIENT_NAMES: Dict[str, str] = {
    "on_message": "on_text (text messages) or on_binary (binary messages)",
    "on_data": "on_text (text messages) or on_binary (binary messages)",
    "on_cont_message": "on_text or on_binary (lomond delivers whole messages, never fragments)",
    "on_open": "on_ready (the handshake is done: sends are accepted)",
    "on_close": "on_closed (the close handshake finished) or on_disconnected (the connection "
    "is gone, for any reason)",
    "on_reconnect": "on_ready (called on every connection) or on_back_off (before a reconnect)",
}


#: websocket-client's ``WebSocketApp`` attributes, and what to use on a
#: :class:`~lomond.handlers.WebSocketApp` (``app.send(...)`` says to use
#: ``send_text``/``send_binary``).
APP_METHODS: Mapping[str, str] = {
    **WEBSOCKET_METHODS,
    "recv": "a WebSocketApp has no recv(): messages go to your handlers "
    '(@app.on("text"), @app.on("binary"), or on_text/on_binary methods)',
    "sock": "the connection is app.websocket (a lomond.WebSocket)",
    "keep_running": "use app.is_running, and app.stop() to end the run",
}

#: websocket-client's callback names as event names (``@app.on("message")``).
_EVENT_NAME_HINTS: Dict[str, str] = {
    "message": "'text' (text messages) or 'binary' (binary messages)",
    "data": "'text' (text messages) or 'binary' (binary messages)",
    "open": "'ready' (the handshake is done: sends are accepted)",
    "close": "'closed' (the close handshake finished) or 'disconnected' (the connection "
    "is gone, for any reason)",
    "reconnect": "'ready' (every connection) or 'back_off' (before a reconnect)",
    "error": "error_policy=..., a subclass method on_error, or "
    "app.on_error_signal.connect(receiver) for handler errors; 'connect_fail', "
    "'rejected' or 'protocol_error' for connection failures",
}


def event_name_hint(name: str) -> Optional[str]:
    """A hint for an unknown event name: websocket-client's meaning, else the closest name.

    ``"txt"`` gives ``"did you mean 'text'?"``; ``"message"`` names ``'text'``
    and ``'binary'``. ``None`` when nothing is close.
    """
    if name in _EVENT_NAME_HINTS:
        return f"use {_EVENT_NAME_HINTS[name]}"
    close = difflib.get_close_matches(name, sorted(events.EVENT_TYPES), n=1)
    return f"did you mean {close[0]!r}?" if close else None


def handler_method_names() -> AbstractSet[str]:
    """``on_<name>`` for every event lomond generates."""
    return {f"on_{name}" for name in events.EVENT_TYPES}


def suggestion(name: str, known: AbstractSet[str]) -> str:
    """A hint for a wrong ``on_*`` name: ours for websocket-client's, else the closest match."""
    if name in WEBSOCKET_CLIENT_NAMES:
        return f"(use {WEBSOCKET_CLIENT_NAMES[name]})"
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"(did you mean {close[0]}?)" if close else ""


def check_handler_names(cls: type, hooks: AbstractSet[str]) -> None:
    """``ValueError`` if ``cls`` defines an ``on_*`` attribute that is neither a handler nor a hook.

    :param hooks: the ``on_*`` names that are not event handlers but are
        allowed (``on_event``, ``on_error``, ...).
    """
    handlers = handler_method_names()
    for name in vars(cls):
        if not name.startswith("on_") or name in handlers or name in hooks:
            continue
        hint = suggestion(name, handlers | {"on_event"})
        valid = ", ".join(sorted(handlers | {"on_event"}))
        raise ValueError(
            f"{cls.__qualname__}.{name} would never be called"
            f"{' ' + hint if hint else ''}. Handler methods are on_event and "
            f"on_<event name>: {valid}. (Pass check_handlers=False in the class "
            "statement to allow other on_* names.)"
        )


#: The events meant by websocket-client's callback keyword arguments.
WEBSOCKET_CLIENT_EVENTS: Dict[str, Tuple[str, ...]] = {
    "on_message": ("text", "binary"),
    "on_data": ("text", "binary"),
    "on_cont_message": ("text", "binary"),
    "on_open": ("ready",),
    "on_close": ("closed", "disconnected"),
    "on_reconnect": ("ready", "back_off"),
}


def check_websocket_options(options: Mapping[str, Any]) -> None:
    """``TypeError`` with a hint for a callback keyword (``on_message=...``) given to the app."""
    for name in options:
        if not name.startswith("on_"):
            continue
        if name == "on_error":
            hint = (
                "error_policy=..., a subclass method on_error, or "
                "app.on_error_signal.connect(receiver)"
            )
        else:
            if name[3:] in events.EVENT_TYPES:
                meant: Tuple[str, ...] = (name[3:],)
            else:
                meant = WEBSOCKET_CLIENT_EVENTS.get(name, ())
            if meant:
                hint = (
                    " or ".join(f'@app.on("{event}")' for event in meant)
                    + ", or a subclass method "
                    + " or ".join(f"on_{event}" for event in meant)
                )
            else:
                close = suggestion(name, handler_method_names())
                hint = '@app.on("<event name>") or a subclass method on_<event name>'
                if close:
                    hint += f" {close}"
        raise TypeError(
            f"WebSocketApp() got an unexpected keyword argument {name!r}: lomond takes "
            f"no callback arguments; use {hint}"
        )


__all__ = [
    "APP_METHODS",
    "WEBSOCKET_CLIENT_EVENTS",
    "WEBSOCKET_CLIENT_NAMES",
    "check_handler_names",
    "check_websocket_options",
    "event_name_hint",
    "handler_method_names",
    "suggestion",
]
