"""A real HTTP CONNECT proxy on loopback: the ``proxy.py`` package in a subprocess.

:class:`ProxyServer` starts ``python -m proxy`` on 127.0.0.1 with an
ephemeral port (read back from ``--port-file``), optionally with Basic auth
(``--basic-auth user:pass``: requests without the right
``Proxy-Authorization`` get ``407``).

To prove traffic really went through the proxy, the subprocess loads
:class:`ConnectRecorder`, a proxy.py plugin defined here, which appends one
JSON line per tunnel it opens to a file *before* connecting upstream;
:meth:`ProxyServer.connects` reads them back. (proxy.py's own access log is
only written when a tunnel closes, too late for most assertions.)

The plugin class is created lazily (module ``__getattr__``) so importing this
module in the test process doesn't import proxy.py (~0.1 s); the subprocess
finds it as ``peers.proxy.ConnectRecorder`` because ``tests/`` is put on its
PYTHONPATH.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

DEFAULT_TIMEOUT = 10.0
TESTS_DIR = Path(__file__).resolve().parent.parent
RECORD_ENV = "LOMOND_TEST_PROXY_RECORD"
#: Credentials of the ``http_proxy_auth`` fixture's proxy.
PROXY_USER = "lomond"
PROXY_PASSWORD = "s3cret"


#: Proxies started and not yet stopped, so nothing outlives the test run.
_LIVE: set[ProxyServer] = set()


def stop_all() -> None:
    """Stop every running ProxyServer (atexit, and the hang guard before _exit)."""
    for proxy in list(_LIVE):
        proxy.stop(timeout=2.0)


atexit.register(stop_all)


@dataclass(frozen=True)
class ProxiedConnect:
    """One tunnel the proxy opened (only requests that passed auth get here)."""

    method: str
    host: str
    port: int
    authorized: bool  # a Proxy-Authorization header was present

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def _make_recorder() -> type:
    """Build the proxy.py plugin class (runs inside the proxy subprocess)."""
    from proxy.http.parser import HttpParser
    from proxy.http.proxy import HttpProxyBasePlugin

    class ConnectRecorder(HttpProxyBasePlugin):
        """Append one JSON line per upstream connection about to be opened."""

        def resolve_dns(self, host: str, port: int) -> Tuple[Optional[str], None]:
            # proxy.py 2.4.10 passes "CONNECT [::1]:PORT"'s host on with its
            # brackets, which getaddrinfo can't resolve (502). Hand it the bare
            # IPv6 literal; everything else goes to the default resolver.
            if host.startswith("[") and host.endswith("]"):
                return host[1:-1], None
            return None, None

        def before_upstream_connection(self, request: HttpParser) -> Optional[HttpParser]:
            path = os.environ.get(RECORD_ENV)
            if path:
                headers = request.headers or {}
                entry = {
                    "method": (request.method or b"").decode("latin-1"),
                    "host": (request.host or b"").decode("latin-1"),
                    "port": request.port,
                    "authorized": b"proxy-authorization" in headers,
                }
                with open(path, "a", encoding="utf-8") as record:
                    record.write(json.dumps(entry) + "\n")
            return request

    return ConnectRecorder


def __getattr__(name: str) -> Any:
    # PEP 562 hook: proxy.py resolves "--plugins peers.proxy.ConnectRecorder"
    # with getattr() on this module, which lands here.
    if name == "ConnectRecorder":
        recorder = _make_recorder()
        globals()[name] = recorder
        return recorder
    raise AttributeError(name)


def _serves_http(host: str, port: int) -> bool:
    """True once proxy.py answers a request (not just once its socket listens).

    The listening socket exists before the acceptor process runs; stopping
    the proxy in that window used to orphan the acceptor. ``GET /`` without
    a proxy target is answered 400 and opens no tunnel, so it is not recorded.
    """
    try:
        with socket.create_connection((host, port), timeout=0.5) as probe:
            probe.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\n\r\n")
            return probe.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


class ProxyServer:
    """proxy.py running as a subprocess on a loopback port."""

    def __init__(
        self,
        auth: Optional[Tuple[str, str]] = None,
        host: str = "127.0.0.1",
        workdir: Optional[Path] = None,
        startup_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.auth = auth
        self.host = host
        self.port = 0
        self.startup_timeout = startup_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp())
        self.record_file = self.workdir / "connects.jsonl"
        self.log_file = self.workdir / "proxy.log"
        self.output_file = self.workdir / "proxy.out"
        self.startup_seconds: Optional[float] = None
        self._process: Optional[subprocess.Popen[bytes]] = None

    # -- addresses -----------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url_with_auth(self) -> str:
        """``http://user:pass@127.0.0.1:PORT``; same as :attr:`url` without auth."""
        if self.auth is None:
            return self.url
        user, password = self.auth
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{user}:{password}@{host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> ProxyServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / "port"
        for stale in (port_file, self.record_file):
            if stale.exists():
                stale.unlink()
        self.record_file.touch()
        command = [
            sys.executable,
            "-m",
            "proxy",
            "--hostname", self.host,
            "--port", "0",
            "--port-file", str(port_file),
            # One acceptor process with its in-process executor: the least
            # there is to start and to tear down on a 2-core machine.
            "--num-acceptors", "1",
            "--num-workers", "1",
            "--log-file", str(self.log_file),
            "--log-level", "INFO",
            # Idle tunnels must outlive slow tests (default 10 s).
            "--timeout", "60",
            "--plugins", "peers.proxy.ConnectRecorder",
        ]  # fmt: skip
        if self.auth is not None:
            command += ["--basic-auth", "{}:{}".format(*self.auth)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(TESTS_DIR), env.get("PYTHONPATH")) if part
        )
        env[RECORD_ENV] = str(self.record_file)
        started = time.monotonic()
        with open(self.output_file, "wb") as output:
            # Own process group: proxy.py forks an acceptor, and stop() must
            # reach it too without touching anything else.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            self._wait_ready(port_file, started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, port_file: Path, started: float) -> None:
        assert self._process is not None
        deadline = started + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"proxy.py exited with {self._process.returncode}: {self.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"proxy.py not ready after {self.startup_timeout}s: {self.output()}"
                )
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                self.port = int(text.split()[0])
                if _serves_http(self.host, self.port):
                    return
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        _LIVE.discard(self)
        if process is not None and process.poll() is None:
            # SIGINT to the group: the acceptor exits on KeyboardInterrupt at
            # once (SIGTERM would make the parent wait out its 1 s select).
            try:
                os.killpg(process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        if process is not None:
            # Sweep the group: an acceptor that missed the SIGINT (or lost its
            # parent) must not outlive the tests. The group is the proxy's
            # own session, so nothing else is in it.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ProxyServer:
        return self.start() if self._process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- evidence --------------------------------------------------------------
    def output(self) -> str:
        """proxy.py's stdout/stderr and log, for error messages."""
        parts = []
        for path in (self.output_file, self.log_file):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def connects(self) -> List[ProxiedConnect]:
        """Every tunnel/upstream connection opened so far, oldest first."""
        if not self.record_file.exists():
            return []
        entries = []
        for line in self.record_file.read_text().splitlines():
            if line.strip():
                data = json.loads(line)
                entries.append(
                    ProxiedConnect(
                        data["method"], data["host"], int(data["port"]), data["authorized"]
                    )
                )
        return entries

    def mark(self) -> int:
        """A position in :meth:`connects`, for "since this point" checks with a shared proxy."""
        return len(self.connects())

    def wait_for_connect(
        self, port: Optional[int] = None, since: int = 0, timeout: float = 5.0
    ) -> ProxiedConnect:
        """Wait for a recorded tunnel (to ``port`` if given) after position ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.connects()[since:]:
                if port is None or entry.port == port:
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no CONNECT{f' to port {port}' if port else ''} through {self.url} "
                    f"after {timeout}s; seen: {self.connects()}"
                )
            time.sleep(0.01)
