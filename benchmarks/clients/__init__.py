"""Client adapters: one small module per client, all with the same interface.

Each module defines:

- ``NAME``: the column name in the results table.
- ``probe() -> dict``: ``available`` (bool), ``reason`` (why not), ``version``
  and ``settings`` (notable options in effect, for the report).
- ``unsupported(scenario) -> str | None``: why the client cannot run a
  scenario (the cell shows "n/a"), or ``None``.
- ``connect(url, scenario) -> connection``: the opening handshake, done and
  checked. The connection has:

  - ``recv(n, add)``: receive ``n`` data messages, calling ``add(payload)``
    for each (``str`` for text, a bytes-like object for binary). Must not
    drop, merge or reorder messages; ``add`` does the checking.
  - ``send(seq)``: send every payload in ``seq`` in order (``bytes`` as
    binary messages, ``str`` as text).
  - ``echo(seq, add)``: for each payload, send it and wait for the reply,
    calling ``add(reply)``.
  - ``close()``: the closing handshake (not timed).
  - ``extensions``: the negotiated extension header, or ``None``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = {
    "lomond": "clients.lomond_client",
    "websocket-client": "clients.websocket_client",
    "websockets": "clients.websockets_sync",
    "plain": "clients.plain_socket",
    "lomond-asyncio": "clients.lomond_asyncio",
    "websockets-asyncio": "clients.websockets_asyncio",
    "plain-asyncio": "clients.plain_asyncio",
}

#: Peers lomond is compared with (the plain socket is the ceiling, not a peer).
PEERS = ("websocket-client", "websockets")


def load(name: str) -> ModuleType:
    return importlib.import_module(MODULES[name])
