"""What idle connections cost: CPU, memory and threads, lomond beside its peers, in one run.

Usage::

    python benchmarks/idle.py                      # 300 connections, 10 s idle, every client
    python benchmarks/idle.py --n 100 --seconds 10 --lomond-path /work/wt/before
    python benchmarks/idle.py --clients lomond-hub websockets-asyncio --n 1000

A cheap server (``hub_server.py``, path ``/idle``: one ``hello``, then
silence, no pings) runs in its own process; each client runs in a fresh
process of its own and opens ``--n`` connections with its default settings,
waits until all are open, lets them settle for a second, then measures for
``--seconds``:

- *CPU*: the process's user + system time (``time.process_time()``, every thread)
  during the idle window, in milliseconds;
- *RSS / conn*: resident memory after connecting minus before (after
  imports), divided by ``--n`` (``VmRSS`` from ``/proc/self/status``);
- *threads*: the process's threads while connected.

Clients: ``lomond-threaded`` (``WebSocketApp.start()`` each: a thread per
connection), ``lomond-hub`` (every app on one :class:`lomond.handlers.Hub`),
the same two with a Poll handler (``+poll``: a Poll event every 5 s, the
default, which apps without a Poll handler do not get),
``websocket-client`` (its ``WebSocketApp.run_forever`` in a thread each),
``websockets-asyncio`` (``websockets.asyncio.client.connect``, one event loop).
``--lomond-path DIR`` also runs ``lomond-threaded`` from an older lomond tree
(``lomond-threaded@DIR``) for a before/after comparison.

The table is printed and written to ``benchmarks/results/idle-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLIENTS = [
    "lomond-threaded", "lomond-threaded+poll", "lomond-hub", "lomond-hub+poll",
    "websocket-client", "websockets-asyncio",
]


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def thread_count() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    # CLOCK_PROCESS_CPUTIME_ID: every thread, nanosecond resolution (os.times()
    # counts in clock ticks of 10 ms, too coarse for an idle process).
    return time.process_time()


def measure(n: int, seconds: float, before: int) -> Dict[str, Any]:
    """Settle, then the idle window; the caller's connections are open."""
    time.sleep(1.0)
    gc.collect()
    after = rss_kib()
    threads = thread_count()
    start = cpu_seconds()
    time.sleep(seconds)
    cpu = cpu_seconds() - start
    return {
        "cpu_ms": round(cpu * 1000, 1),
        "rss_per_conn_kib": round((after - before) / n, 2),
        "threads": threads,
    }


# -- the clients (each in its own process) ----------------------------------------------


def make_apps(url: str, n: int, poll: bool) -> List[Any]:
    from lomond.handlers import WebSocketApp

    apps = [WebSocketApp(url) for _ in range(n)]
    if poll:  # an app that handles Poll events gets one every 5 s (the default)
        for app in apps:
            app.on("poll")(lambda event: None)
    return apps


def run_lomond_threaded(url: str, n: int, seconds: float, poll: bool = False) -> Dict[str, Any]:
    import lomond.handlers  # noqa: F401 - imported before the baseline is measured

    gc.collect()
    before = rss_kib()
    apps = make_apps(url, n, poll)
    for app in apps:
        app.start()
    ready = sum(app.wait_ready(60) for app in apps)
    result = measure(n, seconds, before)
    for app in apps:
        app.stop(10)
    result["ready"] = ready
    return result


def run_lomond_hub(url: str, n: int, seconds: float, poll: bool = False) -> Dict[str, Any]:
    from lomond.handlers import Hub

    gc.collect()
    before = rss_kib()
    hub = Hub()
    apps = make_apps(url, n, poll)
    for app in apps:
        hub.add(app)
    hub.start()
    ready = sum(app.wait_ready(60) for app in apps)
    result = measure(n, seconds, before)
    hub.stop(30)
    result["ready"] = ready
    return result


def run_websocket_client(url: str, n: int, seconds: float) -> Dict[str, Any]:
    import websocket

    gc.collect()
    before = rss_kib()
    opened = threading.Semaphore(0)
    apps = [websocket.WebSocketApp(url, on_open=lambda ws: opened.release()) for _ in range(n)]
    for app in apps:
        threading.Thread(target=app.run_forever, daemon=True).start()
    ready = sum(opened.acquire(timeout=60) for _ in apps)
    result = measure(n, seconds, before)
    for app in apps:
        app.close()
    result["ready"] = ready
    return result


