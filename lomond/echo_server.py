"""A tiny threaded WebSocket *server* for demos, examples and tests.

This is not a production server: one thread per connection, no TLS,
everything in memory. It speaks permessage-deflate (RFC 7692) when the client
offers it (``LocalServer(compress=False)`` declines every offer). It exists
so that ``examples/demo.py`` and ``python -m lomond --echo-server`` work on a
machine with nothing but the standard library. Usage::

    from lomond.echo_server import LocalServer

    with LocalServer() as server:          # echoes every message back
        print(server.url)                  # ws://127.0.0.1:PORT/

    def shout(connection):                 # a custom handler, run in its own thread
        while (message := connection.recv()) is not None:
            connection.send(message.upper() if isinstance(message, str) else message)

    LocalServer(shout, port=8765).serve_forever()

A handler receives a :class:`ServerConnection`; when it returns (or raises)
the connection is closed with the close handshake.

It is built on lomond's own codec: :func:`lomond.reader.read_frames` on the
server side (masked client frames), :func:`lomond.frame.build_frame` with
``mask=False``, ``lomond.handshake.accept_for`` and
:func:`lomond.compression.negotiate_server`.
"""

from __future__ import annotations

import base64
import logging
import selectors
import socket
import struct
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple, Union

from .compression import Deflate, negotiate_server
from .errors import HandshakeError, ProtocolViolation
from .frame import Frame, Opcode, build_frame
from .handshake import accept_for, bracket_host
from .reader import FrameReader, read_frames
from .response import join_headers, parse_header_lines
from .status import is_valid_close_code

log = logging.getLogger("lomond.echo_server")

Message = Union[str, bytes]
Handler = Callable[["ServerConnection"], None]

MAX_MESSAGE_SIZE = 16 * 1024 * 1024
MAX_REQUEST_SIZE = 16 * 1024
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0


