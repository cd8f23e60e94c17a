"""Autobahn client conformance, served by kosoku's fuzzing server.

* ``test_ci_subset``: lomond against a representative selection
  (``autobahn_client.CI_SUBSET``, about 280 cases, well under a minute).
* ``test_full_suite`` (``slow``): lomond against all 517 cases; runs only
  when asked for (``AUTOBAHN_FULL=1``), see
  ``docs/conformance.md`` for timings.
* The ``test_harness_*`` tests check the harness itself with the ``websockets``
  client as a stand-in testee, so a harness bug is not mistaken for a lomond one.

Every lomond test asserts zero FAILED, UNIMPLEMENTED or ERROR verdicts, no
missing case and no harness timeout; the assertion message lists every
non-passing case with what kosoku expected and what it observed.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import List

import autobahn_client as ab
import pytest
from core_helpers import raw_upgrade_request

pytest.importorskip("kosoku")


def _run(client: str, cases: List[str] | None, out: Path, **kwargs: object) -> ab.SuiteResult:
    suite = ab.run_suite(client=client, cases=cases, out_dir=out, html=False, **kwargs)  # type: ignore[arg-type]
    ab.save(suite, out)
    return suite


def _assert_passes(suite: ab.SuiteResult, out: Path) -> None:
    assert suite.ok, f"Autobahn cases not passing (results in {out}):\n{suite.failure_message()}"


# -- lomond ---------------------------------------------------------------------


#: The drivers under test: the threaded one (``WebSocket.connect()``), a
#: ``WebSocketApp`` on a ``Hub``, and ``lomond.asyncio.WebSocket``, over the same
#: lifecycle and protocol.
DRIVERS = ["lomond", "lomond-hub", "lomond-asyncio"]


@pytest.mark.parametrize("client", DRIVERS)
def test_ci_subset(client: str, tmp_path: Path) -> None:
    suite = _run(client, ab.CI_SUBSET, tmp_path, case_timeout=60, run_timeout=600)
    assert len(suite.case_ids) == len(ab.select_cases(ab.CI_SUBSET))
    _assert_passes(suite, tmp_path)


@pytest.mark.slow
@pytest.mark.hang_timeout(3600)
@pytest.mark.skipif(
    os.environ.get("AUTOBAHN_FULL", "") in ("", "0"),
    reason="full Autobahn suite (about 15 minutes per driver on 2 cores): set AUTOBAHN_FULL=1",
)
@pytest.mark.parametrize("client", DRIVERS)
def test_full_suite(client: str, tmp_path: Path) -> None:
    suite = _run(client, None, tmp_path, run_timeout=45 * 60)
    assert len(suite.case_ids) == 517
    print(ab.render_text(suite))
    _assert_passes(suite, tmp_path)


# -- the harness itself -------------------------------------------------------------


def test_harness_selection_matches_kosoku() -> None:
    """The driver numbers cases the way kosoku serves them."""
    ids = ab.all_case_ids()
    assert len(ids) == 517
    assert ids[:3] == ["1.1.1", "1.1.2", "1.1.3"] and ids[-1] == "13.7.18"
    # Autobahn's rule: '*' entries are prefix regexes, others exact ids.
    assert ab.select_cases(["6.1*"])[:4] == ["6.1.1", "6.1.2", "6.1.3", "6.10.1"]
    assert ab.select_cases(["6.1.*"]) == ["6.1.1", "6.1.2", "6.1.3"]
    assert ab.select_cases(["13.*.1"])[:3] == ["13.1.1", "13.1.10", "13.1.11"]
    assert ab.select_cases(["7.1.1", "1.1.2"]) == ["1.1.2", "7.1.1"]
    assert ab.select_cases(["1.1.*"], ["1.1.3"]) == [f"1.1.{i}" for i in (1, 2, 4, 5, 6, 7, 8)]
    with pytest.raises(ValueError):
        ab.select_cases(["6.1"])


def test_harness_13x_offers() -> None:
    """13.x offers mirror kosoku's client side of each case (CLIENT_OFFERS)."""
    headers = {
        g: [ab.offer_header(o) for o in ab.offers_for_case(f"13.{g}.5")] for g in range(1, 8)
    }  # type: ignore[union-attr]
    base = "permessage-deflate; client_no_context_takeover"
    assert headers == {
        1: [f"{base}; client_max_window_bits"],
        2: [f"{base}; server_no_context_takeover; client_max_window_bits"],
        3: [f"{base}; client_max_window_bits; server_max_window_bits=9"],
        4: [f"{base}; client_max_window_bits; server_max_window_bits=15"],
        5: [
            f"{base}; server_no_context_takeover; client_max_window_bits; server_max_window_bits=9"
        ],
        6: [
            f"{base}; server_no_context_takeover; client_max_window_bits; server_max_window_bits=15"
        ],
        7: [
            f"{base}; server_no_context_takeover; client_max_window_bits; server_max_window_bits=9",
            f"{base}; server_no_context_takeover; client_max_window_bits",
            f"{base}; client_max_window_bits",
        ],
    }
    assert ab.offers_for_case("12.1.1") == "default"
    assert ab.offers_for_case("1.1.1") == "default"


