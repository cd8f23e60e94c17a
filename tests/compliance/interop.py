"""The interop matrix: lomond's three drivers against real servers on loopback.

Every cell is one connection: a :data:`CHECKS` entry (an echo, a 1 MiB
message, permessage-deflate, a subprotocol, a ping, each side's close
handshake, TLS, an HTTP proxy) run through one driver (``threaded``:
:meth:`lomond.WebSocket.connect` in this thread; ``hub``: a
:class:`~lomond.handlers.WebSocketApp` on one shared
:class:`~lomond.handlers.Hub`; ``asyncio``: a
:class:`~lomond.handlers.WebSocketApp` awaited with ``run_async()`` on its
own event loop) against one server of :data:`SERVERS`. A cell
passes when the events are what RFC 6455 (and RFC 7692) say they must be.

The servers are other implementations wherever this machine has them:

* ``websockets`` (asyncio): the package's asyncio server, as the test suite's
  ``ws_server`` fixture runs it (``tests/peers/ws_server.py``);
* ``websockets`` (sync): the package's threaded server;
* ``aiohttp`` and ``tornado``: their servers, when the packages are installed
  (they are not in the ``test`` extra: ``pip install aiohttp tornado`` adds
  their columns);
* ``lomond.testing.LocalServer``: lomond's own server side (the same protocol
  core, so it shows the bundled demo server works, not interop).

A server that lacks a feature (LocalServer has no TLS and no subprotocols)
gets no cell for it. ``tests/compliance/test_interop.py`` runs every cell as
a test; ``tests/compliance/report.py --interop`` runs them and writes the
matrix into ``docs/report.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

TESTS_DIR = Path(__file__).resolve().parent.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from peers.proxy import ProxyServer  # noqa: E402
from peers.tls import TLSBundle, make_bundle  # noqa: E402
from peers.ws_server import WSServer  # noqa: E402

from lomond import WebSocket, events  # noqa: E402
from lomond.handlers import Hub, WebSocketApp  # noqa: E402
from lomond.testing import LocalServer, ServerConnection  # noqa: E402

#: Seconds one cell may take before it counts as failed.
CELL_TIMEOUT = 20.0
#: The subprotocol offered and accepted in the ``subprotocol`` check.
SUBPROTOCOL = "chat.v1"
#: The payload of the ``large`` check: 1 MiB, every byte value.
LARGE = bytes(range(256)) * 4096
#: The path on which every server echoes one message, then closes with this code.
CLOSE_PATH = "/close-after-one"
CLOSE_CODE, CLOSE_REASON = 1000, "bye"

DRIVERS = ("threaded", "hub", "asyncio")

Sender = Any  # a lomond.WebSocket or a WebSocketApp: the same send_* and close()


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


@dataclass
class Check:
    """One thing to try on a connection; ``feature`` is what the server must support."""

    name: str
    title: str
    feature: Optional[str]  # None, "deflate", "subprotocol", "tls", "proxy"
    ready: Callable[[Sender, events.Ready], None]
    event: Callable[[Sender, events.Event, List[events.Event]], None]
    verify: Callable[[List[events.Event]], Optional[str]]
    path: str = "/echo"
    options: Dict[str, Any] = field(default_factory=dict)


def _of(kind: type, found: List[events.Event]) -> List[Any]:
    return [event for event in found if isinstance(event, kind)]


def _close_when(count: int) -> Callable[[Sender, events.Event, List[events.Event]], None]:
    """Close once ``count`` messages (or pongs) arrived."""

    def event(sender: Sender, event: events.Event, found: List[events.Event]) -> None:
        replies = _of((events.Text, events.Binary, events.Pong), found)
        if isinstance(event, (events.Text, events.Binary, events.Pong)) and len(replies) == count:
            sender.close(1000, "done")

    return event


def _ended_well(found: List[events.Event], closed_by: str = "us") -> Optional[str]:
    """``None`` if the connection closed gracefully with 1000, else what went wrong."""
    failures = _of((events.ConnectFail, events.Rejected, events.ProtocolError), found)
    if failures:
        first = failures[0]
        return f"{first.name}: {getattr(first, 'reason', None) or getattr(first, 'error', '')}"
    ends = _of(events.Disconnected, found)
    if not ends:
        return "no Disconnected event"
    if not ends[-1].graceful:
        return f"not graceful: {ends[-1].reason}"
    kind = events.Closed if closed_by == "us" else events.Closing
    closes = _of(kind, found)
    if not closes:
        return f"no {kind.__name__} event"
    if closes[-1].code != (1000 if closed_by == "us" else CLOSE_CODE):
        return f"{kind.__name__} with code {closes[-1].code}"
    return None


def _echoed(expected: List[Any]) -> Callable[[List[events.Event]], Optional[str]]:
    def verify(found: List[events.Event]) -> Optional[str]:
        got = [e.text if isinstance(e, events.Text) else e.data
               for e in _of((events.Text, events.Binary), found)]
        if got != expected:
            shown = [g if len(g) < 40 else f"<{len(g)} bytes>" for g in got]
            return f"echoed {shown!r}"
        return _ended_well(found)

    return verify


def _send_pair(sender: Sender, ready: events.Ready) -> None:
    sender.send_text("hello, interop")
    sender.send_binary(b"\x00\x01\xfe\xff")


def _ready_then(check: Callable[[events.Ready], Optional[str]]) -> Callable[
        [List[events.Event]], Optional[str]]:
    def verify(found: List[events.Event]) -> Optional[str]:
        ready = _of(events.Ready, found)
        if not ready:
            return _ended_well(found) or "never ready"
        return check(ready[0]) or _ended_well(found)

    return verify


def _deflate_verify(found: List[events.Event]) -> Optional[str]:
    ready = _of(events.Ready, found)
    if ready and "permessage-deflate" not in ready[0].extensions:
        return f"permessage-deflate not negotiated: {sorted(ready[0].extensions)}"
    return _echoed(["compress me " * 100])(found)


def _server_close_verify(found: List[events.Event]) -> Optional[str]:
    texts = [e.text for e in _of(events.Text, found)]
    if texts != ["last"]:
        return f"echoed {texts!r}"
    return _ended_well(found, closed_by="server")


CHECKS: Tuple[Check, ...] = (
    Check("echo", "text and binary echo", None, _send_pair, _close_when(2),
          _echoed(["hello, interop", b"\x00\x01\xfe\xff"])),
    Check("large", "a 1 MiB message", None,
          lambda s, r: s.send_binary(LARGE), _close_when(1), _echoed([LARGE])),
    Check("deflate", "permessage-deflate (RFC 7692)", "deflate",
          lambda s, r: s.send_text("compress me " * 100), _close_when(1), _deflate_verify,
          options={"compress": True}),
    Check("subprotocol", "a subprotocol", "subprotocol",
          lambda s, r: s.close(1000, "done"), lambda s, e, f: None,
          _ready_then(lambda r: None if r.protocol == SUBPROTOCOL
                      else f"subprotocol {r.protocol!r}"),
          options={"protocols": [SUBPROTOCOL]}),
    Check("ping", "ping and pong", None,
          lambda s, r: s.send_ping(b"interop"), _close_when(1),
          lambda found: (None if [p.data for p in _of(events.Pong, found)] == [b"interop"]
                         else "no matching Pong") or _ended_well(found)),
    Check("close", "close handshake, lomond first", None,
          lambda s, r: s.close(1000, "done"), lambda s, e, f: None, _ended_well),
    Check("server-close", "close handshake, server first", None,
          lambda s, r: s.send_text("last"), lambda s, e, f: None, _server_close_verify,
          path=CLOSE_PATH),
    Check("tls", "wss:// (TLS, verified)", "tls", _send_pair, _close_when(2),
          _echoed(["hello, interop", b"\x00\x01\xfe\xff"])),
    Check("proxy", "through an HTTP proxy (CONNECT)", "proxy", _send_pair, _close_when(2),
          _echoed(["hello, interop", b"\x00\x01\xfe\xff"])),
)
CHECK_NAMES = tuple(check.name for check in CHECKS)


# ---------------------------------------------------------------------------
# The servers
# ---------------------------------------------------------------------------


@dataclass
class Server:
    """A server of the matrix: how to start it, what it supports."""

    name: str
    title: str
    module: str  # the package whose presence decides whether it runs
    features: Tuple[str, ...]
    start: Callable[[Optional[Any], bool], Any]  # (ssl context, subprotocol) -> started
    stop: Callable[[Any], None]
    url: Callable[[Any, str], str]  # server, path -> ws:// or wss:// URL

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def version(self) -> str:
        if self.module == "lomond":
            import lomond

            return lomond.__version__
        from importlib.metadata import version

        return version(self.module)


def _ws_asyncio_start(context: Optional[Any], subprotocol: bool) -> WSServer:
    # A websockets server with subprotocols refuses a client that offers none
    # (400): the subprotocol check gets a server of its own.
    protocols = [SUBPROTOCOL] if subprotocol else None
    server = WSServer(ssl_context=context, subprotocols=protocols, max_size=None)
    server.add_behaviour(CLOSE_PATH, _ws_asyncio_close_after_one)
    return server.start()


async def _ws_asyncio_close_after_one(connection: Any, record: Any) -> None:
    message = await connection.recv()
    await connection.send(message)
    await connection.close(CLOSE_CODE, CLOSE_REASON)


def _ws_sync_start(context: Optional[Any], subprotocol: bool) -> Any:
    from websockets.sync.server import serve

    def handler(connection: Any) -> None:
        if connection.request.path == CLOSE_PATH:
            connection.send(connection.recv())
            connection.close(CLOSE_CODE, CLOSE_REASON)
            return
        for message in connection:
            connection.send(message)

    protocols = [SUBPROTOCOL] if subprotocol else None
    server = serve(handler, "127.0.0.1", 0, ssl=context, subprotocols=protocols,
                   max_size=None, compression="deflate", ping_interval=None)
    threading.Thread(target=server.serve_forever, name="ws-sync-server", daemon=True).start()
    return server


def _socket_port(server: Any) -> int:
    return int(server.socket.getsockname()[1])


def _local_start(context: Optional[Any], subprotocol: bool) -> LocalServer:
    def handler(connection: ServerConnection) -> None:
        if connection.path == CLOSE_PATH:
            message = connection.recv(timeout=CELL_TIMEOUT)
            if message is not None:
                connection.send(message)
            connection.close(CLOSE_CODE, CLOSE_REASON)
            connection.recv(timeout=CELL_TIMEOUT)  # the client's answer
            return
        while (message := connection.recv()) is not None:
            connection.send(message)

    return LocalServer(handler).start()


class _LoopServer:
    """An asyncio server (aiohttp's) on a loop in a thread of its own."""

    def __init__(self, setup: Callable[[], Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        errors: List[BaseException] = []

        async def main() -> None:
            try:
                self.runner, self.port = await setup()
            except BaseException as error:  # reported to the starting thread
                errors.append(error)
            ready.set()

        self.thread = threading.Thread(target=self._run, args=(main,), daemon=True)
        self.thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]

    def _run(self, main: Callable[[], Any]) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def stop(self) -> None:
        async def cleanup() -> None:
            await self.runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _aiohttp_start(context: Optional[Any], subprotocol: bool) -> _LoopServer:
    from aiohttp import WSMsgType, web

    async def handler(request: Any) -> Any:
        ws = web.WebSocketResponse(protocols=[SUBPROTOCOL], max_msg_size=0, compress=True,
                                   autoping=True)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            if request.path == CLOSE_PATH:
                await ws.close(code=CLOSE_CODE, message=CLOSE_REASON.encode())
        return ws

    async def setup() -> Tuple[Any, int]:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        return runner, port

    return _LoopServer(setup)


def _tornado_start(context: Optional[Any], subprotocol: bool) -> _LoopServer:
    from tornado import web, websocket

    class Echo(websocket.WebSocketHandler):
        def select_subprotocol(self, subprotocols: List[str]) -> Optional[str]:
            return SUBPROTOCOL if SUBPROTOCOL in subprotocols else None

        def get_compression_options(self) -> Dict[str, Any]:
            return {}  # accept permessage-deflate

        def on_message(self, message: Any) -> None:
            self.write_message(message, binary=isinstance(message, bytes))
            if self.request.path == CLOSE_PATH:
                self.close(CLOSE_CODE, CLOSE_REASON)

    class Runner:
        def __init__(self, server: Any) -> None:
            self.server = server

        async def cleanup(self) -> None:
            self.server.stop()

    async def setup() -> Tuple[Any, int]:
        from tornado.netutil import bind_sockets

        app = web.Application([(r"/.*", Echo)], websocket_max_message_size=1 << 22)
        sockets = bind_sockets(0, "127.0.0.1")
        from tornado.httpserver import HTTPServer

        server = HTTPServer(app, ssl_options=context)
        server.add_sockets(sockets)
        return Runner(server), sockets[0].getsockname()[1]

    return _LoopServer(setup)


def _url(scheme_host: Callable[[Any], Tuple[bool, int]]) -> Callable[[Any, str], str]:
    def url(server: Any, path: str) -> str:
        secure, port = scheme_host(server)
        return f"{'wss://localhost' if secure else 'ws://127.0.0.1'}:{port}{path}"

    return url


def _secure(server: Any) -> bool:
    return bool(getattr(server, "interop_secure", False))


ALL_FEATURES = ("deflate", "subprotocol", "tls", "proxy")

SERVERS: Tuple[Server, ...] = (
    Server("websockets-asyncio", "websockets (asyncio)", "websockets", ALL_FEATURES,
           _ws_asyncio_start, lambda s: s.stop(), lambda s, path: s.url_for(path)),
    Server("websockets-sync", "websockets (sync)", "websockets", ALL_FEATURES,
           _ws_sync_start, lambda s: s.shutdown(),
           _url(lambda s: (_secure(s), _socket_port(s)))),
    Server("aiohttp", "aiohttp", "aiohttp", ALL_FEATURES,
           _aiohttp_start, lambda s: s.stop(), _url(lambda s: (_secure(s), s.port))),
    Server("tornado", "tornado", "tornado", ALL_FEATURES,
           _tornado_start, lambda s: s.stop(), _url(lambda s: (_secure(s), s.port))),
    Server("lomond-local", "lomond.testing.LocalServer", "lomond", ("deflate", "proxy"),
           _local_start, lambda s: s.stop(), lambda s, path: s.url.rstrip("/") + path),
)
SERVER_NAMES = tuple(server.name for server in SERVERS)


# ---------------------------------------------------------------------------
# Running cells
# ---------------------------------------------------------------------------


def _run_threaded(url: str, options: Dict[str, Any], check: Check) -> List[events.Event]:
    websocket = WebSocket(url, **options)
    found: List[events.Event] = []
    watchdog = threading.Timer(CELL_TIMEOUT, websocket.force_disconnect)
    watchdog.daemon = True
    watchdog.start()
    try:
        for event in websocket.connect(ping_rate=0, close_timeout=5, connect_timeout=5,
                                       handshake_timeout=5):
            found.append(event)
            if isinstance(event, events.Ready):
                check.ready(websocket, event)
            else:
                check.event(websocket, event, found)
    finally:
        watchdog.cancel()
    return found


def _run_hub(hub: Hub, url: str, options: Dict[str, Any], check: Check) -> List[events.Event]:
    app = WebSocketApp(url, error_policy="log", **options)
    found: List[events.Event] = []

    @app.on("*")
    def record(event: events.Event) -> None:
        found.append(event)
        if isinstance(event, events.Ready):
            check.ready(app, event)
        else:
            check.event(app, event, found)

    hub.add(app, ping_rate=0, close_timeout=5, connect_timeout=5, handshake_timeout=5)
    if app.join(CELL_TIMEOUT) is None:
        app.stop(5)
        found.append(events.Disconnected("timed out: the interop cell was stopped", False))
    return list(found)


def _run_asyncio(url: str, options: Dict[str, Any], check: Check) -> List[events.Event]:
    app = WebSocketApp(url, error_policy="log", **options)
    found: List[events.Event] = []

    @app.on("*")
    def record(event: events.Event) -> None:
        found.append(event)
        if isinstance(event, events.Ready):
            check.ready(app, event)  # a handler's sends work as in the other drivers
        else:
            check.event(app, event, found)

    async def run() -> None:
        try:
            await asyncio.wait_for(
                app.run_async(ping_rate=0, close_timeout=5, connect_timeout=5,
                              handshake_timeout=5),
                CELL_TIMEOUT,
            )
        except asyncio.TimeoutError:
            found.append(events.Disconnected("timed out: the interop cell was cancelled", False))

    asyncio.run(run())
    return found


@dataclass
class Cell:
    """The result of one cell: ``error`` is ``None`` when it passed."""

    server: str
    check: str
    driver: str
    error: Optional[str]
    seconds: float


class Matrix:
    """Every server (that is installed), a TLS bundle, a proxy, and one hub.

    ``with Matrix() as matrix: matrix.run(server, check, driver)``.
    """

    def __init__(self, workdir: Optional[Path] = None) -> None:
        self._own = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lomond-interop-"))
        self.servers: Dict[Tuple[str, bool, bool], Any] = {}
        self.tls: Optional[TLSBundle] = None
        self.proxy: Optional[ProxyServer] = None
        self.hub: Optional[Hub] = None
        self._errors: Dict[Tuple[str, bool, bool], str] = {}

    def __enter__(self) -> Matrix:
        self.tls = make_bundle(self.workdir / "tls")
        self.hub = Hub(name="interop-hub")
        self.hub.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for (name, _, _), server in self.servers.items():
            with contextlib.suppress(Exception):
                by_name(name).stop(server)
        if self.proxy is not None:
            self.proxy.stop()
        if self.hub is not None:
            self.hub.stop(10)

    def supports(self, server: str, check: str) -> bool:
        feature = by_check(check).feature
        return feature is None or feature in by_name(server).features

    def _server(self, name: str, secure: bool, subprotocol: bool) -> Any:
        key = (name, secure, subprotocol)
        if key in self._errors:
            raise RuntimeError(self._errors[key])
        if key not in self.servers:
            assert self.tls is not None
            context = self.tls.server_context() if secure else None
            try:
                server = by_name(name).start(context, subprotocol)
            except Exception as error:
                self._errors[key] = f"could not start {name}: {type(error).__name__}: {error}"
                raise RuntimeError(self._errors[key]) from None
            server.interop_secure = secure
            self.servers[key] = server
        return self.servers[key]

    def _proxy(self) -> ProxyServer:
        if self.proxy is None:
            self.proxy = ProxyServer(workdir=self.workdir / "proxy").start()
        return self.proxy

    def run(self, server: str, check: str, driver: str) -> Cell:
        """Run one cell; its :class:`Cell` (never raises for a failing cell)."""
        started = time.monotonic()
        spec = by_check(check)
        error: Optional[str]
        try:
            secure = spec.feature == "tls"
            instance = self._server(server, secure, spec.feature == "subprotocol")
            options: Dict[str, Any] = {"proxies": {}, **spec.options}
            if secure:
                assert self.tls is not None
                options["ssl_context"] = self.tls.client_context()
            if spec.feature == "proxy":
                proxy = self._proxy().url
                options["proxies"] = {"http": proxy, "https": proxy}
            url = by_name(server).url(instance, spec.path)
            if driver == "threaded":
                found = _run_threaded(url, options, spec)
            elif driver == "asyncio":
                found = _run_asyncio(url, options, spec)
            else:
                assert self.hub is not None
                found = _run_hub(self.hub, url, options, spec)
            error = spec.verify(found)
        except Exception as exc:  # the harness's own failure: shown in the cell
            error = f"{type(exc).__name__}: {exc}"
        return Cell(server, check, driver, error, time.monotonic() - started)

    def run_all(self, servers: Optional[List[str]] = None) -> List[Cell]:
        cells = []
        for server in SERVERS:
            if servers is not None and server.name not in servers:
                continue
            if not server.available():
                continue
            for check in CHECKS:
                if not self.supports(server.name, check.name):
                    continue
                for driver in DRIVERS:
                    cells.append(self.run(server.name, check.name, driver))
        return cells


def by_name(name: str) -> Server:
    return next(server for server in SERVERS if server.name == name)


def by_check(name: str) -> Check:
    return next(check for check in CHECKS if check.name == name)


@contextlib.contextmanager
def matrix() -> Iterator[Matrix]:
    with Matrix() as running:
        yield running


if __name__ == "__main__":  # a quick look: python tests/compliance/interop.py
    with Matrix() as m:
        for cell in m.run_all(sys.argv[1:] or None):
            mark = "ok" if cell.error is None else f"FAILED: {cell.error}"
            print(f"{cell.server:20} {cell.check:14} {cell.driver:9} {mark}", flush=True)
    os._exit(0)
