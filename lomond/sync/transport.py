"""A connected socket, non-blocking, shared by a connection's loop and its senders.

Both socket drivers use it: the threaded :mod:`lomond.sync.session` and the
:mod:`lomond.hub`. Reads and writes never block; waiting happens in the
driver's selector (the loop) or in :meth:`Transport.wait_writable` (a sender
waiting for a server that reads slowly).

TLS: OpenSSL does not allow concurrent ``SSL_read`` and ``SSL_write`` on one
connection, so for TLS sockets each (non-blocking, hence brief) SSL call is
made under ``_io_lock``; waiting happens outside it.

Closing while another thread waits: :meth:`Transport.close` first shuts the
socket down, which makes every ``poll()`` on it return at once, and closes
the descriptor only once no waiter is inside ``poll()`` any more, so a
descriptor number is never reused under a waiting thread.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from contextlib import nullcontext
from typing import ContextManager, Optional

from ..constants import READ_SIZE
from ..lifecycle import Buffer, Write

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_POLL_WRITE = select.POLLOUT
_POLL_READ = select.POLLIN


#: The I/O "lock" of a plain socket: there is nothing to serialize.
_NO_LOCK: ContextManager[object] = nullcontext()
#: Guards every transport's count of waiting senders against its close: one
#: lock for all (waits and closes are rare), not 56 bytes on each of a hub's
#: thousands of connections.
_WAITERS_LOCK = threading.Lock()


class Transport:
    """A connected (possibly TLS) socket in non-blocking mode."""

    __slots__ = (
        "_close_later", "_io_lock", "_waiters", "_write_needs_read", "closed",
        "is_tls", "send", "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self._io_lock: ContextManager[object] = threading.Lock() if self.is_tls else _NO_LOCK
        self._waiters = 0
        self._close_later = False
        #: Set by :meth:`close`: no more reads or writes.
        self.closed = False
        # TLS only: the last write needs the socket readable first (a TLS
        # record such as a key update must be read before writing goes on).
        self._write_needs_read = False
        #: The non-blocking write (a :data:`lomond.lifecycle.Write`): a plain
        #: socket's own ``send`` (``BlockingIOError`` when it would block, no
        #: lock: the hot path), or for TLS one that takes the I/O lock and
        #: maps OpenSSL's "want read/write" to 0 bytes.
        self.send: Write = self._send_tls if self.is_tls else sock.send

    def fileno(self) -> int:
        """The socket's descriptor (``-1`` once closed)."""
        return self.sock.fileno()

    def pending(self) -> bool:
        """Whether decrypted bytes wait inside OpenSSL, where ``select()`` cannot see them."""
        sock = self.sock
        return self.is_tls and isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def recv(self, size: int = READ_SIZE) -> Optional[bytes]:
        """Read up to ``size`` bytes: ``None`` at end of stream, ``b""`` if nothing yet.

        Raises ``OSError`` (including ``ssl.SSLError``) if the connection broke.
        """
        # recv() into a fresh bytes object: the kernel copies straight into
        # what the protocol keeps, with no intermediate buffer.
        if not self.is_tls:
            # No lock to take: the hot path of a plain connection.
            try:
                return self.sock.recv(size) or None
            except (BlockingIOError, InterruptedError):
                return b""
        try:
            with self._io_lock:
                data = self.sock.recv(size)
        except _WOULD_BLOCK:
            return b""
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return None
        return data or None

    def _send_tls(self, data: Buffer) -> int:
        try:
            with self._io_lock:
                return self.sock.send(data)
        except ssl.SSLWantReadError:
            self._write_needs_read = True
            return 0
        except _WOULD_BLOCK:
            return 0
        except ValueError as error:  # a closed SSL socket says so with a ValueError
            raise OSError(str(error)) from None

    def readable_now(self) -> bool:
        """Whether bytes wait unread (without reading them; any thread)."""
        if self.closed:
            return False
        try:
            poller = select.poll()
            poller.register(self.sock, _POLL_READ)
            return bool(poller.poll(0)) or self.pending()
        except (OSError, ValueError):
            return False

    def wait_writable(self, timeout: float) -> None:
        """Wait until the socket may take more, it was closed, or ``timeout`` passed.

        Safe in any number of threads at once; :meth:`close` ends every wait.
        """
        with _WAITERS_LOCK:
            if self.closed:
                return
            self._waiters += 1
            needs_read, self._write_needs_read = self._write_needs_read, False
        try:
            poller = select.poll()
            poller.register(self.sock, _POLL_READ if needs_read else _POLL_WRITE)
            poller.poll(max(0.0, timeout) * 1000.0)
        except (OSError, ValueError):
            pass  # closed meanwhile: the caller looks at the connection's state
        finally:
            with _WAITERS_LOCK:
                self._waiters -= 1
                close_now = self._close_later and not self._waiters
            if close_now:
                self._close_socket()

    def close(self) -> None:
        """Close the socket (idempotent); a thread waiting in :meth:`wait_writable` returns."""
        with _WAITERS_LOCK:
            if self.closed:
                return
            self.closed = True
            if self._waiters:
                # Wake the waiters (a shut-down socket is ready for everything)
                # and leave the descriptor to the last of them.
                self._close_later = True
                try:
                    socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
                except OSError:
                    pass
                return
        self._close_socket()

    def _close_socket(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


__all__ = ["Transport"]