def run_websockets_asyncio(url: str, n: int, seconds: float) -> Dict[str, Any]:
    import asyncio

    from websockets.asyncio.client import connect

    async def main() -> Dict[str, Any]:
        gc.collect()
        before = rss_kib()
        connections = await asyncio.gather(*(connect(url) for _ in range(n)))
        await asyncio.sleep(1.0)
        gc.collect()
        after = rss_kib()
        threads = thread_count()
        start = cpu_seconds()
        await asyncio.sleep(seconds)
        cpu = cpu_seconds() - start
        await asyncio.gather(*(c.close() for c in connections))
        return {
            "cpu_ms": round(cpu * 1000, 1),
            "rss_per_conn_kib": round((after - before) / n, 2),
            "threads": threads,
            "ready": len(connections),
        }

    return asyncio.run(main())


RUNNERS = {
    "lomond-threaded": run_lomond_threaded,
    "lomond-hub": run_lomond_hub,
    "websocket-client": run_websocket_client,
    "websockets-asyncio": run_websockets_asyncio,
}


def child(args: argparse.Namespace) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.path.insert(0, args.lomond_path or ROOT)
    name = args.child.split("@")[0]
    if name.endswith("+poll"):
        result = RUNNERS[name[:-5]](args.url, args.n, args.seconds, True)  # type: ignore[call-arg]
    else:
        result = RUNNERS[name](args.url, args.n, args.seconds)
    if name.startswith("lomond"):
        import lomond

        result["lomond"] = os.path.dirname(os.path.dirname(os.path.abspath(lomond.__file__)))
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent ---------------------------------------------------------------------------


def start_server() -> tuple:
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "hub_server.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("PORT "):
        server.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return server, int(line.split()[1])


def run_client(
    name: str, url: str, n: int, seconds: float, lomond_path: Optional[str]
) -> Dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", name, "--url", url,
               "--n", str(n), "--seconds", str(seconds)]
    if lomond_path:
        command += ["--lomond-path", lomond_path]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 180)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    return {"error": (done.stderr.strip().splitlines() or ["no result"])[-1]}


def table(results: Dict[str, Dict[str, Any]], n: int, seconds: float) -> str:
    lines = [
        f"| client ({n} idle connections, {seconds:g} s) | memory per connection "
        f"| CPU while idle, {seconds:g} s | threads | ready |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | FAILED: {r['error']} | | | |")
            continue
        lines.append(
            f"| {name} | {r['rss_per_conn_kib']:.1f} KiB | {r['cpu_ms']:.1f} ms "
            f"({r['cpu_ms'] / (seconds * 10):.2f}% of a core) | {r['threads']} | {r['ready']}/{n} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="connections per client")
    parser.add_argument("--seconds", type=float, default=10.0, help="the idle window")
    parser.add_argument("--clients", nargs="+", default=CLIENTS, choices=CLIENTS)
    parser.add_argument("--lomond-path", help="also run lomond-threaded from this tree")
    parser.add_argument("--output", help="where to write the report ('' for nowhere)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    server, port = start_server()
    url = f"ws://127.0.0.1:{port}/idle"
    results: Dict[str, Dict[str, Any]] = {}
    try:
        runs: List[tuple] = [(name, None) for name in args.clients]
        if args.lomond_path:
            runs.insert(0, (f"lomond-threaded@{args.lomond_path}", args.lomond_path))
        for name, path in runs:
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = run_client(name, url, args.n, args.seconds, path)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    now = datetime.datetime.now(datetime.timezone.utc)
    report = "\n".join([
        f"# Idle connections ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python benchmarks/idle.py --n {args.n} --seconds {args.seconds:g}"
        + (f" --lomond-path {args.lomond_path}" if args.lomond_path else "") + "`",
        "",
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}; each client in its own process, the server "
        "(benchmarks/hub_server.py) in another; default settings everywhere.",
        "",
        table(results, args.n, args.seconds),
        "",
    ])
    print(report)
    output = args.output
    if output is None:
        output = os.path.join(HERE, "results", f"idle-{now:%Y-%m-%d}-n{args.n}.md")
    if output:
        with open(output, "w") as file:
            file.write(report)


if __name__ == "__main__":
    main()
