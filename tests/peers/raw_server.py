"""A scripted raw-TCP peer for fault injection.

:class:`ScriptedServer` listens on a loopback port and runs a test-supplied
``script(conn)`` in its own thread for every accepted connection. The
:class:`RawConnection` it gets speaks bytes, with helpers for the parts of
RFC 6455 a script needs: read the upgrade request, answer it (correctly or
not), write server frames (including illegal ones), read and unmask client
frames (checking that the client masked them).

Legal framing is lomond's own codec (:func:`lomond.reader.read_frames` on the
server side, :func:`lomond.frame.build_frame` unmasked, the accept key from
:func:`lomond.handshake.accept_for`), so this peer holds no second copy of
RFC 6455. Only what the codec must never produce is written here: headers
with RSV2/RSV3, a length field that lies or uses a non-minimal form, a fixed
masking key (:func:`build_frame`), and raw bytes (:meth:`RawConnection.send_raw`).

Whatever a script raises is kept in :attr:`ScriptedServer.errors` and
re-raised by :meth:`ScriptedServer.check` (the ``scripted_server`` fixture
does that at teardown), so an assertion inside a script fails the test.

Besides running scripts the server has two modes for timeout tests:

* ``mode="stall"``: accept TCP connections and never read or write;
* ``mode="no-accept"``: never accept, with the listen backlog already full,
  so a client's TCP connect itself hangs (and times out).
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

from lomond import accel
from lomond.errors import FrameBuildError
from lomond.errors import ProtocolViolation as CodecViolation
from lomond.frame import build_frame as codec_build_frame
from lomond.handshake import accept_for, bracket_host
from lomond.protocol import MAX_CLOSE_REASON, decode_close, encode_close
from lomond.reader import FrameReader, read_frames
from lomond.response import parse_header_lines

DEFAULT_TIMEOUT = 5.0

# Opcodes (RFC 6455 §5.2), as plain ints so reserved values are expressible.
CONTINUATION, TEXT, BINARY = 0x0, 0x1, 0x2
CLOSE, PING, PONG = 0x8, 0x9, 0xA


class ProtocolViolation(AssertionError):
    """The client broke RFC 6455 (e.g. sent an unmasked frame)."""


class PeerClosed(EOFError):
    """The client closed the TCP connection while the script expected data."""


def accept_key(key: Union[str, bytes]) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2), via lomond's accept_for."""
    raw = key.encode("ascii") if isinstance(key, str) else key
    return accept_for(raw.strip())


def build_frame(
    opcode: int,
    payload: Union[bytes, str] = b"",
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: Union[bool, bytes] = False,
    length_override: Optional[int] = None,
    length_form: Optional[int] = None,
) -> bytes:
    """Encode one frame, legal or not.

    ``opcode`` is any 4-bit value (reserved ones included). ``mask`` is False,
    True (random key) or a 4-byte key. ``length_override`` puts that number in
    the length field whatever the payload is (e.g. ``2**63`` with the top bit
    set, or more than is sent). ``length_form`` forces the encoding: 7, 16 or
    64 bits (RFC 6455 wants the shortest; a non-minimal one is a test case).
    """
    data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if length_override is None and length_form is None and isinstance(mask, bool):
        # A well-formed header: lomond's writer; RSV2/RSV3 are set on top.
        frame = codec_build_frame(opcode & 0x0F, data, fin=fin, rsv1=rsv1, mask=mask)
        if rsv2 or rsv3:
            frame = bytes((frame[0] | (0x20 if rsv2 else 0) | (0x10 if rsv3 else 0),)) + frame[1:]
        return frame
    # A header lomond would never write: by hand.
    length = len(data) if length_override is None else length_override
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0)
    first |= (0x10 if rsv3 else 0) | (opcode & 0x0F)
    mask_bit = 0x80 if mask is not False else 0
    form = length_form
    if form is None:
        form = 7 if length < 126 else 16 if length < 1 << 16 else 64
    if form == 7:
        if length > 125:
            raise ValueError("length does not fit the 7-bit form")
        header = struct.pack("!BB", first, mask_bit | length)
    elif form == 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length & 0xFFFF)
    elif form == 64:
        # Masked to 64 bits so 2**63 and up (illegal: top bit must be 0) fit.
        header = struct.pack("!BBQ", first, mask_bit | 127, length & 0xFFFFFFFFFFFFFFFF)
    else:
        raise ValueError("length_form must be 7, 16 or 64")
    if mask is not False:
        key = os.urandom(4) if mask is True else bytes(mask)
        if len(key) != 4:
            raise ValueError("mask key must be 4 bytes")
        return accel.masked_frame(header, key, data)
    return header + data


