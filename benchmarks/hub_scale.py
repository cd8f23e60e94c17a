"""Many connections in one process: lomond's Hub beside the websockets asyncio client.

Usage::

    python benchmarks/hub_scale.py                         # 10,000 / 1,000, ~2-3 min on 2 cores
    python benchmarks/hub_scale.py --n 2000 --idle-seconds 5 --messages 200   # quicker

A cheap asyncio server (``hub_server.py``) runs in its own process; each
client runs each scenario in a fresh process of its own, default settings:

- ``scale``: ``--n`` (10,000) connections opened at once to ``/idle``. Time
  until all are Ready, every connection's ``hello`` received, RSS per
  connection (resident memory after minus before, over ``--n``), CPU while
  idle for ``--idle-seconds``, then a graceful stop of all: its time and
  how many closed gracefully (code 1000 echoed by the server).
- ``connect``: ``--connect-n`` (1,000) connections opened at once: time
  until all are Ready.
- ``receive``: ``--receivers`` (1,000) connections; each asks ``/feed`` for
  ``--messages`` 16-byte text messages at the same moment; the aggregate
  receive rate until the last one arrived.

The fd soft limit is raised to the hard limit in every process (10,000
connections need 10,000 descriptors on each side). A connection that fails
is counted, not fatal. The report is printed and written to
``benchmarks/results/hub-scale-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from idle import rss_kib, start_server, thread_count  # noqa: E402

CLIENTS = ["lomond-hub", "lomond-asyncio", "websockets-asyncio"]
SCENARIOS = ["scale", "connect", "receive"]


def raise_fd_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- lomond Hub ---------------------------------------------------------------------------


def lomond_hub(base: str, scenario: str, args: argparse.Namespace) -> Dict[str, Any]:
    sys.path.insert(0, args.lomond_path or ROOT)
    from lomond import accel, events
    from lomond.handlers import Hub, WebSocketApp

    n = {"scale": args.n, "connect": args.connect_n, "receive": args.receivers}[scenario]
    path = "/idle" if scenario != "receive" else f"/feed?count={args.messages}&size=16"
    target = n if scenario != "receive" else n * args.messages
    lock = threading.Lock()
    state = {"ready": 0, "texts": 0, "failed": 0}
    all_ready = threading.Event()
    all_received = threading.Event()
    times: Dict[str, float] = {}

    class App(WebSocketApp):
        # Runs on the hub's thread: the counters need no lock there; the
        # lock only guards against a reader in the main thread.
        def on_ready(self, event: events.Ready) -> None:
            with lock:
                state["ready"] += 1
                if state["ready"] + state["failed"] == n:
                    times["ready"] = time.perf_counter()
                    all_ready.set()

        def on_connect_fail(self, event: events.ConnectFail) -> None:
            with lock:
                state["failed"] += 1
                if state["ready"] + state["failed"] == n:
                    times["ready"] = time.perf_counter()
                    all_ready.set()

        def on_text(self, event: events.Text) -> None:
            state["texts"] += 1
            if state["texts"] == target:
                times["received"] = time.perf_counter()
                all_received.set()

    gc.collect()
    before = rss_kib()
    hub = Hub()
    apps = [App(base + path) for _ in range(n)]
    started = time.perf_counter()
    for app in apps:
        hub.add(app)
    hub.start()
    all_ready.wait(300)
    result: Dict[str, Any] = {
        "n": n, "ready": state["ready"], "failed": state["failed"],
        "ready_s": round(times.get("ready", float("nan")) - started, 3),
    }
    if scenario == "scale":
        all_received.wait(60)
        result["received"] = state["texts"]
        time.sleep(1.0)
        gc.collect()
        result["rss_per_conn_kib"] = round((rss_kib() - before) / n, 2)
        result["threads"] = thread_count()
        cpu = time.process_time()
        time.sleep(args.idle_seconds)
        result["idle_cpu_ms"] = round((time.process_time() - cpu) * 1000, 1)
    elif scenario == "receive":
        go = time.perf_counter()
        for app in apps:
            app.send_text("go")
        all_received.wait(300)
        elapsed = times.get("received", float("nan")) - go
        result["received"] = state["texts"]
        result["rate"] = round(state["texts"] / elapsed) if elapsed > 0 else None
    stop = time.perf_counter()
    stopped = hub.stop(300)
    result["stop_s"] = round(time.perf_counter() - stop, 3)
    result["stopped"] = stopped
    result["graceful"] = sum(1 for app in apps if app.outcome.graceful)
    tree = os.path.dirname(os.path.dirname(events.__file__))
    result["lomond"] = f"{tree} ({accel.IMPLEMENTATION})"
    return result


# -- websockets asyncio -------------------------------------------------------------------


def websockets_asyncio(base: str, scenario: str, args: argparse.Namespace) -> Dict[str, Any]:
    import asyncio

    from websockets.asyncio.client import connect

    n = {"scale": args.n, "connect": args.connect_n, "receive": args.receivers}[scenario]
    path = "/idle" if scenario != "receive" else f"/feed?count={args.messages}&size=16"

    async def main() -> Dict[str, Any]:
        gc.collect()
        before = rss_kib()
        started = time.perf_counter()
        attempts = await asyncio.gather(
            *(connect(base + path) for _ in range(n)), return_exceptions=True
        )
        ready_s = time.perf_counter() - started
        connections = [c for c in attempts if not isinstance(c, BaseException)]
        errors = [c for c in attempts if isinstance(c, BaseException)]
        result: Dict[str, Any] = {
            "n": n, "ready": len(connections), "failed": len(errors),
            "ready_s": round(ready_s, 3),
        }
        if errors:
            result["first_error"] = repr(errors[0])
        if scenario == "scale":
            hellos = await asyncio.gather(*(c.recv() for c in connections))
            result["received"] = len(hellos)
            await asyncio.sleep(1.0)
            gc.collect()
            result["rss_per_conn_kib"] = round((rss_kib() - before) / n, 2)
            result["threads"] = thread_count()
            cpu = time.process_time()
            await asyncio.sleep(args.idle_seconds)
            result["idle_cpu_ms"] = round((time.process_time() - cpu) * 1000, 1)
        elif scenario == "receive":
            count = args.messages

            async def receive(c: Any) -> int:
                for _ in range(count):
                    await c.recv()
                return count

            go = time.perf_counter()
            await asyncio.gather(*(c.send("go") for c in connections))
            received = sum(await asyncio.gather(*(receive(c) for c in connections)))
            elapsed = time.perf_counter() - go
            result["received"] = received
            result["rate"] = round(received / elapsed)
        stop = time.perf_counter()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        result["stop_s"] = round(time.perf_counter() - stop, 3)
        result["stopped"] = True
        result["graceful"] = sum(1 for c in connections if c.close_code == 1000)
        return result

    return asyncio.run(main())


def lomond_asyncio(base: str, scenario: str, args: argparse.Namespace) -> Dict[str, Any]:
    import asyncio

    sys.path.insert(0, args.lomond_path or ROOT)
    from lomond.asyncio import WebSocket

    n = {"scale": args.n, "connect": args.connect_n, "receive": args.receivers}[scenario]
    path = "/idle" if scenario != "receive" else f"/feed?count={args.messages}&size=16"
    target = n if scenario != "receive" else n * args.messages

    async def main() -> Dict[str, Any]:
        state = {"ready": 0, "failed": 0, "texts": 0, "graceful": 0}
        all_ready, all_received = asyncio.Event(), asyncio.Event()
        times: Dict[str, float] = {}

        async def run(websocket: Any) -> None:
            # poll=0: no Poll events (a WebSocketApp without a poll handler
            # gets none either); pings every 30 s, lomond's default.
            async for event in websocket.connect(poll=0):
                name = event.name
                if name == "text":
                    state["texts"] += 1
                    if state["texts"] == target:
                        times["received"] = time.perf_counter()
                        all_received.set()
                elif name == "ready" or name == "connect_fail":
                    state["ready" if name == "ready" else "failed"] += 1
                    if state["ready"] + state["failed"] == n:
                        times["ready"] = time.perf_counter()
                        all_ready.set()
                elif name == "disconnected" and event.graceful:
                    state["graceful"] += 1

        gc.collect()
        before = rss_kib()
        sockets = [WebSocket(base + path) for _ in range(n)]
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(run(websocket)) for websocket in sockets]
        await asyncio.wait_for(all_ready.wait(), 300)
        result: Dict[str, Any] = {
            "n": n, "ready": state["ready"], "failed": state["failed"],
            "ready_s": round(times["ready"] - started, 3),
        }
        if scenario == "scale":
            await asyncio.wait_for(all_received.wait(), 60)
            result["received"] = state["texts"]
            await asyncio.sleep(1.0)
            gc.collect()
            result["rss_per_conn_kib"] = round((rss_kib() - before) / n, 2)
            result["threads"] = thread_count()
            cpu = time.process_time()
            await asyncio.sleep(args.idle_seconds)
            result["idle_cpu_ms"] = round((time.process_time() - cpu) * 1000, 1)
        elif scenario == "receive":
            go = time.perf_counter()
            await asyncio.gather(*(websocket.send_text("go") for websocket in sockets))
            await asyncio.wait_for(all_received.wait(), 300)
            result["received"] = state["texts"]
            result["rate"] = round(state["texts"] / (times["received"] - go))
        stop = time.perf_counter()
        await asyncio.gather(*(websocket.close() for websocket in sockets))
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
        result["stop_s"] = round(time.perf_counter() - stop, 3)
        result["stopped"] = True
        result["graceful"] = state["graceful"]
        return result

    return asyncio.run(main())


RUNNERS = {
    "lomond-hub": lomond_hub,
    "lomond-asyncio": lomond_asyncio,
    "websockets-asyncio": websockets_asyncio,
}


# -- the parent ---------------------------------------------------------------------------


def run_child(name: str, scenario: str, base: str, argv: List[str]) -> Dict[str, Any]:
    runner, _, tree = name.partition("@")
    command = [sys.executable, os.path.abspath(__file__), "--child", runner,
               "--scenario", scenario, "--base", base, *argv]
    if tree:
        command += ["--lomond-path", tree]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 900 s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    return {"error": (done.stderr.strip().splitlines() or ["no result"])[-1]}


def merge_runs(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One result from repeated runs: the median-rate run, with every rate kept.

    A failed run makes the whole cell fail (its error is reported).
    """
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    if len(runs) == 1:
        return runs[0]
    ranked = sorted(runs, key=lambda r: r.get("rate") or 0)
    return {**ranked[(len(ranked) - 1) // 2], "rates": [r.get("rate") for r in runs]}


def paired_ratios(results: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    """lomond-hub's receive rate over each other client's, run by run ("" unless repeated)."""
    lines = []
    try:
        mine = results["lomond-hub"]["receive"]["rates"]
    except KeyError:
        return ""
    for other, per in results.items():
        theirs = per.get("receive", {}).get("rates")
        if other == "lomond-hub" or not theirs:
            continue
        ratios = sorted(a / b for a, b in zip(mine, theirs) if a and b)
        if not ratios:
            continue
        lines.append(
            f"Receive rate, lomond-hub / {other}, run by run ({len(ratios)} "
            f"alternating pairs): median {statistics.median(ratios):.3f}x, "
            f"min {ratios[0]:.3f}x, max {ratios[-1]:.3f}x; rates "
            + "; ".join(f"{a:,} / {b:,}" for a, b in zip(mine, theirs))
            + "."
        )
    if lines:
        lines.append("The table shows each client's median-rate run.")
    return "\n\n".join(lines)


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def report(results: Dict[str, Dict[str, Dict[str, Any]]], args: argparse.Namespace) -> str:
    names = list(results)
    rows: List[tuple] = [
        ("scale", f"{args.n:,} connections: all Ready (s)", "ready_s", "", 2),
        ("scale", "  Ready / failed", None, "", 0),
        ("scale", "  hello received", "received", "", 0),
        ("scale", "  memory per connection (KiB)", "rss_per_conn_kib", "", 1),
        ("scale", f"  CPU while idle, {args.idle_seconds:g} s (ms)", "idle_cpu_ms", "", 1),
        ("scale", "  threads", "threads", "", 0),
        ("scale", "  graceful stop (s)", "stop_s", "", 2),
        ("scale", "  closed gracefully", "graceful", "", 0),
        ("connect", f"{args.connect_n:,} at once: all Ready (s)", "ready_s", "", 2),
        ("receive", f"{args.receivers:,} x {args.messages:,} messages: msg/s", "rate", "", 0),
        ("receive", "  received", "received", "", 0),
    ]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for scenario, label, key, unit, digits in rows:
        cells = []
        for name in names:
            r = results[name].get(scenario, {})
            if "error" in r:
                cells.append("FAILED")
            elif key is None:
                cells.append(f"{r.get('ready', '-')} / {r.get('failed', '-')}")
            else:
                value = r.get(key)
                if isinstance(value, float) and digits == 0:
                    value = round(value)
                cells.append(fmt(value, unit, digits))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    errors = [
        f"- {name} {scenario}: {r['error'] if 'error' in r else r.get('first_error')}"
        for name, per in results.items()
        for scenario, r in per.items()
        if "error" in r or r.get("first_error")
    ]
    return "\n".join(lines + (["", *errors] if errors else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--connect-n", type=int, default=1_000)
    parser.add_argument("--receivers", type=int, default=1_000)
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--clients", nargs="+", default=CLIENTS, choices=CLIENTS)
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS, choices=SCENARIOS)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the receive scenario this many times, clients alternating")
    parser.add_argument("--output", help="where to write the report ('' for nowhere)")
    parser.add_argument(
        "--lomond-path", metavar="DIR",
        help="also run lomond-hub from this (older) lomond tree, as the client "
        "lomond-hub@DIR: a before/after comparison in one run",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.lomond_path and not args.child:
        args.clients = [*args.clients, f"lomond-hub@{args.lomond_path}"]
    if args.child:
        result = RUNNERS[args.child](args.base, args.scenario, args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    server, port = start_server()
    base = f"ws://127.0.0.1:{port}"
    argv = ["--n", str(args.n), "--connect-n", str(args.connect_n), "--receivers",
            str(args.receivers), "--messages", str(args.messages),
            "--idle-seconds", str(args.idle_seconds), "--repeat", str(args.repeat)]
    results: Dict[str, Dict[str, Dict[str, Any]]] = {name: {} for name in args.clients}
    try:
        for scenario in args.scenarios:
            # Only the receive rate is repeated: it is the figure that load
            # moves most, and the clients alternate who goes first so that a
            # change of load hits both alike.
            repeats = args.repeat if scenario == "receive" else 1
            runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in args.clients}
            for rep in range(repeats):
                order = args.clients if rep % 2 == 0 else args.clients[::-1]
                for name in order:
                    print(f"{name} {scenario} ...", file=sys.stderr, flush=True)
                    runs[name].append(run_child(name, scenario, base, argv))
                    print(f"  {runs[name][-1]}", file=sys.stderr, flush=True)
                    time.sleep(2.0)  # let the server settle (closing sockets, TIME_WAIT)
            for name in args.clients:
                results[name][scenario] = merge_runs(runs[name])
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)
    now = datetime.datetime.now(datetime.timezone.utc)
    text = "\n".join([
        f"# Many connections in one process ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        "`python benchmarks/hub_scale.py " + " ".join(argv) + "`",
        "",
        f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
        f"fd limit {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}; each client and scenario in "
        "its own process, the server (benchmarks/hub_server.py) in another; default "
        "settings (lomond: a ping every 30 s, and no Poll events since the apps have no "
        "Poll handler; websockets: a ping every 20 s). The idle window starts about a "
        "second after the last connection is Ready.",
        "",
        report(results, args),
        "",
        paired_ratios(results),
    ])
    print(text)
    output = args.output
    if output is None:
        output = os.path.join(HERE, "results", f"hub-scale-{now:%Y-%m-%d}.md")
    if output:
        with open(output, "w") as file:
            file.write(text)


if __name__ == "__main__":
    main()
