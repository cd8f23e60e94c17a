"""Event handlers for lomond: a :class:`WebSocketApp` calls your functions for events.

Two styles, which may be mixed::

    from lomond.handlers import WebSocketApp

    app = WebSocketApp("wss://example.org/feed")

    @app.on("ready")
    def subscribe(event):
        app.send_json(type="subscribe", channel="ticker")

    @app.on("text")
    def show(event):
        print(event.json)

    outcome = app.run_forever()

or a subclass with ``on_<event name>`` methods (``on_ready``, ``on_text``,
..., ``on_event`` for every event, ``on_error`` for handler errors).
See ``docs/handlers.md`` for running in a thread, error policies and testing
handlers with :meth:`WebSocketApp.dispatch`. A :class:`Hub` runs many apps
on one thread (see ``docs/hub.md``).
"""

from __future__ import annotations

from .app import WebSocketApp
from .hub import Hub
from .outcome import Outcome
from .policy import ErrorPolicy

__all__ = ["ErrorPolicy", "Hub", "Outcome", "WebSocketApp"]
