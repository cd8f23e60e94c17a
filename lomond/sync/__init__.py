"""The threaded driver: one connection in the caller's thread.

:class:`~lomond.sync.session.WebsocketSession` runs the loop that
:meth:`lomond.WebSocket.connect` iterates; :mod:`~lomond.sync.connect` opens
the socket (DNS, TCP, a proxy tunnel, TLS) and :mod:`~lomond.sync.transport`
moves its bytes.
"""
