"""A small threaded WebSocket *server* for tests, demos and examples.

.. not-runnable: serves until Ctrl-C

Start a :class:`LocalServer` in your own tests and point lomond (or any
client) at its :attr:`~LocalServer.url`; a handler function plays the
server's part, one thread per connection. With a pytest fixture::

    import pytest
    from lomond.testing import LocalServer

    @pytest.fixture
    def server():
        with LocalServer() as local:       # echoes every message back
            yield local                    # local.url is ws://127.0.0.1:PORT/

    def shout(connection):                 # a custom handler, run in its own thread
        while (message := connection.recv()) is not None:
            connection.send(message.upper() if isinstance(message, str) else message)

    LocalServer(shout, port=8765).serve_forever()   # or serve until Ctrl-C

A handler receives a :class:`ServerConnection`; when it returns (or raises)
the connection is closed with the close handshake. The server speaks
permessage-deflate (RFC 7692) when the client offers it
(``LocalServer(compress=False)`` declines every offer). ``python -m lomond
--echo-server`` runs one from the command line.

It is not a production server: one thread per connection, no TLS,
everything in memory. Every rule of the protocol comes from
:class:`lomond.protocol.ServerProtocol` (the upgrade request's checks,
masking, pings, the close handshake, UTF-8, the size limit of
:data:`~lomond.constants.DEFAULT_MAX_SIZE`); this module only moves bytes
between it and the sockets.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple, Union

from . import events
from .constants import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SEND_TIMEOUT
from .errors import WebSocketUnavailable
from .frame import Opcode
from .handshake import bracket_host
from .protocol import ServerProtocol, State, UpgradeRequest

log = logging.getLogger("lomond.testing")

#: A message as handlers see it: ``str`` for text, ``bytes`` for binary.
Message = Union[str, bytes]
#: A connection handler: runs in the connection's own thread.
Handler = Callable[["ServerConnection"], None]

#: Seconds :meth:`ServerConnection.close` waits for the client's Close (a
#: test server need not wait as long as a client's ``close_timeout``).
CLOSE_TIMEOUT = 5.0


def echo(connection: ServerConnection) -> None:
    """The default handler: send every message back (text as text, binary as binary)."""
    while True:
        message = connection.recv()
        if message is None:
            return
        connection.send(message)


class ServerConnection:
    """One client connection, seen from the server.

    ``path`` is the request target, ``headers`` the request headers with
    lower-case names (repeated headers joined with ``", "``). ``close_code``
    and ``close_reason`` are what the client sent in its Close frame.
    """

    def __init__(
        self, sock: socket.socket, address: Tuple[str, int], compress: bool = True
    ) -> None:
        self.address = address
        self.path = ""
        self.headers: Dict[str, str] = {}
        self.close_code: Optional[int] = None
        self.close_reason = ""
        #: Extensions agreed in the handshake: ``{"permessage-deflate"}`` or empty.
        self.extensions: frozenset[str] = frozenset()
        #: True once the handshake succeeded (the server answered 101).
        self.open = False
        self._protocol = ServerProtocol(compress=compress)
        self._sock = sock
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        # Serializes every use of the protocol and every write: the
        # handler's thread receives, any thread may send (broadcast, stop).
        self._lock = threading.Lock()
        # Events the handler has not reached yet: messages for recv() to
        # return, and the events whose answer waits for those before them.
        self._pending: Deque[events.Event] = deque()
        self._finished = False  # the socket is closed (or being closed)
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return f"<ServerConnection {self.address[0]}:{self.address[1]} {self.path!r}>"

    @property
    def closed(self) -> bool:
        """Whether a Close was sent or the connection is gone: no more sends."""
        return self._protocol.close_sent or self._finished

    # -- reading ------------------------------------------------------------------
    def _read(self, deadline: Optional[float]) -> bytes:
        """The next bytes from the client (``b""`` at its end); ``TimeoutError`` at the deadline."""
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._selector.select(remaining):
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("no data from the client in time")
        return self._sock.recv(self._protocol.read_size)

    def _receive(self, data: bytes) -> None:
        """Hand the protocol what the socket delivered (``b""``: end of stream), then act."""
        with self._lock:
            if self._finished:
                return
            protocol = self._protocol
            self._handle(protocol.receive_data(data) if data else protocol.receive_eof())
            self._settle()

    def _handle(self, got: List[events.Event]) -> None:
        """Queue the protocol's events for the handler, in order (under the lock)."""
        for event in got:
            if isinstance(event, (events.Text, events.Binary)):
                # Once our Close is out the handler has asked to end: what
                # still arrives is not returned.
                if not self._protocol.close_sent:
                    self._pending.append(event)
                continue
            if isinstance(event, (events.Closing, events.Closed)):
                self.close_code, self.close_reason = event.code, event.reason
                log.debug("%r: client closed with %s %r", self, event.code, event.reason)
            elif isinstance(event, events.ProtocolError):
                log.info("%r: %s; closing with %d", self, event.error, event.code)
            elif isinstance(event, events.ConnectFail):
                log.info("%r: %s", self, event.reason)
            if isinstance(event, (events.Ping, events.Closing, events.ProtocolError)):
                # The protocol has queued its answer (a Pong, the echo of
                # the Close, the failing Close): it waits its turn.
                self._pending.append(event)

    def _settle(self) -> None:
        """Send what the protocol owes for the events the handler has reached (under the lock).

        The answers go out in the order of what they answer: a Pong, or
        the Close echoing the client's (or failing the connection), waits
        until the handler has taken the messages that came before it, so
        that it can still answer them, as RFC 6455 section 5.5.1 allows.
        """
        pending = self._pending
        reached_ping = False
        while pending and not isinstance(pending[0], (events.Text, events.Binary)):
            reached_ping |= isinstance(pending.popleft(), events.Ping)
        if not pending:
            self._flush(include_close=True)
        elif reached_ping:
            self._flush(include_close=False)

    def _flush(self, include_close: bool) -> None:
        """Send what the protocol has queued; close when it says so (under the lock)."""
        protocol = self._protocol
        data = protocol.data_to_send(include_close)
        if data:
            try:
                self._sock.sendall(data)
            except OSError as error:
                log.debug("%r: %s", self, error)
                self._shutdown()
                return
        if protocol.should_close and not protocol.replies_pending:
            # The close handshake completed (the server closes the TCP
            # connection first, RFC 6455 section 7.1.1), the client broke
            # the protocol or went away, or the upgrade was refused.
            self._shutdown()

    def recv(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message (``str`` or ``bytes``), or ``None`` once the connection is over.

        Answers pings and the client's Close along the way. Raises
        ``TimeoutError`` if no message arrives within ``timeout`` seconds
        (the connection stays usable). Call it from the handler's thread only.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._finished:
                    # The handler is done with the last message: what
                    # follows it may be answered now.
                    self._settle()
            while self._pending:
                # A message, unless the connection is gone and this is an
                # answer that can no longer be sent.
                event = self._pending.popleft()
                if isinstance(event, events.Text):
                    return event.text
                if isinstance(event, events.Binary):
                    return event.data
            if self._finished:
                return None
            try:
                data = self._read(deadline)
            except TimeoutError:
                raise
            except OSError as error:
                log.debug("%r: %s", self, error)
                self._shutdown()
                continue
            self._receive(data)

    # -- writing ------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Send a message (``str`` as text, ``bytes`` as binary); safe from any thread.

        Raises ``ConnectionError`` once the connection is closing or closed.
        """
        if isinstance(message, str):
            opcode, payload = Opcode.TEXT, message.encode("utf-8")
        elif isinstance(message, (bytes, bytearray, memoryview)):
            opcode, payload = Opcode.BINARY, bytes(message)
        else:
            raise TypeError("send() takes str or bytes")
        with self._lock:
            if self.closed:
                raise ConnectionError("the connection is closing or closed")
            try:
                # Under the lock: compressed messages must go out in the
                # order they went through the shared compressor.
                data = self._protocol.send_data(opcode, payload)
            except WebSocketUnavailable as error:
                raise ConnectionError(str(error)) from None
            self._sock.sendall(data)

    def _send_close(self, code: Optional[int], reason: str) -> bool:
        """Send a Close frame once; False if one was already sent or the socket is gone."""
        with self._lock:
            if self._finished:
                return False
            try:
                frame = self._protocol.send_close(code, reason)
            except WebSocketUnavailable:  # a Close went out already, or not open yet
                return False
            try:
                self._sock.sendall(frame)
            except OSError:
                self._shutdown()
                return False
            if self._protocol.should_close:  # it answered the client's Close
                self._shutdown()
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake from the server side.

        From the handler's thread this waits (up to 5 s) for the client's
        Close and closes the socket; from another thread it only sends the
        Close frame, and the handler's next ``recv()`` returns ``None``.
        """
        self._send_close(code, reason)
        if threading.current_thread() is not self._thread:
            return
        with self._lock:
            # The handler asked to end: messages it did not take are dropped,
            # and what the protocol owes for them goes now.
            self._pending.clear()
            if not self._finished:
                self._flush(include_close=True)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while not self._finished:
            try:
                data = self._read(deadline)
            except OSError as error:  # TimeoutError is an OSError
                log.debug("%r: close handshake incomplete: %s", self, error)
                break
            self._receive(data)
        self._shutdown()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (to simulate a failure)."""
        log.debug("%r: aborted", self)
        self._shutdown()

    def _shutdown(self) -> None:
        """Close the TCP connection (wakes a thread blocked in ``recv``, or in a send).

        Without the lock: a thread blocked in ``sendall`` holds it, and the
        shutdown is what makes that send fail.
        """
        self._finished = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- the opening handshake ---------------------------------------------------------
    def _handshake(self) -> bool:
        """Read the upgrade request and answer it; whether the connection is open."""
        deadline = time.monotonic() + DEFAULT_HANDSHAKE_TIMEOUT
        protocol = self._protocol
        while protocol.state is State.CONNECTING and not self._finished:
            data = self._read(deadline)
            with self._lock:
                got = protocol.receive_data(data) if data else protocol.receive_eof()
                if protocol.request is not None:
                    self.path = protocol.request.target
                    self.headers = dict(protocol.request.headers)
                self._handle(got)
                if any(isinstance(event, UpgradeRequest) for event in got):
                    # Frames the client sent right behind its request.
                    got = protocol.accept()
                    self.open = True
                    if protocol.deflate is not None:
                        self.extensions = frozenset([protocol.deflate.name])
                    self._flush(include_close=False)  # the 101 answer, whatever follows
                    self._handle(got)
                self._settle()
        return self.open

    def _serve(self, handler: Handler) -> None:
        """The connection's thread: handshake, handler, close handshake."""
        try:
            if self._handshake():
                log.debug("%r: open", self)
                try:
                    handler(self)
                except OSError as error:  # sending on a connection that went away
                    log.debug("%r: handler stopped: %s", self, error)
                except Exception:
                    log.exception("%r: the handler raised", self)
                    self.close(1011, "internal server error")
                self.close()
        except OSError as error:
            log.debug("%r: %s", self, error)
        finally:
            self._shutdown()
            self._selector.close()
            self._sock.close()


class LocalServer:
    """A threaded WebSocket server on ``host:port`` (port 0 picks a free one).

    ``handler(connection)`` runs in a thread per connection; the default
    echoes every message back. ``compress`` accepts a client's
    permessage-deflate offer (RFC 7692); ``False`` declines them all.
    """

    def __init__(
        self,
        handler: Optional[Handler] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        compress: bool = True,
    ) -> None:
        self.handler: Handler = handler or echo
        self.compress = compress
        self.host = host
        self.port = port
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._wake: Optional[Tuple[socket.socket, socket.socket]] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: Dict[ServerConnection, threading.Thread] = {}

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/`` (the real port once started)."""
        return f"ws://{bracket_host(self.host)}:{self.port}/"

    @property
    def connections(self) -> List[ServerConnection]:
        """The connections currently open."""
        with self._lock:
            return list(self._connections)

    def start(self) -> LocalServer:
        """Bind, listen and serve in a daemon thread; returns ``self``."""
        if self._listener is not None:
            raise RuntimeError("the server is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.create_server((self.host, self.port), family=family)
        self.port = self._listener.getsockname()[1]
        self._wake = socket.socketpair()  # stop() writes to it to wake the accept loop
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(self._listener, self._wake[0]),
            name=f"LocalServer:{self.port}", daemon=True,
        )
        self._accept_thread.start()
        log.info("listening on %s", self.url)
        return self

    def _accept_loop(self, listener: socket.socket, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not any(key.fileobj is listener for key, _ in selector.select()):
                    continue
                try:
                    sock, address = listener.accept()
                except OSError:
                    continue
                # A client that stops reading cannot block a send forever.
                sock.settimeout(DEFAULT_SEND_TIMEOUT)
                # Small frames (pongs) must not wait behind Nagle's algorithm.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                connection = ServerConnection(sock, address[:2], self.compress)
                thread = threading.Thread(
                    target=self._run, args=(connection,), name=f"LocalServer:{address[1]}",
                    daemon=True,
                )
                connection._thread = thread
                with self._lock:
                    self._connections[connection] = thread
                thread.start()

    def _run(self, connection: ServerConnection) -> None:
        try:
            connection._serve(self.handler)
        finally:
            with self._lock:
                self._connections.pop(connection, None)

    def broadcast(self, message: Message) -> None:
        """Send ``message`` to every open connection (closed ones are skipped)."""
        for connection in self.connections:
            if connection.open and not connection.closed:
                try:
                    connection.send(message)
                except OSError:
                    pass

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener and every connection (1001, going away), and join the threads."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        assert self._wake is not None and self._accept_thread is not None
        self._wake[1].send(b"x")
        self._accept_thread.join()
        listener.close()
        for sock in self._wake:
            sock.close()
        threads = []
        with self._lock:
            live = list(self._connections.items())
        for connection, thread in live:
            if connection.open:  # start the close handshake
                connection._send_close(1001, "server shutting down")
            else:  # still in the opening handshake: just drop it
                connection._shutdown()
            threads.append((connection, thread))
        deadline = time.monotonic() + timeout
        for connection, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():  # the client did not answer: drop it
                connection._shutdown()
                thread.join(1.0)
        log.info("stopped %s", self.url)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Start (if needed) and serve until ``KeyboardInterrupt``, then stop."""
        if self._listener is None:
            self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


__all__ = ["LocalServer", "ServerConnection", "echo"]
