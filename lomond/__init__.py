"""lomond: a Pythonic, correct and fast WebSocket client (RFC 6455, RFC 7692).

Quick use::

    from lomond import WebSocket

    websocket = WebSocket("wss://example.org/feed")
    for event in websocket:
        if event.name == "ready":
            websocket.send_json(subscribe="ticker")
        elif event.name == "text":
            print(event.json)

See :class:`lomond.websocket.WebSocket`, :mod:`lomond.events`,
:func:`lomond.persist.persist` and :mod:`lomond.handlers`.
"""

from __future__ import annotations

import logging

# ``persist`` is the module, as in Lomond 0.3 (``lomond.persist.persist()``,
# ``lomond.persist.random()``): binding the function of the same name here
# would hide the module's other names.
from . import events, persist
from ._version import __version__
from .compression import PerMessageDeflate
from .status import Status
from .websocket import WebSocket

# A library must not configure logging; it only makes sure that, with no
# configuration, nothing is printed on its behalf.
logging.getLogger("lomond").addHandler(logging.NullHandler())

__all__ = ["PerMessageDeflate", "Status", "WebSocket", "__version__", "events", "persist"]
