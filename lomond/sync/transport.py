"""Moving bytes between a connected socket and the protocol.

The socket is non-blocking once connected; every wait goes through one
selector that also watches a wake-up channel, so ``close()`` or a stop from
another thread interrupts a wait at once instead of after the next poll.

TLS: OpenSSL does not allow concurrent ``SSL_read`` and ``SSL_write`` on one
connection, so for TLS sockets each (non-blocking, hence brief) SSL call is
made under ``_io_lock``; waiting happens outside it.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
import time
from contextlib import nullcontext
from typing import ContextManager, Optional, Tuple, Union

from ..constants import READ_SIZE
from ..errors import TransportFail, describe_os_error
from ..wakeup import Wakeup

Buffer = Union[bytes, bytearray, memoryview]

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def wait_socket(
    sock: socket.socket,
    wakeup: Optional[Wakeup],
    readable: bool,
    writable: bool,
    timeout: Optional[float],
) -> Tuple[bool, bool, bool]:
    """Wait until ``sock`` is ready or ``wakeup`` is woken; ``(readable, writable, woken)``."""
    with selectors.DefaultSelector() as selector:
        selector.register(
            sock,
            (selectors.EVENT_READ if readable else 0) | (selectors.EVENT_WRITE if writable else 0),
        )
        if wakeup is not None:
            selector.register(wakeup.fileno(), selectors.EVENT_READ)
        return _select(selector, sock, wakeup, timeout)


def _select(
    selector: selectors.BaseSelector,
    sock: socket.socket,
    wakeup: Optional[Wakeup],
    timeout: Optional[float],
) -> Tuple[bool, bool, bool]:
    if timeout is not None and timeout < 0:
        timeout = 0
    readable = writable = woken = False
    for key, mask in selector.select(timeout):
        if key.fileobj is sock:
            readable = bool(mask & selectors.EVENT_READ)
            writable = bool(mask & selectors.EVENT_WRITE)
        else:
            woken = True
    if woken and wakeup is not None:
        wakeup.drain()
    return readable, writable, woken


class Transport:
    """A connected (possibly TLS) socket in non-blocking mode."""

    def __init__(self, sock: socket.socket, wakeup: Wakeup, send_timeout: float) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.wakeup = wakeup
        self.send_timeout = send_timeout
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self._io_lock: ContextManager[object] = threading.Lock() if self.is_tls else nullcontext()
        self._read_selector = selectors.DefaultSelector()
        self._read_selector.register(sock, selectors.EVENT_READ)
        self._read_selector.register(wakeup.fileno(), selectors.EVENT_READ)
        self._write_selector: Optional[selectors.BaseSelector] = None
        self.closed = False

    def wait_readable(self, timeout: Optional[float]) -> bool:
        """Wait for data (or a wake-up); return whether the socket may be read."""
        sock = self.sock
        if self.is_tls and isinstance(sock, ssl.SSLSocket) and sock.pending():
            # Decrypted bytes already buffered inside OpenSSL: select() cannot see them.
            return True
        readable, _, _ = _select(self._read_selector, self.sock, self.wakeup, timeout)
        return readable

    def recv(self, size: int = READ_SIZE) -> Optional[bytes]:
        """Read up to ``size`` bytes: ``None`` at end of stream, ``b""`` if nothing yet.

        Raises ``OSError`` (including ``ssl.SSLError``) if the connection broke.
        """
        # recv() into a fresh bytes object: the kernel copies straight into
        # what the protocol keeps, with no intermediate buffer. The size stays
        # under glibc's mmap threshold, which makes larger sizes slow for the
        # many small reads of a chatty feed.
        try:
            with self._io_lock:
                data = self.sock.recv(size)
        except _WOULD_BLOCK:
            return b""
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return None
        return data or None

    def write(self, data: Buffer) -> None:
        """Write all of ``data``, waiting at most ``send_timeout`` seconds for buffer space.

        Raises :class:`TransportFail` if the socket fails or the peer stops
        reading for longer than ``send_timeout``.
        """
        try:
            with self._io_lock:
                sent = self.sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as error:
            raise TransportFail(f"send failed: {describe_os_error(error)}") from None
        if sent == len(data):
            return  # the common case: the socket buffer took it all
        self._write_rest(memoryview(data)[sent:])

    def try_write(self, data: bytes) -> bool:
        """One non-blocking attempt to write ``data``; whether it all went.

        For a farewell frame just before the socket is closed, where waiting
        for buffer space would only delay the close.
        """
        try:
            with self._io_lock:
                return self.sock.send(data) == len(data)
        except (OSError, ValueError):
            return False

    def _write_rest(self, view: memoryview) -> None:
        deadline = time.monotonic() + self.send_timeout
        while view:
            try:
                with self._io_lock:
                    sent = self.sock.send(view)
                view = view[sent:]
                continue
            except ssl.SSLWantReadError:
                wait_read = True
            except _WOULD_BLOCK:
                wait_read = False
            except OSError as error:
                raise TransportFail(f"send failed: {describe_os_error(error)}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportFail(
                    f"send timed out after {self.send_timeout:g} s: the server is not reading"
                )
            self._wait_writable(remaining, wait_read)

    def _wait_writable(self, timeout: float, wait_read: bool) -> None:
        if wait_read:
            wait_socket(self.sock, None, True, False, timeout)
            return
        if self._write_selector is None:
            self._write_selector = selectors.DefaultSelector()
            self._write_selector.register(self.sock, selectors.EVENT_WRITE)
        self._write_selector.select(timeout)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._read_selector.close()
        if self._write_selector is not None:
            self._write_selector.close()
        try:
            self.sock.close()
        except OSError:
            pass


__all__ = ["Transport", "wait_socket"]
