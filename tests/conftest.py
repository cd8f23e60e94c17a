"""Shared fixtures: real peers on loopback for the integration tests.

Fixtures (function scope unless noted):

* ``tls`` (session): :class:`peers.tls.TLSBundle`, CAs, certs, contexts, files.
* ``ws_server``: a started :class:`peers.ws_server.WSServer` on 127.0.0.1.
* ``wss_server``: the same over TLS with the session CA's cert (``wss://localhost:PORT``).
* ``ws_server_factory(**kwargs)``: start a custom WSServer (``host="::1"``,
  ``extensions=[deflate(...)]``, ``subprotocols=[...]``, ``ssl_context=...``).
* ``scripted_server(script=None, tls=False, **kwargs)``: start a
  :class:`peers.raw_server.ScriptedServer`; ``tls=True`` uses the session
  cert, or pass an ``ssl.SSLContext``. Script errors fail the test at teardown.
* ``http_proxy`` / ``http_proxy_auth`` (session): proxy.py subprocesses,
  the latter requiring ``PROXY_USER``/``PROXY_PASSWORD``.
* ``no_proxy_env`` (autouse): every ``*_proxy`` variable (any case) is removed
  from the environment, so a developer's proxy settings cannot reroute
  loopback test traffic; a test that needs one sets it with ``monkeypatch``.
* ``masking``: runs a test once per masking implementation.
* ``loop_factory``: runs a test once per event loop, asyncio's own and
  uvloop's (skipped where uvloop is not installed); pass it to
  ``core_helpers.run_async``.

Plain helpers (``collect``, ``exchange``, ``names``, ``first``, ``later``,
``wait_for``, ``refused_port``, ...) live in ``core_helpers.py``.

Every fixture stops its peers at teardown, and every wait has a timeout.
As a last resort a hang guard aborts the run with all thread stacks when one
test takes longer than ``@pytest.mark.hang_timeout(seconds)``, the
``LOMOND_TEST_HANG_TIMEOUT`` environment variable, or 120 s (600 s for
``@pytest.mark.slow``), so CI fails loudly instead of idling until it is killed.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import ssl
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Union

import pytest

# tests/ has no __init__.py (test modules are rootdir-relative), so make the
# support package importable as "peers" explicitly rather than relying on
# pytest's sys.path insertion for conftest directories.
TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from speedups_build import ensure_built  # noqa: E402

# Before the first import of lomond: a source tree has no compiled extension,
# and without one the C masking path would silently go untested.
BUILD_NOTE = ensure_built()

from peers.proxy import PROXY_PASSWORD, PROXY_USER, ProxyServer  # noqa: E402
from peers.proxy import stop_all as stop_all_proxies  # noqa: E402
from peers.raw_server import Script, ScriptedServer  # noqa: E402
from peers.tls import TLSBundle, make_bundle  # noqa: E402
from peers.ws_server import WSServer  # noqa: E402

from lomond import accel  # noqa: E402

DEFAULT_HANG_TIMEOUT = 120.0
SLOW_HANG_TIMEOUT = 600.0


def pytest_report_header(config: pytest.Config) -> List[str]:
    """Say which masking implementations the run covers (and why C is missing, if it is)."""
    lines = [
        f"lomond masking: {', '.join(sorted(accel.IMPLEMENTATIONS))} "
        f"(default {accel.IMPLEMENTATION})"
    ]
    if BUILD_NOTE:
        lines.append(BUILD_NOTE)
    return lines


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hang_timeout(seconds): abort the run if this test runs longer"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Skip ``slow`` tests unless ``LOMOND_SLOW=1`` (``.ci/run`` sets it).

    The default run stays a few minutes on two cores; CI, which has the
    budget, runs the soak too.
    """
    if os.environ.get("LOMOND_SLOW", "") not in ("", "0"):
        return
    skip = pytest.mark.skip(reason="slow: set LOMOND_SLOW=1 to run it")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