HARNESS_CASES = ["1.1.1", "1.2.1", "2.2", "5.6", "6.3.1", "7.1.1", "12.2.1"] + [
    f"13.{g}.1" for g in range(1, 8)
]


def test_harness_with_stand_in_client(tmp_path: Path) -> None:
    """A conforming stand-in client passes, 13.x offers included."""
    pytest.importorskip("websockets")
    suite = _run("websockets", HARNESS_CASES, tmp_path, case_timeout=60)
    assert suite.ok, suite.failure_message()
    for case_id in HARNESS_CASES:
        result = suite.results[case_id]
        if case_id.startswith(("12.", "13.")):
            assert "permessage-deflate" in (ab._extensions(result["httpResponse"]) or "")


def test_harness_detects_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An echo that returns binary as text, and a client that ignores the
    server, are caught: FAILED verdicts, a timed-out case, a failing run."""
    pytest.importorskip("websockets")
    honest = ab.TESTEES["websockets"]

    def broken(url: str, offers: ab.OfferSpec, echo: bool, handle: ab.CaseHandle) -> List[str]:
        # Serving order: case 1 = 1.1.1, case 2 = 1.2.1, case 3 = 2.2.
        if "case=2&" in url:  # 1.2.1: binary echoed back as text
            from websockets.sync.client import connect

            with connect(url, compression=None, proxy=None, max_size=None) as ws:
                for message in ws:
                    ws.send(message.decode("latin-1") if isinstance(message, bytes) else message)
            return []
        if "case=3&" in url:  # 2.2: upgrades, then ignores the server until aborted
            # A raw socket, because websockets' own reader would answer the ping.
            # Connecting (rather than never connecting) gives kosoku a verdict
            # for 2.2 to check, and drops a live connection on the abort.
            parts = urllib.parse.urlsplit(url)
            stop = threading.Event()
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
                sock.sendall(raw_upgrade_request(parts.netloc, f"{parts.path}?{parts.query}"))
                handle.on_abort(stop.set)
                stop.wait(30)
            return []
        return honest(url, offers, echo, handle)

    monkeypatch.setitem(ab.TESTEES, "websockets", broken)
    suite = _run("websockets", ["1.2.1", "2.2", "1.1.1"], tmp_path, case_timeout=10)
    message = suite.failure_message()
    seen = f"{message}\nruns: {suite.runs}"  # every assertion shows what the harness saw
    assert not suite.ok
    assert suite.behavior("1.2.1") == "FAILED", seen
    assert [r.case_id for r in suite.timeouts] == ["2.2"], seen
    assert suite.behavior("2.2") == "FAILED", seen  # no pong came back
    assert suite.behavior("1.1.1") == "OK", seen
    assert "1.2.1: FAILED" in message and "expected:" in message


def test_server_that_does_not_finish_says_why(tmp_path: Path) -> None:
    """A kosoku server that never ends its run is reported as still running,
    one that dies by its exit code, and one that cannot start by its stderr."""
    results = tmp_path / "results.json"
    with ab.FuzzingServerProcess(["1.1.1"], None, results, None) as server:
        assert server.port > 0
        found, why = server.wait_results(0.5)  # no case run, no updateReports
        assert found is None
        assert why.startswith("still running 0.5 s after updateReports"), why
        server.kill()
        found, why = server.wait_results(5)
        assert found is None
        assert why.startswith("exited with code -9"), why
    bad = ab.FuzzingServerProcess(["no-such-case"], None, tmp_path / "bad.json", None)
    with pytest.raises(RuntimeError, match=r"(?s)did not start .*its stderr: .*no such case"):
        bad.__enter__()
    bad.__exit__(None, None, None)
