"""Attribute errors that name the method to use (for websocket-client's names).

``app.send(...)`` and ``websocket.recv()`` are what websocket-client users
type first. The object has no such attribute, so it stays an
``AttributeError`` (``hasattr`` keeps working), but the message says what
lomond calls it.
"""

from __future__ import annotations

from typing import Mapping

#: websocket-client's ``WebSocket`` / ``WebSocketApp`` methods, and what to use
#: on a :class:`lomond.WebSocket` (a ``WebSocketApp`` adds its own, in
#: :mod:`lomond.handlers.names`).
WEBSOCKET_METHODS: Mapping[str, str] = {
    "send": "use send_text(text) or send_binary(data) (or send_json(obj)); "
    "websocket-client's send(data, opcode) is both",
    "send_bytes": "use send_binary(data)",
    "recv": "lomond has no recv(): iterate over websocket.connect() and handle the "
    "'text' and 'binary' events (or use lomond.handlers.WebSocketApp)",
    "recv_data": "lomond has no recv(): iterate over websocket.connect() and handle the "
    "'text' and 'binary' events",
    "ping": "use send_ping(data)",
    "pong": "use send_pong(data)",
    "abort": "use force_disconnect()",
    "shutdown": "use close() (graceful) or force_disconnect()",
}


def missing_attribute(obj: object, name: str, hints: Mapping[str, str]) -> AttributeError:
    """The ``AttributeError`` for ``obj.name``, with the hint for ``name`` if there is one.

    ``name`` and ``obj`` are set on the error as Python 3.10+ sets them, so
    the interpreter's own "Did you mean" suggestion still works for the rest.
    """
    message = f"{type(obj).__name__!r} object has no attribute {name!r}"
    hint = hints.get(name)
    if hint is not None:
        message += f": {hint}"
    error = AttributeError(message)
    error.name = name
    error.obj = obj
    return error
