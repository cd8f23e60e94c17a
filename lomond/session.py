"""Lomond 0.3's import path of the session class (``connect(session_class=...)``).

The threaded driver lives in :mod:`lomond.sync.session`; this module keeps
``from lomond.session import WebsocketSession`` working.
"""

from __future__ import annotations

from .sync.session import WebsocketSession

__all__ = ["WebsocketSession"]