class _Fail(Exception):
    """The client broke the protocol: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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
        self._compress = compress
        self._deflate: Optional[Deflate] = None
        self._sock = sock
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        # Bytes of the opening handshake; after it, data goes to the reader.
        self._buffer = bytearray()
        self._reader: Optional[FrameReader] = None
        self._frames: List[Frame] = []
        self._frame_error: Optional[ProtocolViolation] = None
        self._fragments: List[bytes] = []
        self._fragments_size = 0
        self._fragment_opcode = 0
        #: True once the handshake succeeded (the server answered 101).
        self.open = False
        self._send_lock = threading.Lock()
        self._close_sent = False
        self._finished = False  # the socket is closed (or being closed)
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return f"<ServerConnection {self.address[0]}:{self.address[1]} {self.path!r}>"

    @property
    def closed(self) -> bool:
        """Whether a Close was sent or the connection is gone: no more sends."""
        return self._close_sent or self._finished

    # -- reading ------------------------------------------------------------------
    def _read(self, deadline: Optional[float]) -> bytes:
        """The next bytes from the client; ``TimeoutError`` at the deadline."""
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._selector.select(remaining):
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("no data from the client in time")
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError("the client dropped the connection")
        return data

    def _next_frame(self, deadline: Optional[float]) -> Frame:
        """The next client frame, unmasked and inflated."""
        while not self._frames:
            if self._frame_error is not None:
                error = self._frame_error
                raise _Fail(error.code, str(error))
            assert self._reader is not None
            self._frames, self._frame_error = self._reader.send(self._read(deadline))
        frame = self._frames.pop(0)
        if self._deflate is not None:
            try:
                frame = self._deflate.decode(frame)
            except ProtocolViolation as error:
                raise _Fail(error.code, str(error)) from None
        return frame

    def recv(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message (``str`` or ``bytes``), or ``None`` once the connection is over.

        Answers pings and the client's Close along the way. Raises
        ``TimeoutError`` if no message arrives within ``timeout`` seconds
        (the connection stays usable). Call it from the handler's thread only.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished:
            try:
                message = self._receive_one(deadline)
            except TimeoutError:
                raise
            except _Fail as fail:
                log.info("%r: %s; closing with %d", self, fail.reason, fail.code)
                self._send_close(fail.code, fail.reason)
                self._shutdown()
            except OSError as error:
                log.debug("%r: %s", self, error)
                self._shutdown()
            else:
                if message is not None:
                    return message
        return None

    def _receive_one(self, deadline: Optional[float]) -> Optional[Message]:
        # The reader has already refused reserved opcodes and bits, unmasked
        # frames and oversized or fragmented control frames.
        frame = self._next_frame(deadline)
        opcode, fin, payload = frame.opcode, frame.fin, bytes(frame.payload)
        if opcode >= 0x8:
            if opcode == Opcode.PING:  # answer with a Pong carrying the same data
                if not self._close_sent:
                    self._write(Opcode.PONG, payload)
            elif opcode == Opcode.CLOSE:
                self._on_close(payload)
            return None
        if opcode == Opcode.CONTINUATION:
            if not self._fragment_opcode:
                raise _Fail(1002, "continuation frame without a message to continue")
        else:
            if self._fragment_opcode:
                raise _Fail(1002, "new message before the previous one ended")
            self._fragment_opcode = opcode
        self._fragments.append(payload)
        self._fragments_size += len(payload)
        if self._fragments_size > MAX_MESSAGE_SIZE:
            raise _Fail(1009, "message too large")
        if not fin:
            return None
        data, kind = b"".join(self._fragments), self._fragment_opcode
        self._fragments, self._fragments_size, self._fragment_opcode = [], 0, 0
        if self._close_sent:
            return None  # closing: messages still arriving are dropped
        if kind == 0x2:
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail(1007, "invalid UTF-8 in a text message") from None

    def _on_close(self, payload: bytes) -> None:
        code: Optional[int] = None
        if len(payload) == 1:
            raise _Fail(1002, "a Close payload cannot be 1 byte long")
        if payload:
            (code,) = struct.unpack("!H", payload[:2])
            if not is_valid_close_code(code):
                raise _Fail(1002, f"invalid close code {code}")
            try:
                self.close_reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise _Fail(1007, "invalid UTF-8 in the close reason") from None
        self.close_code = code
        log.debug("%r: client closed with %s %r", self, code, self.close_reason)
        # Echo the client's Close (RFC 6455 section 5.5.1) unless this answers ours.
        self._send_close(code, "")
        # The server closes the TCP connection first (RFC 6455 section 7.1.1).
        self._shutdown()

    # -- writing ------------------------------------------------------------------
    def _write(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:
            if self._finished:
                raise ConnectionError("the connection is closed")
            rsv1 = False
            if self._deflate is not None and opcode < 0x8:
                # Under the lock: compressed messages must go out in the
                # order they went through the shared compressor.
                frame = self._deflate.encode(Frame(opcode, payload))
                payload, rsv1 = bytes(frame.payload), frame.rsv1
            # Server frames are never masked (RFC 6455 section 5.1).
            self._sock.sendall(build_frame(opcode, payload, rsv1=rsv1, mask=False))

    def send(self, message: Message) -> None:
        """Send a message (``str`` as text, ``bytes`` as binary); safe from any thread.

        Raises ``ConnectionError`` once the connection is closing or closed.
        """
        if isinstance(message, str):
            opcode, payload = 0x1, message.encode("utf-8")
        elif isinstance(message, (bytes, bytearray, memoryview)):
            opcode, payload = 0x2, bytes(message)
        else:
            raise TypeError("send() takes str or bytes")
        if self.closed:
            raise ConnectionError("the connection is closing or closed")
        self._write(opcode, payload)

    def _send_close(self, code: Optional[int], reason: str) -> bool:
        """Send a Close frame once; False if one was already sent or the socket is gone."""
        with self._send_lock:
            if self._close_sent or self._finished:
                return False
            self._close_sent = True
        payload = b""
        if code is not None:
            encoded = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
            payload = struct.pack("!H", code) + encoded
        try:
            self._write(0x8, payload)
        except OSError:
            return False
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
        deadline = time.monotonic() + CLOSE_TIMEOUT
        try:
            while not self._finished:
                self._receive_one(deadline)
        except (OSError, _Fail) as error:  # TimeoutError is an OSError
            log.debug("%r: close handshake incomplete: %s", self, error)
        self._shutdown()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (to simulate a failure)."""
        log.debug("%r: aborted", self)
        self._shutdown()

    def _shutdown(self) -> None:
        """Close the TCP connection (wakes a thread blocked in ``recv``)."""
        with self._send_lock:
            self._finished = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- the opening handshake ---------------------------------------------------------
    def _handshake(self) -> bool:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_REQUEST_SIZE:
                return self._refuse(431, "request header too large")
            if self._buffer[:1] and not self._buffer[:1].isalpha():
                # Not HTTP at all (a TLS ClientHello starts with 0x16): answer
                # at once, so a wss:// client gets a plain-text reply it can
                # recognise instead of waiting for its timeout.
                return self._refuse(400, "this is a plain ws:// server, not an HTTP request")
            self._buffer += self._read(deadline)
        head, _, rest = bytes(self._buffer).partition(b"\r\n\r\n")
        self._buffer = bytearray()
        request_line, *lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        try:
            fields = parse_header_lines(lines)
        except HandshakeError:
            return self._refuse(400, "malformed header line")
        self.headers = join_headers(fields)
        if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
            return self._refuse(400, "a WebSocket upgrade must be a GET over HTTP/1.1")
        self.path = parts[1]

        def has_token(header: str, token: str) -> bool:
            values = self.headers.get(header, "").split(",")
            return token in (value.strip().lower() for value in values)

        if not has_token("upgrade", "websocket") or not has_token("connection", "upgrade"):
            return self._refuse(400, "this is a WebSocket server: expected Upgrade: websocket")
        if self.headers.get("sec-websocket-version") != "13":
            return self._refuse(426, "only WebSocket version 13 is supported",
                                "Sec-WebSocket-Version: 13\r\n")
        key = self.headers.get("sec-websocket-key", "")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:  # binascii.Error is a ValueError
            valid_key = False
        if not valid_key:
            return self._refuse(400, "missing or invalid Sec-WebSocket-Key")
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_for(key.encode('ascii'))}\r\n"
        )
        offers = [value for name, value in fields if name.lower() == "sec-websocket-extensions"]
        if self._compress and offers:
            self._deflate, answer = negotiate_server(offers, MAX_MESSAGE_SIZE)
            if answer is not None:
                response += f"Sec-WebSocket-Extensions: {answer}\r\n"
                self.extensions = frozenset([Deflate.name])
        self._sock.sendall((response + "\r\n").encode("latin-1"))
        self._reader = read_frames(
            MAX_MESSAGE_SIZE, allow_rsv1=self._deflate is not None, expect_masked=True
        )
        # Frames the client sent right behind its request.
        self._frames, self._frame_error = self._reader.send(rest)
        self.open = True
        return True

    def _refuse(self, status: int, message: str, extra: str = "") -> bool:
        log.info("%r: refusing the request: %d %s", self, status, message)
        body = (message + "\n").encode("utf-8")
        phrases = {400: "Bad Request", 426: "Upgrade Required",
                   431: "Request Header Fields Too Large"}
        response = (
            f"HTTP/1.1 {status} {phrases[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        )
        self._sock.sendall(response.encode("latin-1") + body)
        return False

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
                sock.settimeout(SEND_TIMEOUT)
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