def close_payload(code: Optional[int] = 1000, reason: Union[str, bytes] = "") -> bytes:
    """Payload of a close frame; ``code=None`` gives the empty payload.

    A legal payload is lomond's own encoding (:func:`lomond.protocol.encode_close`).
    An illegal one (a code that may not be sent, a reason that is not UTF-8
    or too long for a control frame) is what hostile-server tests send, and
    the encoder refuses or trims it, so it is packed by hand.
    """
    if code is None:
        return b""
    raw = reason.encode("utf-8") if isinstance(reason, str) else reason
    if len(raw) <= MAX_CLOSE_REASON:
        try:
            return encode_close(code, raw)
        except FrameBuildError:
            pass
    return code.to_bytes(2, "big") + raw


class Headers:
    """Ordered, case-insensitive HTTP header list."""

    def __init__(self, items: Iterable[Tuple[str, str]] = ()) -> None:
        self.items_list: List[Tuple[str, str]] = list(items)

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """First value of ``name``, or ``default``."""
        lowered = name.lower()
        for key, value in self.items_list:
            if key.lower() == lowered:
                return value
        return default

    def get_all(self, name: str) -> List[str]:
        lowered = name.lower()
        return [value for key, value in self.items_list if key.lower() == lowered]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> List[Tuple[str, str]]:
        return list(self.items_list)

    def __repr__(self) -> str:
        return f"Headers({self.items_list!r})"


@dataclass
class HTTPRequest:
    """The client's opening request as it arrived."""

    method: str
    path: str
    version: str
    headers: Headers
    raw: bytes

    @property
    def key(self) -> Optional[str]:
        """The Sec-WebSocket-Key header, if any."""
        return self.headers.get("Sec-WebSocket-Key")


class ClientFrame(NamedTuple):
    """One frame read from the client, payload already unmasked.

    The reader refused anything else, so every frame here was masked and had
    RSV2 and RSV3 clear; ``rsv1`` is the permessage-deflate bit.
    """

    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


