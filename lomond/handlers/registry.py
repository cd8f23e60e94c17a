"""Which handlers run for which event, in registration order.

Handlers are kept in one ordered list of ``(key, handler)`` entries, where the
key is an event name or :data:`ANY` (every event). The handlers for an event
are the entries whose key is its name or :data:`ANY`, in the order they were
registered; that tuple is computed once per event name and cached until the
next change, so dispatching costs one dictionary look-up.

Blinker is not used here on purpose: ``Signal.send`` calls receivers in an
order its documentation calls undefined (receiver ids are kept in sets; the
ordered ``set_class`` hook needs blinker 1.7 and still merges "any sender"
and per-sender receivers), and handler order is part of this API.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .. import events
from .names import event_name_hint

#: The key of handlers that receive every event (``app.on("*")``).
ANY = "*"

Handler = Callable[[Any], Any]
EventKey = Union[str, type]


def resolve_key(event: EventKey) -> str:
    """The registry key for an event name or class; ``ValueError`` if it is neither.

    Names are those of :data:`lomond.events.EVENT_TYPES` and ``"*"`` (the
    error for an unknown one names the one probably meant: ``"txt"``, did
    you mean ``'text'``; websocket-client's ``"message"``, ``'text'`` or
    ``'binary'``); classes
    are the concrete event classes, or :class:`~lomond.events.Event` (every event).
    """
    if isinstance(event, str):
        if event == ANY or event in events.EVENT_TYPES:
            return event
        known = ", ".join(sorted(events.EVENT_TYPES))
        hint = event_name_hint(event)
        raise ValueError(
            f"unknown event name {event!r}{f' ({hint})' if hint else ''}; "
            f"expected '*' or one of: {known}"
        )
    if isinstance(event, type) and issubclass(event, events.Event):
        if event is events.Event:
            return ANY
        if events.EVENT_TYPES.get(event.name) is event:
            return event.name
        raise ValueError(
            f"{event.__name__} is not an event lomond generates; "
            "register for one of lomond.events.EVENT_TYPES or Event"
        )
    raise ValueError(f"expected an event name or an Event class, not {event!r}")


class HandlerRegistry:
    """An ordered, thread-safe map from event keys to handlers.

    Registering the same handler twice for the same key keeps the first
    registration only (it is called once per event). Changes made while an
    event is being dispatched apply from the next event on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: List[Tuple[str, Handler]] = []
        self._cache: Dict[str, Tuple[Handler, ...]] = {}

    def add(self, key: str, handler: Handler) -> None:
        """Append ``handler`` for ``key`` (a key from :func:`resolve_key`)."""
        if not callable(handler):
            raise TypeError(f"a handler must be callable, not {handler!r}")
        with self._lock:
            if (key, handler) not in self._entries:
                self._entries.append((key, handler))
                self._cache = {}

    def remove(self, handler: Handler, key: Optional[str] = None) -> bool:
        """Unregister ``handler`` from ``key``, or from every key; whether it was found."""
        with self._lock:
            kept = [
                (k, h) for k, h in self._entries if not (h == handler and key in (None, k))
            ]
            found = len(kept) != len(self._entries)
            if found:
                self._entries = kept
                self._cache = {}
            return found

    def handlers_for(self, name: str) -> Tuple[Handler, ...]:
        """The handlers for an event called ``name``, in registration order."""
        cached = self._cache.get(name)
        if cached is None:
            with self._lock:
                cached = tuple(h for k, h in self._entries if k == name or k == ANY)
                self._cache[name] = cached
        return cached

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["ANY", "HandlerRegistry", "resolve_key"]
