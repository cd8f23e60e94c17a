"""The hub driver: many connections on one thread.

:class:`~lomond.hub.reactor.Reactor` is the loop (one selector, one timer
heap); :class:`~lomond.hub.session.HubSession` drives one connection on it.
:class:`lomond.handlers.Hub` runs :class:`~lomond.handlers.WebSocketApp`
objects on a hub.
"""
