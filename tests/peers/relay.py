"""Copying bytes between two sockets, for the test relays and scripted proxies."""

from __future__ import annotations

import socket
import threading
from typing import Optional


def pump(
    src: socket.socket,
    dst: socket.socket,
    record: Optional[bytearray] = None,
    stop: Optional[threading.Event] = None,
) -> None:
    """Copy from ``src`` to ``dst`` until either side closes, then shut both down.

    ``record`` collects what passed. Without ``stop`` the copy ends after 10 s
    of silence; with it, silence is waited out until ``stop`` is set.
    """
    src.settimeout(0.2 if stop is not None else 10)
    try:
        while stop is None or not stop.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                if stop is None:
                    break
                continue
            if not data:
                break
            if record is not None:
                record += data
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
