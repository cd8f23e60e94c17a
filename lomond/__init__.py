"""lomond: a Pythonic, correct and fast WebSocket client (RFC 6455, RFC 7692).

Quick use::

    from lomond import WebSocket

    websocket = WebSocket("wss://example.org/feed")
    for event in websocket:
        if event.name == "ready":
            websocket.send_json(subscribe="ticker")
        elif event.name == "text":
            print(event.json)
        elif event.name in ("connect_fail", "rejected"):
            print("could not connect:", event.reason)
        elif event.name == "disconnected":
            print("gone:", event.reason)

See :class:`lomond.websocket.WebSocket`, :mod:`lomond.events`,
:func:`lomond.persist.persist` and :mod:`lomond.handlers`.
"""

from __future__ import annotations

# ``persist`` is the module, as in Lomond 0.3 (``lomond.persist.persist()``,
# ``lomond.persist.random()``): binding the function of the same name here
# would hide the module's other names.
from . import events, persist
from ._version import __version__
from .compression import PerMessageDeflate
from .status import Status
from .websocket import WebSocket

# No NullHandler on purpose: with logging unconfigured, Python's last-resort
# handler shows WARNING and above on stderr, and lomond logs at WARNING or
# above only for an error in the application's code (an error hook that
# raised, say); normal operation logs at INFO and DEBUG. Handler errors are
# reported by WebSocketApp.report_error.

__all__ = ["PerMessageDeflate", "Status", "WebSocket", "__version__", "events", "persist"]
