"""A real WebSocket server (the ``websockets`` package) for integration tests.

:class:`WSServer` runs ``websockets.asyncio.server.serve`` on its own event loop
in a background thread, bound to a loopback address. What the server does on
a connection is chosen by the request path (see :data:`BEHAVIOURS`), so one
running server covers many tests, and everything it sees is recorded in
:attr:`WSServer.connections` (one :class:`ConnectionRecord` per handshake
request) *before* it answers, so a test may assert on it as soon as it gets
the reply.

Behaviours (query parameters in brackets)::

    /  /echo[/anything]             echo every message back, same type
    /headers                        one JSON text message of the request headers, then echo
    /close [code=1000 reason=]      close right after the handshake
    /close-after [n=1 code=1000 reason=]   echo n messages, then close
    /ping [data=]                   send a ping right after the handshake, then echo
    /stream [count=100 size=]       send "0", "1", ... (zero-padded to size), then echo
    /fragmented [parts=a,b,c binary=0]     send one message in fragments, then echo
    /record                         record messages, never reply
    /reject [status=403 retry_after= location= header=Name:value ...]
                                    answer the upgrade with that HTTP status
    /slow-handshake [delay=2]       wait before answering the upgrade, then echo
    /drop                           abort the TCP connection right after the handshake

Any other path is answered with HTTP 404. Add behaviours with
:func:`behaviour` (all servers) or ``WSServer(behaviours={...})`` /
:meth:`WSServer.add_behaviour` (one server).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Union
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response

#: How long any wait in this module may take by default (seconds).
DEFAULT_TIMEOUT = 5.0


@dataclass
class RecordedFrame:
    """One frame the server received after the handshake (post-decompression).

    ``data`` is kept for control frames only: data frames may be many MiB and
    their content is already in :attr:`ConnectionRecord.received`.
    """

    opcode: int
    fin: bool
    length: int
    data: Optional[bytes]


@dataclass
class ConnectionRecord:
    """What one handshake request and the connection after it looked like."""

    path: str  # request target exactly as sent, query included
    request_headers: Headers  # case-insensitive: .get("sec-websocket-key")
    remote_address: Any  # peer (host, port, ...) as the server saw it
    route: str = ""  # path without the query
    query: Dict[str, str] = field(default_factory=dict)  # last value per name
    query_lists: Dict[str, List[str]] = field(default_factory=dict)
    status: Optional[int] = None  # HTTP status answered (101 when accepted)
    response_headers: Optional[Headers] = None
    subprotocol: Optional[str] = None  # as negotiated
    extensions: Optional[str] = None  # Sec-WebSocket-Extensions answered
    received: List[Union[str, bytes]] = field(default_factory=list)
    frames: List[RecordedFrame] = field(default_factory=list)
    close_code: Optional[int] = None  # from the client's close frame
    close_reason: Optional[str] = None
    close_sent_code: Optional[int] = None  # from the server's close frame
    close_sent_reason: Optional[str] = None
    answered: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def accepted(self) -> bool:
        return self.status == 101

    @property
    def pings(self) -> List[bytes]:
        """Payloads of the pings the client sent."""
        return [f.data or b"" for f in self.frames if f.opcode == Opcode.PING.value]

    @property
    def pongs(self) -> List[bytes]:
        """Payloads of the pongs the client sent."""
        return [f.data or b"" for f in self.frames if f.opcode == Opcode.PONG.value]

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, default)

    def int_param(self, name: str, default: int) -> int:
        value = self.query.get(name)
        return default if value is None or value == "" else int(value)

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the TCP connection ended; AssertionError on timeout."""
        if not self.closed.wait(timeout):
            raise AssertionError(f"connection {self.path!r} still open after {timeout}s")

    def wait_received(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> List[Union[str, bytes]]:
        """Wait until at least ``n`` messages were received, return them all."""
        wait_until(lambda: len(self.received) >= n, timeout, f"{n} messages on {self.path!r}")
        return list(self.received)

    def wait_frame(self, opcode: int, timeout: float = DEFAULT_TIMEOUT) -> RecordedFrame:
        """Wait for the first received frame with ``opcode``, return it."""
        found: List[RecordedFrame] = []

        def check() -> bool:
            found[:] = [f for f in self.frames if f.opcode == int(opcode)]
            return bool(found)

        wait_until(check, timeout, f"opcode {opcode} frame on {self.path!r}")
        return found[0]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


# ---------------------------------------------------------------------------
# Behaviours
# ---------------------------------------------------------------------------

Handler = Callable[[ServerConnection, ConnectionRecord], Awaitable[None]]
RequestHook = Callable[
    [ServerConnection, ConnectionRecord], Union[Awaitable[Optional[Response]], Optional[Response]]
]


@dataclass
class Behaviour:
    """What to do for one route.

    ``on_request`` runs while answering the HTTP upgrade and may return a
    :class:`Response` to refuse it; ``handler`` runs once the WebSocket is open.
    """

    handler: Handler
    on_request: Optional[RequestHook] = None


#: Shared route table; routes are matched on the first path segment.
BEHAVIOURS: Dict[str, Behaviour] = {}


def behaviour(
    *routes: str, on_request: Optional[RequestHook] = None
) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine as the behaviour of ``routes``."""

    def register(handler: Handler) -> Handler:
        for route in routes:
            BEHAVIOURS[route] = Behaviour(handler, on_request)
        return handler

    return register


async def record_message(ws: ServerConnection, rec: ConnectionRecord) -> Union[str, bytes]:
    """Receive one message and record it (before anything is sent back)."""
    message = await ws.recv()
    rec.received.append(message)
    return message


async def echo_forever(ws: ServerConnection, rec: ConnectionRecord) -> None:
    while True:
        message = await record_message(ws, rec)
        await ws.send(message)


@behaviour("/", "/echo")
async def _echo(ws: ServerConnection, rec: ConnectionRecord) -> None:
    await echo_forever(ws, rec)


@behaviour("/headers")
async def _headers(ws: ServerConnection, rec: ConnectionRecord) -> None:
    # Names keep the case the client sent; repeated headers are joined the way
    # HTTP allows (RFC 9110 §5.3), so the JSON stays a flat object.
    merged: Dict[str, str] = {}
    for name, value in rec.request_headers.raw_items():
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    await ws.send(json.dumps(merged))
    await echo_forever(ws, rec)


@behaviour("/close")
async def _close(ws: ServerConnection, rec: ConnectionRecord) -> None:
    await ws.close(rec.int_param("code", 1000), rec.param("reason"))


@behaviour("/close-after")
async def _close_after(ws: ServerConnection, rec: ConnectionRecord) -> None:
    for _ in range(rec.int_param("n", 1)):
        await ws.send(await record_message(ws, rec))
    await ws.close(rec.int_param("code", 1000), rec.param("reason"))


@behaviour("/ping")
async def _ping(ws: ServerConnection, rec: ConnectionRecord) -> None:
    # Don't await the pong: the test checks rec.pongs / rec.wait_frame(PONG).
    await ws.ping(rec.param("data").encode())
    await echo_forever(ws, rec)


@behaviour("/stream")
async def _stream(ws: ServerConnection, rec: ConnectionRecord) -> None:
    width = rec.int_param("size", 0)
    for number in range(rec.int_param("count", 100)):
        await ws.send(str(number).zfill(width))
    await echo_forever(ws, rec)


@behaviour("/fragmented")
async def _fragmented(ws: ServerConnection, rec: ConnectionRecord) -> None:
    parts = rec.param("parts", "a,b,c").split(",")
    if rec.param("binary") in ("1", "true"):
        await ws.send([part.encode() for part in parts])
    else:
        await ws.send(parts)
    await echo_forever(ws, rec)


@behaviour("/record")
async def _record(ws: ServerConnection, rec: ConnectionRecord) -> None:
    while True:
        await record_message(ws, rec)


def _reject(ws: ServerConnection, rec: ConnectionRecord) -> Response:
    status = rec.int_param("status", 403)
    response = ws.respond(status, f"rejected with {status}\n")
    if "retry_after" in rec.query:
        response.headers["Retry-After"] = rec.query["retry_after"]
    if "location" in rec.query:
        response.headers["Location"] = rec.query["location"]
    for header in rec.query_lists.get("header", []):
        name, _, value = header.partition(":")
        response.headers[name.strip()] = value.strip()
    return response


async def _never_opened(ws: ServerConnection, rec: ConnectionRecord) -> None:
    raise AssertionError("a rejected connection reached its handler")


BEHAVIOURS["/reject"] = Behaviour(_never_opened, on_request=_reject)


async def _slow_handshake(ws: ServerConnection, rec: ConnectionRecord) -> None:
    # Wait for the delay or the connection's end, whichever is first, so that
    # stop() (which aborts unanswered connections) isn't held up by the sleep.
    sleeper = asyncio.ensure_future(asyncio.sleep(float(rec.param("delay", "2"))))
    try:
        await asyncio.wait(
            [sleeper, ws.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        sleeper.cancel()


BEHAVIOURS["/slow-handshake"] = Behaviour(_echo, on_request=_slow_handshake)


@behaviour("/drop")
async def _drop(ws: ServerConnection, rec: ConnectionRecord) -> None:
    # abort() resets the TCP connection without any close frame.
    ws.transport.abort()


# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------


def deflate(
    server_no_context_takeover: bool = False,
    client_no_context_takeover: bool = False,
    server_max_window_bits: Optional[int] = None,
    client_max_window_bits: Optional[int] = None,
    require_client_max_window_bits: bool = False,
) -> ServerPerMessageDeflateFactory:
    """permessage-deflate with forced parameters, for ``WSServer(extensions=[...])``."""
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=server_no_context_takeover,
        client_no_context_takeover=client_no_context_takeover,
        server_max_window_bits=server_max_window_bits,
        client_max_window_bits=client_max_window_bits,
        require_client_max_window_bits=require_client_max_window_bits,
    )


class _RecordingConnection(ServerConnection):
    """ServerConnection that feeds its owner's records as frames arrive."""

    owner: WSServer
    record: Optional[ConnectionRecord] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner._live.add(self)

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        rec = self.record
        if rec is None or not isinstance(event, Frame):
            return
        control = event.opcode in (Opcode.CLOSE, Opcode.PING, Opcode.PONG)
        rec.frames.append(
            RecordedFrame(
                opcode=event.opcode.value,
                fin=event.fin,
                length=len(event.data),
                data=bytes(event.data) if control else None,
            )
        )
        if event.opcode is Opcode.CLOSE:
            self._note_close()

    def _note_close(self) -> None:
        rec = self.record
        if rec is None:
            return
        rcvd: Optional[Close] = self.protocol.close_rcvd
        if rcvd is not None:
            rec.close_code, rec.close_reason = rcvd.code, rcvd.reason
        sent: Optional[Close] = self.protocol.close_sent
        if sent is not None:
            rec.close_sent_code, rec.close_sent_reason = sent.code, sent.reason

    def connection_lost(self, exc: Optional[Exception]) -> None:
        super().connection_lost(exc)
        self.owner._live.discard(self)
        self._note_close()
        if self.record is not None:
            # A refused upgrade ends here too; answered must never stay unset.
            self.record.answered.set()
            self.record.closed.set()


class WSServer:
    """A ``websockets`` server on a loopback port in a background thread.

    ``compression="deflate"`` lets websockets negotiate permessage-deflate with
    its defaults; ``extensions=[deflate(...)]`` replaces that with exactly the
    given factories (``compression`` is then ignored); ``compression=None``
    and no ``extensions`` disables extensions.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: Any = None,
        compression: Optional[str] = "deflate",
        extensions: Optional[Sequence[ServerExtensionFactory]] = None,
        subprotocols: Optional[Sequence[str]] = None,
        max_size: Optional[int] = None,
        ping_interval: Optional[float] = None,
        ping_timeout: Optional[float] = None,
        open_timeout: float = DEFAULT_TIMEOUT,
        close_timeout: float = 2.0,
        behaviours: Optional[Dict[str, Union[Behaviour, Handler]]] = None,
        tls_hostname: str = "localhost",
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.compression = compression
        self.extensions = list(extensions) if extensions is not None else None
        self.subprotocols = list(subprotocols) if subprotocols is not None else None
        self.max_size = max_size
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        # The name put in wss:// URLs: the certificate covers it and, unlike an
        # IP literal, it exercises SNI and hostname checking.
        self.tls_hostname = tls_hostname
        self.behaviours: Dict[str, Behaviour] = dict(BEHAVIOURS)
        for route, spec in (behaviours or {}).items():
            self.add_behaviour(route, spec)
        # Kept across restart() so reconnect tests see every connection.
        self.connections: List[ConnectionRecord] = []
        # Exceptions raised by behaviours (not ConnectionClosed): server bugs.
        self.errors: List[BaseException] = []
        self._live: set[_RecordingConnection] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[Server] = None

    # -- configuration -------------------------------------------------------
    def add_behaviour(self, route: str, spec: Union[Behaviour, Handler]) -> None:
        self.behaviours[route] = spec if isinstance(spec, Behaviour) else Behaviour(spec)

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context is not None else "ws"

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``, ``ws://[::1]:PORT`` or ``wss://localhost:PORT``."""
        if self.ssl_context is not None and self.host in ("127.0.0.1", "localhost"):
            host = self.tls_hostname
        elif ":" in self.host:
            host = f"[{self.host}]"
        else:
            host = self.host
        return f"{self.scheme}://{host}:{self.port}"

    def url_for(self, path: str) -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = DEFAULT_TIMEOUT) -> WSServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name=f"WSServer:{self.port}", daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout)
        except BaseException:
            self._stop_loop(timeout)
            raise
        return self

    def stop(
        self,
        abort: bool = False,
        code: int = 1001,
        reason: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Stop listening and end every connection; idempotent.

        By default open connections get a close frame (``code``, default 1001
        going away) and ``close_timeout`` to answer it; with ``abort`` (or past
        the timeout) their TCP connections are aborted without a close frame.
        """
        loop = self._loop
        if loop is None:
            return
        try:
            if self._server is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(
                    self._close(abort, code, reason, timeout), loop
                ).result(timeout + 1)
        finally:
            self._stop_loop(timeout)

    def restart(self, **stop_kwargs: Any) -> None:
        """stop() then start() again on the same port."""
        self.stop(**stop_kwargs)
        self.start()

    def __enter__(self) -> WSServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- waiting -------------------------------------------------------------
    def wait_for_connection(self, n: int = 1, timeout: float = DEFAULT_TIMEOUT) -> ConnectionRecord:
        """Wait until the ``n``-th handshake request was answered; return its record."""
        wait_until(
            lambda: len(self.connections) >= n and self.connections[n - 1].answered.is_set(),
            timeout,
            f"connection #{n} to {self.url}",
        )
        return self.connections[n - 1]

    @property
    def last(self) -> ConnectionRecord:
        """The most recent connection record (AssertionError if there is none)."""
        if not self.connections:
            raise AssertionError(f"no connection reached {self.url}")
        return self.connections[-1]

    # -- internals (event-loop thread) ----------------------------------------
    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Whatever is still pending (a handler stuck past stop) is cancelled
            # so the loop closes without "Task was destroyed" warnings.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _stop_loop(self, timeout: float) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        self._server = None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError("WSServer event loop thread did not stop")

    def _make_connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        conn = _RecordingConnection(*args, **kwargs)
        conn.owner = self
        return conn

    async def _open(self) -> None:
        if self.extensions is not None:
            compression, extensions = None, self.extensions
        else:
            compression, extensions = self.compression, None
        if self.host in ("::1",) or ":" in self.host:
            family = socket.AF_INET6
        else:
            family = socket.AF_INET
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            family=family,
            ssl=self.ssl_context,
            compression=compression,
            extensions=extensions,
            subprotocols=self.subprotocols,  # type: ignore[arg-type]
            process_request=self._process_request,
            process_response=self._process_response,
            max_size=self.max_size,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            create_connection=self._make_connection,  # type: ignore[arg-type]
            reuse_address=True,  # so restart() can rebind the same port at once
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self, abort: bool, code: int, reason: str, timeout: float) -> None:
        server = self._server
        assert server is not None
        if abort:
            for conn in list(self._live):
                conn.transport.abort()
        # Connections still in the opening handshake would keep the handler
        # waiting until open_timeout: end them now.
        for conn in list(self._live):
            if conn.record is None or not conn.record.answered.is_set():
                conn.transport.abort()
        server.close(close_connections=True, code=code, reason=reason)
        try:
            await asyncio.wait_for(server.wait_closed(), timeout)
        except asyncio.TimeoutError:
            for conn in list(self._live):
                conn.transport.abort()
            await asyncio.wait_for(server.wait_closed(), 1.0)

    def _route(self, route: str) -> Optional[Behaviour]:
        if route in self.behaviours:
            return self.behaviours[route]
        first = "/" + route.lstrip("/").split("/", 1)[0]
        return self.behaviours.get(first)

    async def _process_request(self, ws: ServerConnection, request: Request) -> Optional[Response]:
        split = urlsplit(request.path)
        query_lists = parse_qs(split.query, keep_blank_values=True)
        rec = ConnectionRecord(
            path=request.path,
            request_headers=request.headers,
            remote_address=ws.remote_address,
            route=split.path,
            query={name: values[-1] for name, values in query_lists.items()},
            query_lists=query_lists,
        )
        assert isinstance(ws, _RecordingConnection)
        ws.record = rec
        self.connections.append(rec)
        spec = self._route(split.path)
        if spec is None:
            return ws.respond(404, f"no test behaviour for {split.path}\n")
        if spec.on_request is not None:
            result = spec.on_request(ws, rec)
            if asyncio.iscoroutine(result):
                result = await result
            return result  # type: ignore[return-value]
        return None

    def _process_response(self, ws: ServerConnection, request: Request, response: Response) -> None:
        assert isinstance(ws, _RecordingConnection)
        rec = ws.record
        if rec is None:  # pragma: no cover - process_request always runs first
            return
        rec.status = response.status_code
        rec.response_headers = response.headers
        rec.extensions = response.headers.get("Sec-WebSocket-Extensions")
        rec.subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        # Set before the response is written, so whoever reads it finds a
        # complete record.
        rec.answered.set()

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _RecordingConnection)
        rec = ws.record
        assert rec is not None
        spec = self._route(rec.route)
        assert spec is not None
        try:
            await spec.handler(ws, rec)
        except ConnectionClosed:
            pass  # the client went away: normal for a test peer
        except Exception as exc:  # a bug in a behaviour: report it to the test
            self.errors.append(exc)
            raise
