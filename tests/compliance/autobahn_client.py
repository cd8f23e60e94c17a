#!/usr/bin/env python3
"""Run the Autobahn WebSocket client test suite against lomond (or a stand-in).

The suite is served by the ``kosoku`` package's fuzzing server (a Rust
re-implementation of Autobahn's ``fuzzingserver`` that runs the original case
files).  This script:

1. starts that server in a child process on ``127.0.0.1`` with a free port,
   serving the selected cases (``--cases`` / ``--exclude``, Autobahn globs);
2. has the client under test fetch ``/getCaseCount``, then for every case N
   connect to ``/runCase?case=N&agent=AGENT`` and echo every text and binary
   message back with the same type, and finally connect to ``/updateReports``;
3. collects kosoku's per-case verdicts, prints a summary (counts per case
   group and behaviour, every non-passing case with what was expected and what
   was observed) and writes it as Markdown (``<out>/summary.md``; with
   ``--update-docs`` also the matching section of ``docs/conformance.md``);
4. exits 1 if any case is FAILED, UNIMPLEMENTED or ERROR, if a case is
   missing from the results (incomplete run), or if a case hit the
   harness's own per-case timeout.

Usage::

    python tests/compliance/autobahn_client.py                      # whole suite, lomond
    python tests/compliance/autobahn_client.py --cases '1.*,2.*'    # a selection
    python tests/compliance/autobahn_client.py --client websocket-client
    python tests/compliance/autobahn_client.py --update-docs        # refresh docs/conformance.md

Case numbers map to case ids the way kosoku numbers them: the cases of
``kosoku.cases.CASES`` (numeric id order) that match the selection, where an
entry with ``*`` is a regular-expression prefix match (``.`` literal, ``*`` any
text: Autobahn's rule, so ``6.1*`` also selects ``6.10.x``) and any other entry
must be an exact case id.  The driver checks its mapping against the server's
case count and against the ids in the results.

Compression offers: outside 13.x the client offers its default
permessage-deflate (lomond ``compress=True``).  The 13.x cases only accept an
offer carrying the parameters their server-side accept function looks for, so
for those the client sends, per case, the offers kosoku's own client side of
that case sends (``CASES[id].CLIENT_OFFERS``, translated to ``PerMessageDeflate``
arguments); see ``docs/conformance.md``.

Loopback only: the server binds 127.0.0.1 and the clients connect there.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_OUT = REPO / "reports" / "autobahn"
DOCS_FILE = REPO / "docs" / "conformance.md"

#: Verdicts (kosoku ``Behavior.value``, Autobahn's labels) that count as passing.
PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
#: Verdicts that fail the run.
FAILING = ("FAILED", "UNIMPLEMENTED", "ERROR")
BEHAVIOURS = PASSING + FAILING
#: Closing-handshake verdicts that are shown but do not fail the run (the
#: issue's criterion is the case verdict; Autobahn shows the close verdict in a
#: separate, secondary column).
CLOSE_OK = ("OK", "INFORMATIONAL")

#: Autobahn's names for the case groups.
GROUP_NAMES = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc",
    "12": "WebSocket Compression (different payloads)",
    "13": "WebSocket Compression (different parameters)",
}

#: The selection CI runs on every submission (``--ci``): every case of the
#: framing, ping, reserved-bit, opcode, fragmentation, UTF-8, close and misc
#: groups, the quick limits cases, and a few compression cases covering each
#: 12.x payload kind and each 13.x parameter set (plain and auto-fragmented).
CI_SUBSET = [
    "1.*",
    "2.*",
    "3.*",
    "4.*",
    "5.*",
    "6.*",
    "7.*",
    "9.1.1",
    "9.1.2",
    "9.1.3",
    "9.2.1",
    "9.2.2",
    "9.2.3",
    "9.3.9",
    "9.4.9",
    "9.5.1",
    "9.6.1",
    "9.7.1",
    "9.8.1",
    "10.*",
    "12.1.1",
    "12.1.11",
    "12.2.1",
    "12.3.1",
    "12.4.1",
    "12.5.1",
    *[f"13.{g}.{i}" for g in range(1, 8) for i in (1, 11)],
]

#: Seconds the harness gives one case before it drops the connection.  The
#: slowest cases (12.x/13.x: 1000 messages of up to 128 KiB, compressed both
#: ways) take a few seconds; kosoku's own per-case limits are 60-480 s.
DEFAULT_CASE_TIMEOUT = 120.0

#: Seconds the lomond testee waits for the server to answer a close it sent.
CLOSE_TIMEOUT = 5.0


def case_sort_key(case_id: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


# ---------------------------------------------------------------------------
# Case selection: the same rules kosoku (and Autobahn) apply.
# ---------------------------------------------------------------------------


def all_case_ids() -> List[str]:
    """Every case id kosoku knows, in the order it serves them."""
    from kosoku.cases import CASES

    return sorted(CASES, key=case_sort_key)


def _pattern_matches(pattern: str, case_id: str) -> bool:
    if "*" in pattern:
        regex = re.escape(pattern).replace(r"\*", ".*")
        return re.match(regex, case_id) is not None
    return pattern == case_id


def select_cases(
    cases: Optional[Sequence[str]], exclude: Optional[Sequence[str]] = None
) -> List[str]:
    """Case ids served for ``cases``/``exclude``, in serving order.

    Raises ``ValueError`` for an exact id that does not exist (as kosoku does).
    """
    known = all_case_ids()
    known_set = set(known)
    for pattern in list(cases or []) + list(exclude or []):
        if "*" not in pattern and pattern not in known_set:
            raise ValueError(f"no such case: {pattern}")
    if cases:
        chosen = [c for c in known if any(_pattern_matches(p, c) for p in cases)]
    else:
        chosen = list(known)
    if exclude:
        chosen = [c for c in chosen if not any(_pattern_matches(p, c) for p in exclude)]
    return chosen


def split_patterns(values: Optional[Sequence[str]]) -> Optional[List[str]]:
    """``["1.*,2.*", "9.1.1"]`` -> ``["1.*", "2.*", "9.1.1"]`` (None stays None)."""
    if not values:
        return None
    out = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return out or None


# ---------------------------------------------------------------------------
# Per-case compression offers
# ---------------------------------------------------------------------------

#: A permessage-deflate offer, as ``lomond.PerMessageDeflate`` keyword arguments
#: (``client_max_window_bits``: True = the parameter without a value, None =
#: omitted, int = a value; ``server_max_window_bits``: None = omitted).
Offer = Dict[str, Any]
#: ``"default"``: the client's own default offer (lomond ``compress=True``);
#: ``None``: no offer; a list: these offers, in preference order.
OfferSpec = Union[str, None, List[Offer]]


def offers_for_case(case_id: str) -> OfferSpec:
    """The compression offer(s) the client makes for ``case_id``.

    13.x: the offers of kosoku's client side of the same case (its
    ``CLIENT_OFFERS``, Autobahn ``PerMessageDeflateOffer`` objects), so the
    server-side accept function of every 13.x case finds what it requires.
    Everything else: the client's default offer.
    """
    if not case_id.startswith("13."):
        return "default"
    from kosoku.cases import CASES

    offers: List[Offer] = []
    for o in CASES[case_id].CLIENT_OFFERS:
        offers.append(
            {
                "client_no_context_takeover": bool(o.acceptNoContextTakeover),
                "server_no_context_takeover": bool(o.requestNoContextTakeover),
                "client_max_window_bits": True if o.acceptMaxWindowBits else None,
                "server_max_window_bits": int(o.requestMaxWindowBits) or None,
            }
        )
    return offers


def offer_header(offer: Offer) -> str:
    """The ``Sec-WebSocket-Extensions`` element an offer produces (for the docs)."""
    parts = ["permessage-deflate"]
    if offer.get("client_no_context_takeover"):
        parts.append("client_no_context_takeover")
    if offer.get("server_no_context_takeover"):
        parts.append("server_no_context_takeover")
    cmwb = offer.get("client_max_window_bits")
    if cmwb is True:
        parts.append("client_max_window_bits")
    elif cmwb:
        parts.append(f"client_max_window_bits={cmwb}")
    smwb = offer.get("server_max_window_bits")
    if smwb is True:
        parts.append("server_max_window_bits")
    elif smwb:
        parts.append(f"server_max_window_bits={smwb}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Testees: one function per client library.  Switching the harness to another
# client means adding one function here.
# ---------------------------------------------------------------------------


class CaseHandle:
    """Lets the supervisor drop a testee's connection from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abort: Optional[Callable[[], None]] = None
        self.aborted = False

    def on_abort(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._abort = fn
            aborted = self.aborted
        if aborted:
            fn()

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            fn = self._abort
        if fn is not None:
            try:
                fn()
            except Exception:
                pass


#: ``testee(url, offers, echo, handle) -> texts``: connect to ``url``; if
#: ``echo``, send every text/binary message back with the same type, until the
#: connection ends; return the text messages received.  Exceptions propagate
#: (the supervisor records them; the verdict is kosoku's).
Testee = Callable[[str, OfferSpec, bool, CaseHandle], List[str]]


def _lomond_compress(offers: OfferSpec) -> Any:
    """``WebSocket(compress=...)`` for a case's offers."""
    from lomond import PerMessageDeflate

    if offers == "default":
        return True
    if not offers:
        return False
    return [PerMessageDeflate(**offer) for offer in offers]  # type: ignore[union-attr]


def testee_lomond(url: str, offers: OfferSpec, echo: bool, handle: CaseHandle) -> List[str]:
    from lomond import WebSocket

    ws = WebSocket(url, compress=_lomond_compress(offers), proxies={})
    handle.on_abort(ws.force_disconnect)
    texts: List[str] = []
    for event in ws.connect(ping_rate=0, poll=1.0, close_timeout=CLOSE_TIMEOUT):
        name = event.name
        if name == "text":
            texts.append(event.text)
            if echo:
                ws.send_text(event.text)
        elif name == "binary":
            if echo:
                ws.send_binary(event.data)
    return texts


_hub: Any = None
_hub_lock = threading.Lock()


def _shared_hub() -> Any:
    """One Hub for every case of a run (started on first use), as a hub serves many apps."""
    global _hub
    from lomond.handlers import Hub

    with _hub_lock:
        if _hub is None:
            # Echoing a 16 MiB message takes the hub's thread a while: not a slow handler.
            _hub = Hub(name="autobahn-hub", slow_handler=None)
            _hub.start()
        return _hub


def testee_lomond_hub(url: str, offers: OfferSpec, echo: bool, handle: CaseHandle) -> List[str]:
    """The same testee as :func:`testee_lomond`, run by a ``WebSocketApp`` on a shared Hub."""
    from lomond import events
    from lomond.errors import WebSocketUnavailable
    from lomond.handlers import WebSocketApp

    app = WebSocketApp(url, compress=_lomond_compress(offers), proxies={})
    texts: List[str] = []

    @app.on("text")
    def on_text(event: events.Text) -> None:
        texts.append(event.text)
        if echo:
            try:
                app.send_text(event.text)
            except WebSocketUnavailable:
                pass  # closing: kosoku judges what was sent

    @app.on("binary")
    def on_binary(event: events.Binary) -> None:
        if echo:
            try:
                app.send_binary(event.data)
            except WebSocketUnavailable:
                pass

    handle.on_abort(app.websocket.force_disconnect)
    _shared_hub().add(app, ping_rate=0, poll=0, close_timeout=CLOSE_TIMEOUT)
    outcome = app.join()
    if outcome is not None and outcome.error is not None:
        raise outcome.error
    return texts


def testee_websocket_client(
    url: str, offers: OfferSpec, echo: bool, handle: CaseHandle
) -> List[str]:
    # websocket-client has no permessage-deflate: ``offers`` cannot be honoured.
    import websocket
    from websocket import ABNF

    ws = websocket.WebSocket(enable_multithread=True)
    handle.on_abort(ws.abort)
    ws.connect(url, timeout=30)
    ws.settimeout(None)
    texts: List[str] = []
    try:
        while True:
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketConnectionClosedException:
                break
            if opcode == ABNF.OPCODE_CLOSE:
                # recv_data() has already answered the close; let the server
                # drop the TCP connection first, as RFC 6455 section 7.1.1 prefers.
                ws.sock.settimeout(2.0)
                try:
                    while ws.sock.recv(4096):
                        pass
                except OSError:
                    pass
                break
            if opcode == ABNF.OPCODE_TEXT:
                text = data.decode("utf-8")
                texts.append(text)
                if echo:
                    ws.send(text)
            elif opcode == ABNF.OPCODE_BINARY and echo:
                ws.send_binary(data)
    finally:
        ws.shutdown()
    return texts


def testee_websockets(url: str, offers: OfferSpec, echo: bool, handle: CaseHandle) -> List[str]:
    from websockets.exceptions import ConnectionClosed
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.sync.client import connect

    kwargs: Dict[str, Any] = {}
    if offers == "default":
        kwargs["compression"] = "deflate"
    elif not offers:
        kwargs["compression"] = None
    else:
        kwargs["compression"] = None
        kwargs["extensions"] = [ClientPerMessageDeflateFactory(**o) for o in offers]  # type: ignore[union-attr]
    texts: List[str] = []
    with connect(
        url,
        max_size=None,
        ping_interval=None,
        close_timeout=CLOSE_TIMEOUT,
        proxy=None,
        open_timeout=30,
        **kwargs,
    ) as ws:
        handle.on_abort(lambda: ws.socket.shutdown(socket.SHUT_RDWR))
        try:
            for message in ws:
                if isinstance(message, str):
                    texts.append(message)
                if echo:
                    ws.send(message)
        except ConnectionClosed:
            pass
    return texts


def testee_lomond_asyncio(
    url: str, offers: OfferSpec, echo: bool, handle: CaseHandle
) -> List[str]:
    """The same testee as :func:`testee_lomond`, on asyncio (``lomond.asyncio.WebSocket``)."""
    import asyncio

    from lomond.asyncio import WebSocket

    async def run() -> List[str]:
        ws = WebSocket(url, compress=_lomond_compress(offers), proxies={})
        handle.on_abort(ws.force_disconnect)  # from the supervisor's thread
        texts: List[str] = []
        async for event in ws.connect(ping_rate=0, poll=1.0, close_timeout=CLOSE_TIMEOUT):
            name = event.name
            if name == "text":
                texts.append(event.text)  # type: ignore[attr-defined]
                if echo:
                    await ws.send_text(event.text)  # type: ignore[attr-defined]
            elif name == "binary" and echo:
                await ws.send_binary(event.data)  # type: ignore[attr-defined]
        return texts

    return asyncio.run(run())


TESTEES: Dict[str, Testee] = {
    "lomond": testee_lomond,
    "lomond-hub": testee_lomond_hub,
    "lomond-asyncio": testee_lomond_asyncio,
    "websocket-client": testee_websocket_client,
    "websockets": testee_websockets,
}


# ---------------------------------------------------------------------------
# The fuzzing server, in a child process
# ---------------------------------------------------------------------------


def _jsonable(value: Any, limit: int = 2000) -> Any:
    """Results' ``expected``/``received`` carry bytes; make them JSON text."""
    if isinstance(value, bytes):
        if len(value) > 64:
            return f"<{len(value)} bytes> " + value[:64].hex() + " ..."
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + value.hex()
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f" ...<{len(value)} chars>"
    if isinstance(value, dict):
        return {str(k): _jsonable(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, limit) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return repr(value)


def result_to_dict(r: Any) -> Dict[str, Any]:
    """A ``kosoku`` ``CaseResult`` as a JSON-able dict (the wire log left out)."""
    return {
        "case": r.case_index,
        "id": r.case_id,
        "agent": r.agent,
        "behavior": r.behavior.value,
        "behaviorClose": r.behavior_close.value,
        "result": r.result,
        "resultClose": r.result_close,
        "description": r.description,
        "expectation": r.expectation,
        "expected": _jsonable(r.expected),
        "received": _jsonable(r.received),
        "expectedClose": _jsonable(r.expected_close),
        "duration": r.duration,
        "started": r.started,
        "closedByMe": r.closed_by_me,
        "failedByMe": r.failed_by_me,
        "droppedByMe": r.dropped_by_me,
        "wasClean": r.was_clean,
        "wasNotCleanReason": r.was_not_clean_reason,
        "wasOpenHandshakeTimeout": r.was_open_handshake_timeout,
        "wasCloseHandshakeTimeout": r.was_close_handshake_timeout,
        "wasServerConnectionDropTimeout": r.was_server_connection_drop_timeout,
        "localCloseCode": r.local_close_code,
        "localCloseReason": r.local_close_reason,
        "remoteCloseCode": r.remote_close_code,
        "remoteCloseReason": r.remote_close_reason,
        "httpRequest": r.http_request,
        "httpResponse": r.http_response,
    }


def serve_main(argv: Sequence[str]) -> int:
    """Child process: serve the cases, then write the results as JSON.

    Prints ``PORT <n>`` once listening.  Exits after the client has called
    ``/updateReports``; the parent kills it if that never happens.
    """
    parser = argparse.ArgumentParser(prog="autobahn_client.py serve")
    parser.add_argument("--cases", action="append")
    parser.add_argument("--exclude", action="append")
    parser.add_argument("--results", required=True)
    parser.add_argument("--reports", help="also write kosoku's Autobahn-format reports here")
    args = parser.parse_args(argv)

    import kosoku

    async def run() -> List[Any]:
        server = kosoku.run_fuzzingserver(
            split_patterns(args.cases), split_patterns(args.exclude), host="127.0.0.1", port=0
        )
        async with server:
            print(f"PORT {server.port}", flush=True)
            # The parent reads only that line: anything written to stdout later
            # (by kosoku or Python) goes to stderr instead, which the parent keeps
            # in a file, so a full pipe can never block this process.
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
            try:
                return list(await server.get_result())
            except kosoku.FailureError as failure:  # carries every result
                return list(failure.results)

    results = asyncio.run(run())
    tmp = args.results + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump([result_to_dict(r) for r in results], f, indent=1)
    os.replace(tmp, args.results)
    if args.reports:
        try:  # kosoku's own report writer (what its CLI uses): index.html, per-case JSON/HTML
            from kosoku._report import write_reports

            write_reports(results, args.reports)
        except Exception as exc:  # the reports are a convenience, not the verdict
            print(f"could not write kosoku reports: {exc!r}", file=sys.stderr)
    # kosoku 0.1.0 sometimes dies of SIGABRT, with nothing on stderr, while the
    # interpreter shuts down after a run in which a testee dropped a connection
    # (about 1 run in 8 of test_harness_detects_failures; it failed CI twice).
    # Everything is written by now, so leave without the shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class FuzzingServerProcess:
    """``serve_main`` in a child process; a context manager that always reaps it."""

    def __init__(
        self,
        cases: Optional[Sequence[str]],
        exclude: Optional[Sequence[str]],
        results_file: Path,
        reports_dir: Optional[Path],
    ) -> None:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "serve",
            "--results",
            str(results_file),
        ]
        if cases:
            cmd += ["--cases", ",".join(cases)]
        if exclude:
            cmd += ["--exclude", ",".join(exclude)]
        if reports_dir is not None:
            cmd += ["--reports", str(reports_dir)]
        self.cmd = cmd
        self.results_file = results_file
        self.proc: Optional[subprocess.Popen[str]] = None
        self.stderr_file: Optional[IO[str]] = None
        self.port = 0

    def __enter__(self) -> FuzzingServerProcess:
        # The child's stderr goes to a file next to the results, so that a
        # server that crashes or hangs leaves its reason for failure_message().
        stderr_path = self.results_file.with_suffix(".stderr.txt")
        self.stderr_file = open(stderr_path, "w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=str(REPO),
        )
        line: List[str] = []
        reader = threading.Thread(
            target=lambda: line.append(self.proc.stdout.readline()), daemon=True
        )  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        if not line or not line[0].startswith("PORT "):
            self.kill()
            raise RuntimeError(
                f"kosoku fuzzing server did not start (got {line!r}){self._stderr_tail()}"
            )
        self.port = int(line[0].split()[1])
        return self

    def wait_results(self, timeout: float) -> Tuple[Optional[List[Dict[str, Any]]], str]:
        """Wait for the server to finish and return its results, or None and why not."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None, f"still running {timeout:g} s after updateReports{self._stderr_tail()}"
        if self.proc.returncode != 0:
            return None, f"exited with code {self.proc.returncode}{self._stderr_tail()}"
        if not self.results_file.exists():
            return None, f"exited without writing {self.results_file.name}{self._stderr_tail()}"
        with open(self.results_file, encoding="utf-8") as f:
            return json.load(f), ""

    def _stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the child wrote to stderr, for a failure message."""
        assert self.stderr_file is not None
        self.stderr_file.flush()
        self.stderr_file.seek(0)
        text = self.stderr_file.read().strip()
        return f"; its stderr: {text[-limit:]}" if text else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.stderr_file is not None:
            self.stderr_file.close()


# ---------------------------------------------------------------------------
# Driving the cases
# ---------------------------------------------------------------------------


@dataclass
class CaseRun:
    """What the harness saw of one case (the verdict comes from kosoku)."""

    number: int
    case_id: str
    seconds: float = 0.0
    error: Optional[str] = None  # exception the testee raised, if any
    timed_out: bool = False  # the harness had to drop the connection
    stuck: bool = False  # ... and the testee still did not return


@dataclass
class SuiteResult:
    client: str
    agent: str
    selection: List[str]
    exclude: List[str]
    case_ids: List[str]
    runs: List[CaseRun]
    results: Dict[str, Dict[str, Any]]  # case id -> kosoku result dict
    problems: List[str]  # harness-level problems (incomplete run, id mismatch, ...)
    wall_seconds: float
    started: str
    versions: Dict[str, str] = field(default_factory=dict)
    client_cpu: float = 0.0  # CPU seconds of this process (the client under test)
    server_cpu: float = 0.0  # CPU seconds of the kosoku server process

    # -- derived -----------------------------------------------------------------

    def behavior(self, case_id: str) -> str:
        result = self.results.get(case_id)
        return result["behavior"] if result else "MISSING"

    @property
    def counts(self) -> Counter:
        return Counter(self.behavior(c) for c in self.case_ids)

    @property
    def non_passing(self) -> List[str]:
        return [c for c in self.case_ids if self.behavior(c) not in PASSING]

    def non_passing_by_verdict(self) -> OrderedDict[str, List[str]]:
        by_verdict: OrderedDict[str, List[str]] = OrderedDict()
        for c in self.non_passing:
            by_verdict.setdefault(self.behavior(c), []).append(c)
        return by_verdict

    @property
    def close_issues(self) -> List[str]:
        """Passing cases whose closing-handshake verdict is not OK/INFORMATIONAL."""
        return [
            c
            for c in self.case_ids
            if self.behavior(c) in PASSING and self.results[c]["behaviorClose"] not in CLOSE_OK
        ]

    @property
    def timeouts(self) -> List[CaseRun]:
        return [r for r in self.runs if r.timed_out]

    @property
    def ok(self) -> bool:
        return not self.non_passing and not self.problems and not self.timeouts

    def failure_message(self) -> str:
        """Every non-passing case with its verdict (for assertion messages)."""
        lines = [f"{self.client}: {format_counts(self.counts)}"]
        lines += [f"harness: {p}" for p in self.problems]
        for c in self.non_passing:
            lines.append(describe_case(c, self.results.get(c), self.run_for(c)))
        for r in self.timeouts:
            if self.behavior(r.case_id) in PASSING:
                lines.append(f"{r.case_id}: harness timeout after {r.seconds:.1f}s")
        return "\n".join(lines)

    def run_for(self, case_id: str) -> Optional[CaseRun]:
        for r in self.runs:
            if r.case_id == case_id:
                return r
        return None


def _control(testee: Testee, url: str, timeout: float) -> List[str]:
    """Run a control connection (getCaseCount/updateReports) with a time bound."""
    handle = CaseHandle()
    out: Dict[str, Any] = {}

    def target() -> None:
        try:
            out["texts"] = testee(url, None, False, handle)
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        handle.abort()
        t.join(5)
        raise TimeoutError(f"control connection {url} did not finish in {timeout}s")
    if "error" in out and not out.get("texts"):
        raise RuntimeError(f"control connection {url} failed: {out['error']!r}")
    return out.get("texts", [])


def _versions(client: str) -> Dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("kosoku", "lomond" if client.startswith("lomond") else client):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist == "lomond":
                try:
                    from lomond import __version__

                    versions[dist] = __version__ + " (source tree)"
                except Exception:
                    pass
    return versions


def run_suite(
    client: str = "lomond",
    cases: Optional[Sequence[str]] = None,
    exclude: Optional[Sequence[str]] = None,
    agent: Optional[str] = None,
    out_dir: Optional[Path] = DEFAULT_OUT,
    case_timeout: float = DEFAULT_CASE_TIMEOUT,
    run_timeout: Optional[float] = None,
    html: bool = True,
    progress: Optional[Callable[[str], None]] = None,
) -> SuiteResult:
    """Serve the selected cases with kosoku and run them all with ``client``."""
    testee = TESTEES[client]
    agent = agent or client
    cases = list(cases) if cases else None
    exclude = list(exclude) if exclude else None
    case_ids = select_cases(cases, exclude)
    say = progress or (lambda msg: None)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    t0 = time.monotonic()
    cpu0 = time.process_time()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    deadline = t0 + run_timeout if run_timeout else None
    problems: List[str] = []
    runs: List[CaseRun] = []

    work = (
        Path(out_dir)
        if out_dir is not None
        else Path(os.environ.get("TMPDIR", "/tmp")) / f"lomond-autobahn-{os.getpid()}"
    )
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    if results_file.exists():
        results_file.unlink()
    reports_dir = work / "kosoku" if (html and out_dir is not None) else None

    results_list: Optional[List[Dict[str, Any]]] = None
    with FuzzingServerProcess(cases, exclude, results_file, reports_dir) as server:
        base = f"ws://127.0.0.1:{server.port}"
        quoted_agent = urllib.parse.quote(agent, safe="")
        try:
            texts = _control(testee, f"{base}/getCaseCount", 30)
            count = int(texts[0])
        except Exception as exc:
            problems.append(f"getCaseCount: {type(exc).__name__}: {exc}")
            count = -1
        say(f"kosoku on port {server.port}: {count} cases, client {client}")
        if count >= 0 and count != len(case_ids):
            problems.append(
                f"server serves {count} cases, the driver's selection has {len(case_ids)}"
            )
        n_cases = min(count, len(case_ids)) if count >= 0 else 0
        for number in range(1, n_cases + 1):
            case_id = case_ids[number - 1]
            if deadline is not None and time.monotonic() > deadline:
                problems.append(f"run timeout ({run_timeout:.0f}s) reached before case {case_id}")
                break
            if not server.alive():
                problems.append(f"the kosoku server exited before case {case_id}")
                break
            run = CaseRun(number, case_id)
            runs.append(run)
            handle = CaseHandle()
            offers = offers_for_case(case_id)
            url = f"{base}/runCase?case={number}&agent={quoted_agent}"
            errors: List[BaseException] = []

            def target(
                url: str = url,
                offers: OfferSpec = offers,
                handle: CaseHandle = handle,
                errors: List[BaseException] = errors,
            ) -> None:
                try:
                    testee(url, offers, True, handle)
                except BaseException as exc:
                    errors.append(exc)

            c0 = time.monotonic()
            thread = threading.Thread(target=target, name=f"case-{case_id}", daemon=True)
            thread.start()
            thread.join(case_timeout)
            if thread.is_alive():
                run.timed_out = True
                handle.abort()
                thread.join(10)
                run.stuck = thread.is_alive()
            run.seconds = time.monotonic() - c0
            if errors:
                run.error = f"{type(errors[0]).__name__}: {errors[0]}"[:300]
            note = " TIMEOUT" if run.timed_out else ""
            say(f"[{number}/{n_cases}] {case_id} {run.seconds:.2f}s{note}")
        reported = True
        try:
            _control(testee, f"{base}/updateReports?agent={quoted_agent}", 30)
        except Exception as exc:
            problems.append(f"updateReports: {exc}")
            reported = False
        # kosoku writes its HTML report after the run: give it time for that.
        results_list, why = server.wait_results((120 if html else 60) if reported else 5)
        if results_list is None:
            problems.append(f"kosoku did not report results: the server {why}")
    client_cpu = time.process_time() - cpu0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = (children1.ru_utime + children1.ru_stime) - (
        children0.ru_utime + children0.ru_stime
    )

    results: Dict[str, Dict[str, Any]] = {}
    for r in results_list or []:
        expected_id = case_ids[r["case"] - 1] if 0 < r["case"] <= len(case_ids) else None
        if r["id"] != expected_id:
            problems.append(
                f"result for case {r['case']} is {r['id']}, driver expected {expected_id}"
            )
        if r["id"] in results:
            problems.append(f"case {r['id']} reported twice")
        results[r["id"]] = r
    missing = [c for c in case_ids if c not in results]
    if missing and results_list is not None:
        problems.append(
            f"{len(missing)} case(s) missing from the results: {', '.join(missing[:20])}"
        )

    return SuiteResult(
        client=client,
        agent=agent,
        selection=cases or ["*"],
        exclude=exclude or [],
        case_ids=case_ids,
        runs=runs,
        results=results,
        problems=problems,
        wall_seconds=time.monotonic() - t0,
        started=started,
        versions=_versions(client),
        client_cpu=client_cpu,
        server_cpu=server_cpu,
    )


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def compact_ids(ids: Sequence[str], universe: Sequence[str]) -> str:
    """``12.1.1, ..., 12.5.18`` -> ``12.* (90)`` where a whole group (or
    subgroup) of ``universe`` is listed; other ids one by one."""
    chosen = set(ids)

    def members(prefix: str) -> List[str]:
        return [c for c in universe if c.startswith(prefix + ".")]

    out: List[str] = []
    done: set = set()
    for c in ids:
        if c in done:
            continue
        parts = c.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            group = members(prefix)
            if len(group) > 1 and all(g in chosen for g in group):
                out.append(f"{prefix}.* ({len(group)})")
                done.update(group)
                break
        else:
            out.append(c)
            done.add(c)
    return ", ".join(out)


def format_counts(counts: Counter) -> str:
    keys = list(BEHAVIOURS) + sorted(k for k in counts if k not in BEHAVIOURS)
    return ", ".join(f"{counts[k]} {k}" for k in keys if counts.get(k))


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _extensions(http: str) -> Optional[str]:
    for line in (http or "").split("\r\n"):
        if line.lower().startswith("sec-websocket-extensions:"):
            return line.split(":", 1)[1].strip()
    return None


def describe_case(
    case_id: str, result: Optional[Dict[str, Any]], run: Optional[CaseRun], detail: bool = True
) -> str:
    """One non-passing case: verdicts, and what kosoku expected vs observed."""
    if result is None:
        text = f"{case_id}: MISSING (no result from kosoku)"
        if run is not None and (run.error or run.timed_out):
            text += f"; harness: {'timeout; ' if run.timed_out else ''}{run.error or ''}"
        return text
    why = result["result"] or ""
    if result["resultClose"] and result["resultClose"] != why:
        why = f"{why} / {result['resultClose']}" if why else result["resultClose"]
    parts = [f"{case_id}: {result['behavior']} (close {result['behaviorClose']}): {why}".rstrip()]
    if detail:
        parts.append(f"    case: {_short(result['description'], 200)}")
        parts.append(f"    expectation: {_short(result['expectation'], 200)}")
        parts.append(f"    expected: {_short(result['expected'])}")
        parts.append(f"    observed: {_short(result['received'])}")
        parts.append(
            f"    close: expected {_short(result['expectedClose'], 200)}; remote code "
            f"{result['remoteCloseCode']} {result['remoteCloseReason']!r}, local code "
            f"{result['localCloseCode']}, clean={result['wasClean']}"
            + (f" ({result['wasNotCleanReason']})" if result.get("wasNotCleanReason") else "")
        )
        offered = _extensions(result.get("httpRequest", ""))
        accepted = _extensions(result.get("httpResponse", ""))
        if offered or accepted:
            parts.append(f"    extensions: offered {offered!r}, accepted {accepted!r}")
        if run is not None and (run.error or run.timed_out):
            parts.append(
                f"    harness: {'timed out; ' if run.timed_out else ''}{run.error or ''}".rstrip()
            )
    return "\n".join(parts)


def group_rows(suite: SuiteResult) -> List[Tuple[str, Counter, float]]:
    groups: OrderedDict[str, Counter] = OrderedDict()
    seconds: Dict[str, float] = {}
    for c in suite.case_ids:
        g = c.split(".")[0]
        groups.setdefault(g, Counter())[suite.behavior(c)] += 1
    for r in suite.runs:
        g = r.case_id.split(".")[0]
        seconds[g] = seconds.get(g, 0.0) + r.seconds
    return [(g, cnt, seconds.get(g, 0.0)) for g, cnt in groups.items()]


def _columns(suite: SuiteResult) -> List[str]:
    cols = list(BEHAVIOURS)
    extra = sorted({suite.behavior(c) for c in suite.case_ids} - set(cols))
    return cols + extra


def summary_table(suite: SuiteResult) -> List[List[str]]:
    cols = _columns(suite)
    rows = [["Group", "Cases", *cols, "Time (s)"]]
    total: Counter = Counter()
    for g, cnt, secs in group_rows(suite):
        total.update(cnt)
        name = f"{g} {GROUP_NAMES.get(g, '')}".strip()
        rows.append(
            [name, str(sum(cnt.values()))] + [str(cnt.get(k, 0)) for k in cols] + [f"{secs:.1f}"]
        )
    rows.append(
        ["Total", str(sum(total.values()))]
        + [str(total.get(k, 0)) for k in cols]
        + [f"{sum(r.seconds for r in suite.runs):.1f}"]
    )
    return rows


def render_text(suite: SuiteResult) -> str:
    rows = summary_table(suite)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(row, widths))
            )
        )
        if i == 0 or i == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    out = [
        f"Autobahn client suite via kosoku: client {suite.client} (agent {suite.agent!r}), "
        f"{len(suite.case_ids)} cases, wall time {suite.wall_seconds:.1f}s "
        f"(CPU: client {suite.client_cpu:.0f}s, kosoku server {suite.server_cpu:.0f}s)",
        "",
        *lines,
        "",
        f"Result: {format_counts(suite.counts)}",
    ]
    if suite.non_passing:
        out += ["", "Non-passing cases:"]
        for verdict, ids in suite.non_passing_by_verdict().items():
            out.append(f"  {verdict} ({len(ids)}): {compact_ids(ids, suite.case_ids)}")
        shown = [c for c in suite.non_passing if suite.behavior(c) != "UNIMPLEMENTED"]
        if shown:
            out += [""] + [
                describe_case(c, suite.results.get(c), suite.run_for(c), detail=False)
                for c in shown
            ]
    close = suite.close_issues
    if close:
        out += [
            "",
            f"Closing-handshake verdicts other than OK/INFORMATIONAL ({len(close)}, "
            "shown only, they do not fail the run):",
        ]
        out += ["  " + ", ".join(f"{c} {suite.results[c]['behaviorClose']}" for c in close)]
    if suite.timeouts:
        out += [
            "",
            "Cases the harness had to time out: "
            + ", ".join(
                f"{r.case_id} ({r.seconds:.0f}s{', stuck' if r.stuck else ''})"
                for r in suite.timeouts
            ),
        ]
    if suite.problems:
        out += ["", "Harness problems:"] + [f"  {p}" for p in suite.problems]
    out += ["", "PASS" if suite.ok else "FAIL"]
    return "\n".join(out)


