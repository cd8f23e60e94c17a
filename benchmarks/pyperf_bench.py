"""lomond's scenarios under pyperf: calibrated loops, many worker processes, JSON out.

``run.py`` and ``compare.py`` time one run per subprocess with the wall
clock; on a shared 2-core machine their paired ratios spread by +-25%, so a
5% change is invisible. pyperf (the tool CPython's own benchmark suite uses)
calibrates the number of messages per value, spreads the values over many
worker processes, and ``python -m pyperf compare_to`` applies a significance
test to two result files.

Each value is one connection to ``server.py`` (started once, in its own
process, so its CPU is never the client's): the opening handshake happens
before the clock starts, then the client receives, sends or echoes
``loops`` messages of the scenario (the server is told how many in the
URL), and pyperf divides the elapsed time by ``loops``. What the client
receives is checked after the clock stopped, as ``client_runner.py`` does
(exact payloads, in order, with their types): a broken tree must not look
fast. The client is ``clients/lomond_client.py``, the adapter ``run.py``
uses.

.. not-runnable: runs benchmarks for minutes

Two trees, then pyperf's comparison::

    python benchmarks/pyperf_bench.py --lomond-path /tmp/before --fast -o before.json
    python benchmarks/pyperf_bench.py --lomond-path . --fast -o after.json
    python -m pyperf compare_to before.json after.json --table

``--fast`` / ``--rigorous`` (pyperf's own options) pick fewer or more worker
processes; ``--scenarios`` a subset. ``LOMOND_NO_ACCEL=1`` reaches the
workers with ``--inherit-environ LOMOND_NO_ACCEL``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable, List, Optional

import pyperf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from scenarios import BY_NAME, Scenario, payloads  # noqa: E402

#: The scenarios of issue 21's table (``--scenarios`` picks others from ``scenarios.py``).
DEFAULT_SCENARIOS = (
    "recv_text_16",
    "recv_binary_16",
    "recv_binary_64k",
    "recv_text_1m_utf8",
    "send_binary_16",
    "echo_16",
    "recv_text_16_deflate",
    "recv_text_64k_deflate",
)

#: Seconds to wait for ``server.py`` to print its port.
_SERVER_START_TIMEOUT = 30.0


class CheckFailed(Exception):
    """A run delivered something other than the scenario's messages."""


def _add_cmdline_args(cmd: List[str], args: Any) -> None:
    """Pass this harness's own options on to pyperf's worker processes."""
    cmd.extend(["--port", str(args.port), "--lomond-path", args.lomond_path])
    cmd.extend(["--scenarios", *args.scenarios])


def start_server() -> tuple[subprocess.Popen[str], int]:
    """``server.py`` in its own process, on a free port; its reports go to /dev/null."""
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "server.py")],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert server.stdout is not None
    deadline = time.monotonic() + _SERVER_START_TIMEOUT
    line = ""
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if line.startswith("PORT "):
            break
    else:
        server.kill()
        raise SystemExit(f"server.py did not start: {line!r}")
    port = int(line.split()[1])
    # Keep draining its one JSON line per connection so it never blocks on a full pipe.
    threading.Thread(target=server.stdout.read, daemon=True).start()
    return server, port


def make_timer(scenario: Scenario, port: int) -> Callable[[int], float]:
    """The pyperf time function of one scenario: ``loops`` messages, one connection."""
    from clients import lomond_client

    expected = payloads(scenario)
    k = len(expected)
    kind = type(expected[0])

    def time_func(loops: int) -> float:
        url = f"ws://127.0.0.1:{port}/{scenario.name}?n={loops}&id=pyperf"
        seq = [expected[i % k] for i in range(loops)] if scenario.mode != "recv" else []
        items: List[Any] = []
        conn = lomond_client.connect(url, scenario)
        if scenario.deflate and not conn.extensions:
            raise CheckFailed(f"{scenario.name}: permessage-deflate was not negotiated")
        t0 = time.perf_counter()
        if scenario.mode == "recv":
            conn.recv(loops, items.append)
        elif scenario.mode == "send":
            conn.send(seq)
            conn.recv(1, items.append)
        else:
            conn.echo(seq, items.append)
        elapsed = time.perf_counter() - t0
        conn.close()
        check(scenario, items, loops, expected, kind)
        return elapsed

    return time_func


def check(
    scenario: Scenario, items: List[Any], n: int, expected: List[Any], kind: type
) -> None:
    """Raise :class:`CheckFailed` unless ``items`` is exactly what the scenario sent."""
    if scenario.mode == "send":
        want = f"{n} 0 {n * scenario.size}"
        if items != [want]:
            raise CheckFailed(f"{scenario.name}: server acknowledged {items!r}, not {want!r}")
        return
    if len(items) != n:
        raise CheckFailed(f"{scenario.name}: {len(items)} messages of {n}")
    k = len(expected)
    for i, item in enumerate(items):
        ok_type = type(item) is kind or (
            kind is bytes and isinstance(item, (bytearray, memoryview))
        )
        if not ok_type or item != expected[i % k]:
            raise CheckFailed(f"{scenario.name}: message {i} differs")


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=_add_cmdline_args)
    parser = runner.argparser
    parser.add_argument(
        "--lomond-path", default=".",
        help="the lomond tree to measure (put first on sys.path in every worker)",
    )
    parser.add_argument("--port", type=int, default=0, help=argparse_suppress())
    parser.add_argument(
        "--scenarios", nargs="+", default=list(DEFAULT_SCENARIOS), metavar="NAME",
        help=f"default: {' '.join(DEFAULT_SCENARIOS)}; any of {' '.join(BY_NAME)}",
    )
    args = runner.parse_args()
    args.lomond_path = os.path.abspath(args.lomond_path)
    sys.path.insert(0, args.lomond_path)
    for name in args.scenarios:
        if name not in BY_NAME:
            parser.error(f"unknown scenario {name!r}")

    import lomond
    from lomond import accel

    if not lomond.__file__ or not lomond.__file__.startswith(args.lomond_path + os.sep):
        raise SystemExit(f"imported {lomond.__file__}, not the tree {args.lomond_path}")
    runner.metadata["lomond_file"] = lomond.__file__
    runner.metadata["lomond_accel"] = accel.IMPLEMENTATION

    server: Optional[subprocess.Popen[str]] = None
    if not args.worker and args.port == 0:
        server, args.port = start_server()
        print(f"lomond {lomond.__file__} (accel {accel.IMPLEMENTATION}); server port {args.port}")
    try:
        for name in args.scenarios:
            scenario = BY_NAME[name]
            unit = scenario.size if scenario.big else 1
            runner.bench_time_func(
                name, make_timer(scenario, args.port),
                metadata={"unit": "second", "payload_bytes": unit},
            )
    finally:
        if server is not None:
            server.kill()
            server.wait()


def argparse_suppress() -> str:
    """Hide an internal option from ``--help``."""
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