def _abort_hung_run(config: pytest.Config, nodeid: str, limit: float) -> None:
    """Timer callback: print every thread's stack where it can be seen, then exit."""
    # The output must reach the real stderr, not pytest's capture (which is
    # thrown away when the process exits without finishing the test).
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    sys.stderr.write(f"\n*** {nodeid} still running after {limit:g}s: aborting the run ***\n")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    stop_all_proxies()  # own process groups: _exit would orphan them
    os._exit(70)


@pytest.fixture(autouse=True)
def _hang_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("hang_timeout")
    if marker is not None:
        limit = float(marker.args[0])
    elif os.environ.get("LOMOND_TEST_HANG_TIMEOUT"):
        limit = float(os.environ["LOMOND_TEST_HANG_TIMEOUT"])
    elif request.node.get_closest_marker("slow") is not None:
        limit = SLOW_HANG_TIMEOUT
    else:
        limit = DEFAULT_HANG_TIMEOUT
    # A hung socket test would otherwise burn the whole CI budget and say
    # nothing about where it hung.
    timer = threading.Timer(
        limit, _abort_hung_run, args=(request.config, request.node.nodeid, limit)
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy variables in the environment must not reroute loopback test traffic."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


# -- masking implementations ---------------------------------------------------


@pytest.fixture(params=sorted(accel.IMPLEMENTATIONS))
def masking(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per masking implementation (pure Python, wsaccel, C), then restore."""
    previous = accel.IMPLEMENTATION
    accel.use(request.param)
    try:
        yield request.param
    finally:
        accel.use(previous)


# -- event loops ---------------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-loop factory: asyncio's default loop, then uvloop's (if installed)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


# -- TLS ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSBundle:
    return make_bundle(tmp_path_factory.mktemp("tls"))


# -- WebSocket servers -----------------------------------------------------------

WSServerFactory = Callable[..., WSServer]


@pytest.fixture
def ws_server_factory() -> Iterator[WSServerFactory]:
    servers: List[WSServer] = []

    def start(**kwargs: Any) -> WSServer:
        server = WSServer(**kwargs)
        servers.append(server)
        return server.start()

    yield start
    errors: List[BaseException] = []
    for server in servers:
        server.stop()
        errors.extend(server.errors)
    if errors:
        raise errors[0]


@pytest.fixture
def ws_server(ws_server_factory: WSServerFactory) -> WSServer:
    return ws_server_factory()


@pytest.fixture
def wss_server(ws_server_factory: WSServerFactory, tls: TLSBundle) -> WSServer:
    return ws_server_factory(ssl_context=tls.server_context())


# -- scripted raw server -----------------------------------------------------------

ScriptedServerFactory = Callable[..., ScriptedServer]


@pytest.fixture
def scripted_server(tls: TLSBundle) -> Iterator[ScriptedServerFactory]:
    servers: List[ScriptedServer] = []

    def start(
        script: Optional[Script] = None,
        tls: Union[bool, ssl.SSLContext] = False,
        **kwargs: Any,
    ) -> ScriptedServer:
        if tls is True:
            kwargs["ssl_context"] = bundle.server_context()
        elif isinstance(tls, ssl.SSLContext):
            kwargs["ssl_context"] = tls
        server = ScriptedServer(script, **kwargs)
        servers.append(server)
        return server.start()

    bundle = tls
    yield start
    for server in servers:
        server.stop()
    for server in servers:
        server.check()


# -- HTTP CONNECT proxies ------------------------------------------------------------
# Session-scoped: each is a subprocess (about 0.15 s to start); tests that
# need to know their own traffic went through take ``proxy.mark()`` first.


@pytest.fixture(scope="session")
def http_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    proxy = ProxyServer(workdir=tmp_path_factory.mktemp("proxy"))
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def http_proxy_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    proxy = ProxyServer(
        auth=(PROXY_USER, PROXY_PASSWORD), workdir=tmp_path_factory.mktemp("proxy-auth")
    )
    proxy.start()
    yield proxy
    proxy.stop()