def _md_table(rows: List[List[str]]) -> List[str]:
    lines = [
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|",
    ]
    for row in rows[1:]:
        cells = [f"**{c}**" if row[0] == "Total" else c for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def command_line(suite: SuiteResult) -> str:
    cmd = "python tests/compliance/autobahn_client.py"
    if suite.client != "lomond":
        cmd += f" --client {suite.client}"
    if suite.selection == CI_SUBSET:
        cmd += " --ci"
    elif suite.selection != ["*"]:
        cmd += f" --cases '{','.join(suite.selection)}'"
    if suite.exclude:
        cmd += f" --exclude '{','.join(suite.exclude)}'"
    return cmd


def render_markdown(suite: SuiteResult, heading_level: int = 3) -> str:
    h = "#" * heading_level
    versions = ", ".join(f"{k} {v}" for k, v in suite.versions.items())
    lines = [
        f"{h} {suite.client}",
        "",
        f"Run {suite.started} on {platform.machine()} with {os.cpu_count()} cores "
        f"({versions}): {len(suite.case_ids)} cases in **{suite.wall_seconds:.0f} s** wall time "
        f"(CPU: client {suite.client_cpu:.0f} s, kosoku server {suite.server_cpu:.0f} s).",
        f"Command: `{command_line(suite)}`",
        "",
        f"**{format_counts(suite.counts)}** — " + ("PASS" if suite.ok else "FAIL"),
        "",
        *_md_table(summary_table(suite)),
    ]
    if suite.non_passing:
        lines += ["", f"Non-passing cases ({len(suite.non_passing)}):", ""]
        for verdict, ids in suite.non_passing_by_verdict().items():
            lines.append(f"- {verdict} ({len(ids)}): {compact_ids(ids, suite.case_ids)}")
    close = suite.close_issues
    if close:
        lines += [
            "",
            "Closing-handshake verdicts other than OK/INFORMATIONAL "
            "(shown only; they do not fail the run): "
            + ", ".join(f"{c} {suite.results[c]['behaviorClose']}" for c in close),
        ]
    if suite.timeouts:
        lines += [
            "",
            "Cases the harness timed out: "
            + ", ".join(f"{r.case_id} ({r.seconds:.0f} s)" for r in suite.timeouts),
        ]
    if suite.problems:
        lines += ["", "Harness problems:", ""] + [f"- {p}" for p in suite.problems]
    return "\n".join(lines) + "\n"


def render_details_markdown(suite: SuiteResult) -> str:
    out = [render_markdown(suite, 1)]
    if suite.non_passing:
        out += ["", "## Details of the non-passing cases", "", "```"]
        for c in suite.non_passing:
            out.append(describe_case(c, suite.results.get(c), suite.run_for(c)))
        out.append("```")
    return "\n".join(out) + "\n"


def update_docs(suite: SuiteResult, path: Path = DOCS_FILE) -> None:
    """Replace this client's results section of ``docs/conformance.md``.

    The section sits between ``<!-- autobahn:CLIENT:start -->`` and
    ``<!-- autobahn:CLIENT:end -->``; if absent it is appended.
    """
    start, end = f"<!-- autobahn:{suite.client}:start -->", f"<!-- autobahn:{suite.client}:end -->"
    block = f"{start}\n{render_markdown(suite)}{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Conformance\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def save(suite: SuiteResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(render_details_markdown(suite), encoding="utf-8")
    (out_dir / "summary.txt").write_text(render_text(suite) + "\n", encoding="utf-8")
    harness = {
        "client": suite.client,
        "agent": suite.agent,
        "wall_seconds": suite.wall_seconds,
        "client_cpu": suite.client_cpu,
        "server_cpu": suite.server_cpu,
        "counts": dict(suite.counts),
        "problems": suite.problems,
        "runs": [vars(r) for r in suite.runs],
        "ok": suite.ok,
    }
    (out_dir / "harness.json").write_text(json.dumps(harness, indent=1), encoding="utf-8")
    meta = {
        "client": suite.client,
        "started": suite.started,
        "versions": suite.versions,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "command": command_line(suite),
        "code": _code_version(),
    }
    # What tests/compliance/report.py says of the run.
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _code_version() -> Optional[str]:
    """The checkout's commit (``git describe --always --dirty``), or ``None`` outside git."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
            cwd=REPO, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve_main(argv[1:])
    parser = argparse.ArgumentParser(
        description="Run the Autobahn client suite (served by kosoku) against a WebSocket client.",
    )
    parser.add_argument(
        "--cases",
        action="append",
        metavar="GLOBS",
        help="comma-separated case ids or globs, e.g. '1.*,2.*,9.1.1' (default: all)",
    )
    parser.add_argument(
        "--ci",
        action="store_true",
        help="run the CI subset (CI_SUBSET in this file) instead of --cases",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="GLOBS",
        help="comma-separated case ids or globs to leave out",
    )
    parser.add_argument(
        "--client",
        choices=sorted(TESTEES),
        default="lomond",
        help="client under test (default: lomond)",
    )
    parser.add_argument("--agent", help="agent name in the reports (default: the client's name)")
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="directory for results.json, summary.md and kosoku's reports "
        "(default: reports/autobahn; per-client subdirectory)",
    )
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=DEFAULT_CASE_TIMEOUT,
        help="seconds before the harness drops a case's connection",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=None,
        help="stop starting new cases after this many seconds",
    )
    parser.add_argument("--no-html", action="store_true", help="skip kosoku's HTML/JSON reports")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite this client's section of docs/conformance.md",
    )
    parser.add_argument(
        "--details",
        action="store_true",
        help="print expected vs observed for every non-passing case",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-case progress lines")
    args = parser.parse_args(argv)

    out_dir = Path(args.out) / args.client
    try:
        suite = run_suite(
            client=args.client,
            cases=CI_SUBSET if args.ci else split_patterns(args.cases),
            exclude=split_patterns(args.exclude),
            agent=args.agent,
            out_dir=out_dir,
            case_timeout=args.case_timeout,
            run_timeout=args.run_timeout,
            html=not args.no_html,
            progress=None if args.quiet else (lambda msg: print(msg, flush=True)),
        )
    except ValueError as exc:
        parser.error(str(exc))
    print()
    print(render_text(suite))
    if args.details and suite.non_passing:
        print()
        for c in suite.non_passing:
            print(describe_case(c, suite.results.get(c), suite.run_for(c)))
    save(suite, out_dir)
    print(
        f"\nresults: {out_dir}/results.json, summary: {out_dir}/summary.md"
        + (f", kosoku report: {out_dir}/kosoku/index.html" if not args.no_html else "")
    )
    if args.update_docs:
        update_docs(suite)
        print(f"updated {DOCS_FILE.relative_to(REPO)}")
    return 0 if suite.ok else 1


if __name__ == "__main__":
    sys.exit(main())
