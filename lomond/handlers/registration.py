"""Registering handlers: :meth:`Registration.on` and :meth:`Registration.off`.

The overloads of ``on()`` give type checkers the event type of each name, so
that ``@app.on("text")`` accepts ``def handler(event: Text)`` (and a handler
for a base class such as ``Event``) and rejects one taking ``Binary``. A name
that is not a literal (a ``str`` variable) could be any event, so its handler
must accept :class:`~lomond.events.Event`.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional, Protocol, Type, TypeVar, overload

from .. import events as ev
from .registry import EventKey, Handler, HandlerRegistry, resolve_key

E = TypeVar("E", bound=ev.Event)
R = TypeVar("R")

#: A handler for events of type ``E``.
HandlerFunc = Callable[[E], R]


class HandlerDecorator(Protocol[E]):
    """What ``app.on(name)`` returns: registers a handler and returns it unchanged."""

    def __call__(self, handler: HandlerFunc[E, R], /) -> HandlerFunc[E, R]: ...


class Registration:
    """Adds ``on()`` and ``off()`` over a :class:`~lomond.handlers.registry.HandlerRegistry`."""

    _registry: HandlerRegistry

    @overload
    def on(
        self, event: Literal["connecting"], handler: None = None
    ) -> HandlerDecorator[ev.Connecting]: ...
    @overload
    def on(
        self, event: Literal["connecting"], handler: HandlerFunc[ev.Connecting, R]
    ) -> HandlerFunc[ev.Connecting, R]: ...
    @overload
    def on(
        self, event: Literal["connected"], handler: None = None
    ) -> HandlerDecorator[ev.Connected]: ...
    @overload
    def on(
        self, event: Literal["connected"], handler: HandlerFunc[ev.Connected, R]
    ) -> HandlerFunc[ev.Connected, R]: ...
    @overload
    def on(
        self, event: Literal["connect_fail"], handler: None = None
    ) -> HandlerDecorator[ev.ConnectFail]: ...
    @overload
    def on(
        self, event: Literal["connect_fail"], handler: HandlerFunc[ev.ConnectFail, R]
    ) -> HandlerFunc[ev.ConnectFail, R]: ...
    @overload
    def on(
        self, event: Literal["rejected"], handler: None = None
    ) -> HandlerDecorator[ev.Rejected]: ...
    @overload
    def on(
        self, event: Literal["rejected"], handler: HandlerFunc[ev.Rejected, R]
    ) -> HandlerFunc[ev.Rejected, R]: ...
    @overload
    def on(self, event: Literal["ready"], handler: None = None) -> HandlerDecorator[ev.Ready]: ...
    @overload
    def on(
        self, event: Literal["ready"], handler: HandlerFunc[ev.Ready, R]
    ) -> HandlerFunc[ev.Ready, R]: ...
    @overload
    def on(self, event: Literal["text"], handler: None = None) -> HandlerDecorator[ev.Text]: ...
    @overload
    def on(
        self, event: Literal["text"], handler: HandlerFunc[ev.Text, R]
    ) -> HandlerFunc[ev.Text, R]: ...
    @overload
    def on(self, event: Literal["binary"], handler: None = None) -> HandlerDecorator[ev.Binary]: ...
    @overload
    def on(
        self, event: Literal["binary"], handler: HandlerFunc[ev.Binary, R]
    ) -> HandlerFunc[ev.Binary, R]: ...
    @overload
    def on(self, event: Literal["ping"], handler: None = None) -> HandlerDecorator[ev.Ping]: ...
    @overload
    def on(
        self, event: Literal["ping"], handler: HandlerFunc[ev.Ping, R]
    ) -> HandlerFunc[ev.Ping, R]: ...
    @overload
    def on(self, event: Literal["pong"], handler: None = None) -> HandlerDecorator[ev.Pong]: ...
    @overload
    def on(
        self, event: Literal["pong"], handler: HandlerFunc[ev.Pong, R]
    ) -> HandlerFunc[ev.Pong, R]: ...
    @overload
    def on(self, event: Literal["poll"], handler: None = None) -> HandlerDecorator[ev.Poll]: ...
    @overload
    def on(
        self, event: Literal["poll"], handler: HandlerFunc[ev.Poll, R]
    ) -> HandlerFunc[ev.Poll, R]: ...
    @overload
    def on(
        self, event: Literal["unresponsive"], handler: None = None
    ) -> HandlerDecorator[ev.Unresponsive]: ...
    @overload
    def on(
        self, event: Literal["unresponsive"], handler: HandlerFunc[ev.Unresponsive, R]
    ) -> HandlerFunc[ev.Unresponsive, R]: ...
    @overload
    def on(
        self, event: Literal["protocol_error"], handler: None = None
    ) -> HandlerDecorator[ev.ProtocolError]: ...
    @overload
    def on(
        self, event: Literal["protocol_error"], handler: HandlerFunc[ev.ProtocolError, R]
    ) -> HandlerFunc[ev.ProtocolError, R]: ...
    @overload
    def on(
        self, event: Literal["closing"], handler: None = None
    ) -> HandlerDecorator[ev.Closing]: ...
    @overload
    def on(
        self, event: Literal["closing"], handler: HandlerFunc[ev.Closing, R]
    ) -> HandlerFunc[ev.Closing, R]: ...
    @overload
    def on(self, event: Literal["closed"], handler: None = None) -> HandlerDecorator[ev.Closed]: ...
    @overload
    def on(
        self, event: Literal["closed"], handler: HandlerFunc[ev.Closed, R]
    ) -> HandlerFunc[ev.Closed, R]: ...
    @overload
    def on(
        self, event: Literal["disconnected"], handler: None = None
    ) -> HandlerDecorator[ev.Disconnected]: ...
    @overload
    def on(
        self, event: Literal["disconnected"], handler: HandlerFunc[ev.Disconnected, R]
    ) -> HandlerFunc[ev.Disconnected, R]: ...
    @overload
    def on(
        self, event: Literal["back_off"], handler: None = None
    ) -> HandlerDecorator[ev.BackOff]: ...
    @overload
    def on(
        self, event: Literal["back_off"], handler: HandlerFunc[ev.BackOff, R]
    ) -> HandlerFunc[ev.BackOff, R]: ...
    @overload
    def on(
        self, event: Literal["unknown"], handler: None = None
    ) -> HandlerDecorator[ev.UnknownMessage]: ...
    @overload
    def on(
        self, event: Literal["unknown"], handler: HandlerFunc[ev.UnknownMessage, R]
    ) -> HandlerFunc[ev.UnknownMessage, R]: ...
    @overload
    def on(self, event: Literal["*"], handler: None = None) -> HandlerDecorator[ev.Event]: ...
    @overload
    def on(
        self, event: Literal["*"], handler: HandlerFunc[ev.Event, R]
    ) -> HandlerFunc[ev.Event, R]: ...
    @overload
    def on(self, event: Type[E], handler: None = None) -> HandlerDecorator[E]: ...
    @overload
    def on(self, event: Type[E], handler: HandlerFunc[E, R]) -> HandlerFunc[E, R]: ...
    @overload
    def on(self, event: str, handler: None = None) -> HandlerDecorator[ev.Event]: ...
    @overload
    def on(self, event: str, handler: HandlerFunc[ev.Event, R]) -> Callable[..., R]: ...

    def on(self, event: EventKey, handler: Optional[Handler] = None) -> Any:
        """Register ``handler(event)`` for an event name or class.

        ``event`` is a name (``"text"``, ``"ready"``, ... see
        :data:`lomond.events.EVENT_TYPES`), a concrete event class
        (:class:`~lomond.events.Text`), or ``"*"`` / :class:`~lomond.events.Event`
        for every event. Anything else raises ``ValueError`` at once.

        As a decorator, ``@app.on("text")`` registers the function and returns
        it unchanged; ``app.on("text", handler)`` registers and returns
        ``handler``. Handlers run in registration order (``"*"`` handlers
        included), after the class's ``on_event``/``on_<name>`` methods.
        Registering the same handler again for the same event does nothing.
        Handlers are held strongly: a lambda or closure stays registered
        until :meth:`off`.
        """
        key = resolve_key(event)
        if handler is not None:
            self._registry.add(key, handler)
            return handler

        def register(function: Handler) -> Handler:
            self._registry.add(key, function)
            return function

        return register

    def off(self, handler: Handler, event: Optional[EventKey] = None) -> bool:
        """Unregister ``handler`` from ``event`` (a name or class), or from every event.

        Returns whether it was registered. ``ValueError`` for an unknown event.
        """
        key = None if event is None else resolve_key(event)
        return self._registry.remove(handler, key)


__all__ = ["HandlerDecorator", "HandlerFunc", "Registration"]