class RawConnection:
    """One accepted connection, as seen by a script. Every read has a timeout."""

    def __init__(
        self,
        sock: socket.socket,
        peer: Any,
        timeout: float = DEFAULT_TIMEOUT,
        server_closing: Optional[threading.Event] = None,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self.request: Optional[HTTPRequest] = None
        self.frames: List[ClientFrame] = []  # every frame read, in order
        self._buffer = bytearray()
        # Client frames are read with lomond's codec, server side, created at
        # the first recv_frame (the request head comes first, by hand).
        # RSV1 is allowed: whether it may be set depends on the script.
        self._reader: Optional[FrameReader] = None
        self._pending: List[ClientFrame] = []
        self._framing_error: Optional[str] = None
        self._closed = False
        self._server_closing = server_closing or threading.Event()
        # Small writes (trickle, single frames) must leave at once, not be
        # coalesced by Nagle's algorithm: tests depend on the split points.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- reading -------------------------------------------------------------
    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out reading from client")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as exc:
            raise TimeoutError("timed out reading from client") from exc
        if not chunk:
            raise PeerClosed("client closed the connection")
        self._buffer += chunk

    def recv_exact(self, n: int, timeout: Optional[float] = None) -> bytes:
        """Exactly ``n`` bytes; PeerClosed on EOF, TimeoutError on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self._buffer) < n:
            self._fill(deadline)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def recv_some(self, timeout: Optional[float] = None) -> bytes:
        """Whatever is buffered or arrives next (b"" on EOF)."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            self._fill(deadline)
        except PeerClosed:
            return b""
        return self.recv_some()

    def read_request(self, timeout: Optional[float] = None) -> HTTPRequest:
        """Read the HTTP request head (up to the blank line) and parse it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > 65536:
                raise ProtocolViolation("request head over 64 KiB")
            self._fill(deadline)
        end = self._buffer.index(b"\r\n\r\n") + 4
        raw = bytes(self._buffer[:end])
        del self._buffer[:end]
        lines = raw[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise ProtocolViolation(f"bad request line {lines[0]!r}")
        try:
            headers = Headers(parse_header_lines(lines[1:]))
        except Exception as error:  # lomond's HandshakeError: a malformed line
            raise ProtocolViolation(str(error)) from None
        self.request = HTTPRequest(parts[0], parts[1], parts[2], headers, raw)
        return self.request

    def recv_frame(self, timeout: Optional[float] = None) -> ClientFrame:
        """Read one client frame, unmasked.

        Raises :class:`ProtocolViolation` if the client broke framing (an
        unmasked frame: RFC 6455 §5.1 says the server must fail the
        connection; RSV2/RSV3, a reserved opcode, a bad control frame),
        :class:`PeerClosed` on EOF and TimeoutError on timeout.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if self._reader is None:
            self._reader = read_frames(None, allow_rsv1=True, expect_masked=True)
        while not self._pending:
            if self._framing_error is not None:
                raise ProtocolViolation(f"client broke framing: {self._framing_error}")
            if not self._buffer:
                self._fill(deadline)
            data = bytes(self._buffer)
            self._buffer.clear()
            frames, error = self._reader.send(data)
            self._pending.extend(
                ClientFrame(f.fin, f.rsv1, f.opcode, bytes(f.payload)) for f in frames
            )
            if error is not None:
                self._framing_error = str(error)
        frame = self._pending.pop(0)
        self.frames.append(frame)
        return frame

    def recv_close(self, timeout: Optional[float] = None) -> Optional[Tuple[int, str]]:
        """Read frames until a close frame; return its (code, reason).

        Other frames are skipped (they stay in :attr:`frames`). An empty close
        payload gives ``(1005, "")`` (RFC 6455 §7.1.5: no status received).
        Returns None if the client closed TCP without a close frame.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                frame = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            except (PeerClosed, ConnectionResetError):
                return None
            if frame.opcode != CLOSE:
                continue
            try:
                code, reason = decode_close(frame.payload)
            except CodecViolation as error:
                raise ProtocolViolation(f"the client's close frame: {error}") from None
            return (1005 if code is None else code), reason

    def expect_eof(self, timeout: Optional[float] = None) -> bytes:
        """Wait for the client to close TCP; return what arrived before it.

        TimeoutError if the client keeps the connection open.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                self._fill(deadline)
            except (PeerClosed, ConnectionResetError):
                data = bytes(self._buffer)
                self._buffer.clear()
                return data

    # -- writing -------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def trickle(self, data: bytes, delay: float = 0.001) -> None:
        """Send ``data`` one byte per write, ``delay`` seconds apart."""
        for index in range(len(data)):
            self.send_raw(data[index : index + 1])
            if delay:
                time.sleep(delay)

    def send_response(
        self,
        status: int,
        reason: str = "",
        headers: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None,
        body: bytes = b"",
    ) -> None:
        """A plain HTTP/1.1 response (for refusals, redirects, 401 ...).

        Content-Length is added when there is a body and none was given.
        """
        items = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        if body and not any(name.lower() == "content-length" for name, _ in items):
            items.append(("Content-Length", str(len(body))))
        head = f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Status')}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in items)
        self.send_raw(head.encode("latin-1") + b"\r\n" + body)

    def send_handshake(
        self,
        accept: str = "correct",
        status: int = 101,
        extra_headers: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None,
        omit: Iterable[str] = (),
        key: Optional[str] = None,
    ) -> None:
        """Answer the upgrade.

        ``accept`` is ``"correct"`` (computed from ``key`` or the request read
        last), ``"wrong"`` (a valid-looking but wrong value) or the literal
        header value. ``extra_headers`` replace same-named defaults, else are
        appended; ``omit`` drops defaults by name (case-insensitive).
        """
        if accept in ("correct", "wrong"):
            key = key or (self.request.key if self.request is not None else None)
            if key is None:
                raise ValueError("no Sec-WebSocket-Key: call read_request() or pass key=")
            value = accept_key(key if accept == "correct" else key + "x")
        else:
            value = accept
        items: List[Tuple[str, str]] = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", value),
        ]
        extra = list(
            extra_headers.items() if isinstance(extra_headers, Mapping) else extra_headers or []
        )
        for name, val in extra:
            for index, (existing, _) in enumerate(items):
                if existing.lower() == name.lower():
                    items[index] = (name, val)
                    break
            else:
                items.append((name, val))
        dropped = {name.lower() for name in omit}
        items = [(n, v) for n, v in items if n.lower() not in dropped]
        self.send_response(status, "Switching Protocols" if status == 101 else "", items)

    def handshake(self, timeout: Optional[float] = None, **kwargs: Any) -> HTTPRequest:
        """read_request() then send_handshake(**kwargs): the usual opening."""
        request = self.read_request(timeout)
        self.send_handshake(**kwargs)
        return request

    def send_frame(
        self,
        opcode: int,
        payload: Union[bytes, str] = b"",
        fin: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
        mask: Union[bool, bytes] = False,
        length_override: Optional[int] = None,
        length_form: Optional[int] = None,
    ) -> None:
        """Send one frame built by :func:`build_frame` (same arguments)."""
        self.send_raw(
            build_frame(opcode, payload, fin, rsv1, rsv2, rsv3, mask, length_override, length_form)
        )

    def send_text(self, text: str) -> None:
        self.send_frame(TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self.send_frame(BINARY, data)

    def send_close(self, code: Optional[int] = 1000, reason: Union[str, bytes] = "") -> None:
        self.send_frame(CLOSE, close_payload(code, reason))

    # -- ending ----------------------------------------------------------------
    def shutdown_write(self) -> None:
        """Half-close: send FIN, keep reading."""
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER on, timeout 0, then close)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            self.close(drain=0)

    def close(self, drain: float = 1.0) -> None:
        """Close gracefully: FIN first, then read (and drop) until the client's FIN.

        Closing a socket with unread input makes the kernel send RST, and a
        RST can destroy data the client has not read yet (say the close frame
        just sent), so the peer is given up to ``drain`` seconds to finish.
        ``drain=0`` closes at once; :meth:`reset` is the deliberate RST.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if drain > 0:
                self.sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + drain
                while not self._server_closing.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.sock.settimeout(min(remaining, 0.05))
                    try:
                        if not self.sock.recv(65536):
                            break
                    except socket.timeout:
                        continue
        except OSError:
            pass  # already reset or shut down by the peer: nothing to drain
        finally:
            self.sock.close()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def hold(self, timeout: Optional[float] = None) -> None:
        """Keep the connection open, doing nothing, until the server stops.

        A script returning closes its connection; a script that wants the
        client to wait forever (no reply, no close) ends with ``hold()``.
        """
        self._server_closing.wait(timeout)


_REASONS: Dict[int, str] = {
    101: "Switching Protocols",
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    407: "Proxy Authentication Required",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

Script = Callable[[RawConnection], Any]


@dataclass
class _Run:
    conn: RawConnection
    thread: threading.Thread
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: Optional[BaseException] = None


class ScriptedServer:
    """Raw TCP server on loopback running ``script(conn)`` per connection.

    ``mode`` is ``"script"`` (default), ``"stall"`` or ``"no-accept"`` (see
    the module docstring). ``ssl_context`` wraps accepted sockets in TLS
    before the script runs; a failed TLS handshake (e.g. the client refused
    the certificate) is kept in :attr:`tls_errors`, not :attr:`errors`.
    """

    def __init__(
        self,
        script: Optional[Script] = None,
        *,
        host: str = "127.0.0.1",
        ssl_context: Optional[ssl.SSLContext] = None,
        mode: str = "script",
        timeout: float = DEFAULT_TIMEOUT,
        tls_hostname: str = "localhost",
    ) -> None:
        if mode not in ("script", "stall", "no-accept"):
            raise ValueError(f"unknown mode {mode!r}")
        if mode == "script" and script is None:
            raise ValueError("mode='script' needs a script")
        self.script = script
        self.host = host
        self.ssl_context = ssl_context
        self.mode = mode
        self.timeout = timeout
        self.tls_hostname = tls_hostname
        self.port = 0
        self.connections: List[RawConnection] = []
        self.errors: List[BaseException] = []
        self.tls_errors: List[BaseException] = []
        self.results: List[Any] = []  # return values, in completion order
        self._runs: List[_Run] = []
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._fillers: List[socket.socket] = []
        self._closing = threading.Event()  # stop() began: hold() returns
        self._stopping = threading.Event()  # grace over: errors are teardown noise
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    # -- addresses -------------------------------------------------------------
    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT`` (``wss://localhost:PORT`` with TLS)."""
        if self.ssl_context is not None and self.host == "127.0.0.1":
            return f"wss://{self.tls_hostname}:{self.port}"
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{bracket_host(self.host)}:{self.port}"

    def url_for(self, path: str) -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    @property
    def address(self) -> Tuple[str, int]:
        return self.host, self.port

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> ScriptedServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        self.port = listener.getsockname()[1]
        self._listener = listener
        if self.mode == "no-accept":
            listener.listen(0)
            self._fill_backlog()
            return self
        listener.listen(16)
        # A timeout on accept() lets the loop notice stop() promptly.
        listener.settimeout(0.05)
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"ScriptedServer:{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def _fill_backlog(self) -> None:
        # With backlog 0 the kernel queues at most one or two unaccepted
        # connections; connect until a connect stops completing, so the
        # client under test finds the queue full and its SYN is dropped.
        for _ in range(8):
            filler = socket.socket(self._listener.family if self._listener else socket.AF_INET)
            filler.settimeout(0.1)
            try:
                filler.connect((self.host, self.port))
            except OSError:
                filler.close()
                return
            self._fillers.append(filler)
        raise RuntimeError("could not fill the listen backlog")

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, give scripts ``grace`` seconds, then close everything.

        Errors a script raises because its socket was closed under it here are
        not reported: they are teardown, not test results.
        """
        self._closing.set()
        with self._lock:
            runs = list(self._runs)
        deadline = time.monotonic() + grace
        for run in runs:
            run.thread.join(max(deadline - time.monotonic(), 0))
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(2)
        if self._listener is not None:
            self._listener.close()
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()
        for conn in self.connections:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close(drain=0)
        for run in runs:
            run.thread.join(2)

    def __enter__(self) -> ScriptedServer:
        return self.start() if self._listener is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- results -------------------------------------------------------------
    def wait_for_connection(self, n: int = 1, timeout: float = DEFAULT_TIMEOUT) -> RawConnection:
        """Wait for the ``n``-th accepted connection and return it."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.connections) >= n, timeout):
                raise AssertionError(f"no connection #{n} to {self.url} after {timeout}s")
            return self.connections[n - 1]

    def result(self, index: int = 0, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Wait for script run ``index`` (0 = first connection) and return its value.

        Re-raises the exception the script raised, AssertionError on timeout.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._runs) > index, timeout):
                raise AssertionError(f"no connection #{index + 1} to {self.url} after {timeout}s")
            run = self._runs[index]
        if not run.done.wait(timeout):
            raise AssertionError(f"script #{index + 1} still running after {timeout}s")
        if run.error is not None:
            raise run.error
        return run.result

    def check(self) -> None:
        """Raise the first error a script raised (teardown hook)."""
        if self.errors:
            raise self.errors[0]

    # -- internals ---------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(self.timeout)
            thread = threading.Thread(
                target=self._serve, args=(sock, peer), name=f"script:{peer}", daemon=True
            )
            thread.start()

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                self.tls_errors.append(exc)
                sock.close()
                return
        conn = RawConnection(sock, peer, self.timeout, self._closing)
        run = _Run(conn, threading.current_thread())
        with self._cond:
            self.connections.append(conn)
            self._runs.append(run)
            self._cond.notify_all()
        if self.mode == "stall":
            # Hold the socket open untouched until stop() closes it.
            self._closing.wait()
            run.done.set()
            return
        try:
            assert self.script is not None
            run.result = self.script(conn)
            self.results.append(run.result)
        except BaseException as exc:
            run.error = exc
            if not self._stopping.is_set():
                self.errors.append(exc)
        finally:
            run.done.set()
            with self._cond:
                self._cond.notify_all()
            # The script's end is the connection's end (hold() to keep it).
            conn.close()
