#!/usr/bin/env python
"""Compare lomond with websocket-client, websockets and a plain socket, in one run.

    python benchmarks/run.py [--scenarios ...] [--clients ...] [--repeat 3] [--quick]

Starts the cheap server (``server.py``) in its own process, then runs every
client on every scenario, each run in a fresh subprocess
(``client_runner.py``), ``--repeat`` times, rotating the client order so
drift on a shared machine does not favour one client. Every run is checked
(see README.md); a failed check marks the cell FAILED. Prints the table and
writes ``benchmarks/results/latest.md`` (and the raw runs as ``latest.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from clients import MODULES, PEERS  # noqa: E402
from scenarios import BY_NAME, Scenario, scaled_n  # noqa: E402

CLIENTS = list(MODULES)
RESULTS_DIR = os.path.join(HERE, "results")
RUN_TIMEOUT = 180.0
SERVER_REPORT_TIMEOUT = 20.0
MEMORY_SCENARIO = "recv_binary_1m"
PROFILE_SCENARIOS = ("echo_16", "recv_text_16", "recv_binary_1m", "send_binary_16")


# --- processes ----------------------------------------------------------------


def clean_env() -> Dict[str, str]:
    """The environment for clients: no proxy variables (all traffic is loopback)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", os.path.join(HERE, "server.py")],
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        if not first or first[0] != "PORT":
            raise RuntimeError(f"server did not start: {first!r}")
        self.port = int(first[1])
        self.unmask = first[2] if len(first) > 2 else ""
        self.reports: queue.Queue[Dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.reports.put(json.loads(line))
            except ValueError:
                pass

    def report(
        self, run_id: str, timeout: float = SERVER_REPORT_TIMEOUT
    ) -> Optional[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                report = self.reports.get(timeout=left)
            except queue.Empty:
                return None
            if report.get("id") == run_id:
                return report

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_client(spec: Dict[str, Any], timeout: float = RUN_TIMEOUT) -> Dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, os.path.join(HERE, "client_runner.py"), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(),
            cwd=HERE,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": f"no result (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"}


# --- one measured run ---------------------------------------------------------


def check(
    scenario: Scenario, n: int, result: Dict[str, Any], server: Optional[Dict[str, Any]]
) -> Optional[str]:
    """Why this run is invalid, or None."""
    if "error" in result:
        return result["error"]
    if scenario.mode == "send" and result.get("ack") != result.get("ack_expected"):
        return f"server acknowledged {result.get('ack')!r}, expected {result.get('ack_expected')!r}"
    if result.get("count") != n:
        return f"client got {result.get('count')} of {n} messages"
    if result.get("mismatches"):
        return f"{result['mismatches']} messages differ from what was sent"
    if server is None:
        return "no report from the server"
    if server.get("error"):
        return "server: " + server["error"]
    if scenario.mode == "recv" and server.get("sent") != n:
        return f"server sent {server.get('sent')} of {n}"
    if scenario.mode == "send" and (server.get("received") != n or server.get("mismatches")):
        return f"server received {server.get('received')} of {n}, {server.get('mismatches')} differ"
    if scenario.mode == "echo" and server.get("echoed") != n:
        return f"server echoed {server.get('echoed')} of {n}"
    if scenario.deflate:
        if not server.get("accepted"):
            return f"permessage-deflate not negotiated (offer: {server.get('offered')!r})"
        if not result.get("extensions"):
            return "client does not report the negotiated permessage-deflate"
    return None


def throughput(scenario: Scenario, n: int, elapsed: float) -> float:
    if scenario.unit == "MB/s":
        return n * scenario.size / elapsed / 1e6
    return n / elapsed


def measure(
    server: Server,
    client: str,
    scenario: Scenario,
    n: int,
    run_id: str,
    mode: str = "bench",
    **extra: Any,
) -> Dict[str, Any]:
    url = f"ws://127.0.0.1:{server.port}/{scenario.name}?n={n}&id={run_id}"
    spec = {"client": client, "scenario": scenario.name, "url": url, "n": n, "mode": mode, **extra}
    result = run_client(spec)
    record: Dict[str, Any] = {
        "client": client,
        "scenario": scenario.name,
        "n": n,
        "id": run_id,
        "mode": mode,
        "result": result,
    }
    if "unsupported" in result:
        record["status"] = "n/a"
        record["reason"] = result["unsupported"]
        return record
    if result.get("available") is False:
        record["status"] = "unavailable"
        record["reason"] = result.get("reason")
        return record
    report = server.report(run_id)
    record["server"] = report
    problem = check(scenario, n, result, report)
    if problem:
        record["status"] = "FAILED"
        record["reason"] = problem
    else:
        record["status"] = "ok"
        record["value"] = throughput(scenario, n, result["elapsed_s"])
    return record


# --- reporting ----------------------------------------------------------------


def fmt_value(value: float, unit: str) -> str:
    if unit == "MB/s":
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    return f"{value / 1000:,.1f}k"


def machine_info(client_info: Dict[str, Dict[str, Any]]) -> Dict[str, str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    try:
        from importlib import metadata

        for dist in ("lomond", "websocket-client", "websockets", "wsaccel"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = "not installed"
    except ImportError:  # pragma: no cover
        pass
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def aggregate(records: List[Dict[str, Any]], scenario: str, client: str) -> Dict[str, Any]:
    rows = [
        r
        for r in records
        if r["scenario"] == scenario and r["client"] == client and r["mode"] == "bench"
    ]
    if not rows:
        return {"status": "skipped"}
    for status in ("unavailable", "n/a", "FAILED"):
        bad = [r for r in rows if r["status"] == status]
        if bad:
            return {
                "status": status,
                "reason": bad[0].get("reason"),
                "runs": len(rows),
                "bad": len(bad),
            }
    values = [r["value"] for r in rows]
    server_cpu = [
        r["server"]["cpu_s"] / r["result"]["elapsed_raw_s"]
        for r in rows
        if r.get("server") and r["result"].get("elapsed_raw_s")
    ]
    return {
        "status": "ok",
        "median": statistics.median(values),
        "values": values,
        "handshake_ms": statistics.median(r["result"]["handshake_s"] * 1000 for r in rows),
        "server_cpu": statistics.median(server_cpu) if server_cpu else None,
        "rss_delta_kib": statistics.median(r["result"]["rss_delta_kib"] for r in rows),
        "rss_peak_kib": statistics.median(r["result"]["rss_peak_kib"] for r in rows),
        "offered": rows[0].get("server", {}).get("offered"),
        "accepted": rows[0].get("server", {}).get("accepted"),
    }


def cell(agg: Dict[str, Any], unit: str) -> str:
    status = agg["status"]
    if status == "ok":
        mark = "†" if agg.get("server_cpu") and agg["server_cpu"] > 0.85 else ""
        return fmt_value(agg["median"], unit) + mark
    return {"unavailable": "unavail.", "n/a": "n/a", "FAILED": "FAILED", "skipped": "-"}[status]


def ratio(a: Dict[str, Any], b: Optional[Dict[str, Any]]) -> str:
    if a["status"] != "ok" or not b or b["status"] != "ok":
        return "-"
    return f"{a['median'] / b['median']:.2f}"


def build_report(
    scenarios: List[Scenario],
    clients: List[str],
    records: List[Dict[str, Any]],
    client_info: Dict[str, Dict[str, Any]],
    memory: Dict[str, Dict[str, Any]],
    machine: Dict[str, str],
    args: argparse.Namespace,
    server_unmask: str,
    elapsed: float,
    loads: Tuple[str, str],
) -> Tuple[str, str]:
    """(terminal text, markdown)"""
    aggs = {(s.name, c): aggregate(records, s.name, c) for s in scenarios for c in clients}
    peers = [c for c in clients if c in PEERS]
    header = ["scenario", "unit", *clients]
    if "lomond" in clients:
        header += ["lomond/best peer", "best peer", "lomond/plain"]
    if "lomond-asyncio" in clients:
        # asyncio against asyncio: the websockets asyncio client, and the
        # plain-socket reference on an asyncio.Protocol (the loop's ceiling).
        header += ["asyncio: lomond/websockets", "asyncio: lomond/plain"]
    table: List[List[str]] = []
    for s in scenarios:
        row = [s.name, s.unit] + [cell(aggs[(s.name, c)], s.unit) for c in clients]
        if "lomond" in clients:
            ok_peers = [aggs[(s.name, p)] for p in peers if aggs[(s.name, p)]["status"] == "ok"]
            best = max(ok_peers, key=lambda a: a["median"]) if ok_peers else None
            best_name = next((p for p in peers if aggs[(s.name, p)] is best), "-")
            lom = aggs[(s.name, "lomond")]
            row += [ratio(lom, best), best_name, ratio(lom, aggs.get((s.name, "plain")))]
        if "lomond-asyncio" in clients:
            lom = aggs[(s.name, "lomond-asyncio")]
            row += [ratio(lom, aggs.get((s.name, "websockets-asyncio"))),
                    ratio(lom, aggs.get((s.name, "plain-asyncio")))]
        table.append(row)

    failures = []
    for (sname, c), agg in aggs.items():
        if agg["status"] == "FAILED":
            failures.append(
                f"- {sname} / {c}: FAILED in {agg['bad']} of {agg['runs']} runs: {agg['reason']}"
            )
        elif agg["status"] == "n/a":
            failures.append(f"- {sname} / {c}: n/a ({agg['reason']})")
    unavailable = [
        f"- {c}: unavailable ({info.get('reason')})"
        for c, info in client_info.items()
        if not info.get("available")
    ]

    mem_header = ["client", "RSS Δ peak (MiB)", "RSS peak (MiB)", "tracemalloc peak (MiB)"]
    mem_rows = []
    for c in clients:
        agg = aggs.get((MEMORY_SCENARIO, c))
        tm = memory.get(c, {})
        if not agg or agg["status"] != "ok":
            if agg and agg["status"] in ("unavailable", "n/a", "FAILED"):
                mem_rows.append([c, agg["status"], "", ""])
            continue
        tm_val = tm.get("tracemalloc_peak_kib")
        mem_rows.append(
            [
                c,
                f"{agg['rss_delta_kib'] / 1024:.1f}",
                f"{agg['rss_peak_kib'] / 1024:.1f}",
                f"{tm_val / 1024:.1f}" if tm_val is not None else (tm.get("status") or "-"),
            ]
        )

    detail_header = [
        "scenario",
        "client",
        "runs",
        "median",
        "min",
        "max",
        "handshake ms",
        "server CPU",
    ]
    details = []
    for s in scenarios:
        for c in clients:
            agg = aggs[(s.name, c)]
            if agg["status"] != "ok":
                continue
            vals = agg["values"]
            details.append(
                [
                    s.name,
                    c,
                    str(len(vals)),
                    fmt_value(agg["median"], s.unit),
                    fmt_value(min(vals), s.unit),
                    fmt_value(max(vals), s.unit),
                    f"{agg['handshake_ms']:.1f}",
                    f"{agg['server_cpu'] * 100:.0f}%" if agg["server_cpu"] is not None else "-",
                ]
            )

    deflate = []
    for s in scenarios:
        if not s.deflate:
            continue
        for c in clients:
            rows = [
                r
                for r in records
                if r["scenario"] == s.name and r["client"] == c and r.get("server")
            ]
            if rows:
                srv = rows[0]["server"]
                deflate.append(
                    f"- {s.name}, {c}: offers `{srv.get('offered')}` -> "
                    f"server accepts `{srv.get('accepted')}`"
                )

    def text_table(head: List[str], rows: List[List[str]]) -> str:
        widths = (
            [max(len(str(x)) for x in col) for col in zip(head, *rows)]
            if rows
            else [len(h) for h in head]
        )
        lines = [
            "  ".join(
                str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths))
            )
            for r in [head, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def md_table(head: List[str], rows: List[List[str]]) -> str:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)

    settings = [
        f"- {c} {client_info[c].get('version', '')}: {client_info[c].get('settings', '')}"
        for c in clients
        if client_info.get(c, {}).get("available")
    ]
    notes = [
        f"Medians of {args.repeat} run(s) per cell, each client in a fresh process; "
        "msg/s and rt/s in thousands (k), MB/s = 10^6 payload bytes per second.",
        "Ratios > 1 mean lomond is faster. Best peer = the faster of websocket-client and "
        "websockets "
        "for that scenario; the plain socket is the ceiling.",
        "† = the server process was over 85% busy during the run: "
        "the number may be limited by the server.",
    ]
    mem_note = (
        f"Memory, {MEMORY_SCENARIO}: RSS Δ = ru_maxrss at the end of the timed run minus the RSS "
        "just before connecting (after imports), median of the runs; "
        "RSS peak = the process's ru_maxrss, interpreter and "
        f"imports included; tracemalloc peak = Python allocations traced during one extra run "
        f"of {memory.get('_n', '?')} messages (not timed)."
    )
    scale_note = (
        f"scale {args.scale:g} (message counts: "
        + ", ".join(f"{s.name} {scaled_n(s, args.scale):,}" for s in scenarios)
        + ")"
    )

    txt = [
        "lomond benchmark - " + machine["date"],
        f"{machine['nproc']} CPUs, {machine['cpu']}; {machine['python']}; load avg before/after: "
        f"{loads[0]} / {loads[1]}",
        machine["packages"],
        scale_note,
        "",
        text_table(header, table),
        "",
        *notes,
        "",
        text_table(mem_header, mem_rows),
        mem_note,
    ]
    if failures or unavailable:
        txt += ["", "Not measured / failed:", *unavailable, *failures]
    txt.append(f"\ntotal time {elapsed:.0f}s")

    md = [
        "# lomond benchmark results",
        "",
        f"Generated by `python benchmarks/run.py {' '.join(args.argv)}`".rstrip()
        + f" in {elapsed:.0f} s.",
        "",
        f"- date: {machine['date']}",
        f"- machine: {machine['nproc']} CPUs (`nproc`), {machine['cpu']}, {machine['platform']}",
        f"- load average before / after: {loads[0]} / {loads[1]}",
        f"- Python: {machine['python']}",
        f"- packages: {machine['packages']}",
        f"- server unmasking: {server_unmask}",
        f"- {scale_note}",
        "",
        "## Throughput",
        "",
        md_table(header, table),
        "",
        *[f"- {n}" for n in notes],
        "",
        "## Memory",
        "",
        md_table(mem_header, mem_rows),
        "",
        mem_note,
        "",
        "## Client settings",
        "",
        *settings,
        "",
    ]
    if deflate:
        md += ["## permessage-deflate negotiation (deflate scenarios)", "", *deflate, ""]
    if failures or unavailable:
        md += ["## Not measured / failed", "", *unavailable, *failures, ""]
    md += [
        "## Every cell",
        "",
        md_table(detail_header, details),
        "",
        "server CPU = the server process's CPU time / the client's timed interval (median).",
        "",
    ]
    return "\n".join(txt), "\n".join(md)


# --- main ---------------------------------------------------------------------


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def parse_list(values: Optional[List[str]], allowed: List[str], what: str) -> List[str]:
    if not values:
        return list(allowed)
    names = [v for value in values for v in value.split(",") if v]
    for name in names:
        if name not in allowed:
            raise SystemExit(f"unknown {what} {name!r}; choose from {', '.join(allowed)}")
    return [a for a in allowed if a in names]


def profile(server: Server, scale: float, profiler: str, scenarios: List[str]) -> List[str]:
    """Profile lomond on a few scenarios; returns the report paths."""
    outputs = []
    for name in scenarios:
        scenario = BY_NAME[name]
        n = scaled_n(scenario, scale)
        suffix = "txt" if profiler == "cprofile" else "pyinstrument.txt"
        out = os.path.join(RESULTS_DIR, f"profile-{name}.{suffix}")
        record = measure(
            server,
            "lomond",
            scenario,
            n,
            f"profile-{name}",
            mode="profile",
            profiler=profiler,
            profile_out=out,
        )
        if record["status"] != "ok":
            print(f"profile {name}: {record['status']} {record.get('reason')}")
            continue
        print(f"profile {name}: {out}")
        outputs.append(out)
    return outputs


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        nargs="+",
        metavar="NAME",
        help=f"scenarios to run (default: all): {', '.join(BY_NAME)}",
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        metavar="NAME",
        help=f"clients to run (default: all): {', '.join(CLIENTS)}",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per cell (default 3, 1 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: 1/10 of the messages, 1 run"
    )
    parser.add_argument("--scale", type=float, default=None, help="multiply every message count")
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the tracemalloc memory run"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"also profile lomond on {', '.join(PROFILE_SCENARIOS)}",
    )
    parser.add_argument("--profile-only", action="store_true", help="only profile lomond")
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    parser.add_argument(
        "--output",
        default=os.path.join(RESULTS_DIR, "latest.md"),
        help="markdown report path ('' to skip writing)",
    )
    args = parser.parse_args(argv)
    args.argv = argv
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.scale is None:
        args.scale = 0.1 if args.quick else 1.0
    scenarios = [BY_NAME[n] for n in parse_list(args.scenarios, list(BY_NAME), "scenario")]
    clients = parse_list(args.clients, CLIENTS, "client")
    os.makedirs(RESULTS_DIR, exist_ok=True)

    start = time.monotonic()
    load_before = loadavg()
    server = Server()
    try:
        if args.profile_only:
            profile(
                server,
                args.scale,
                args.profiler,
                [s.name for s in scenarios if s.name in PROFILE_SCENARIOS]
                or list(PROFILE_SCENARIOS),
            )
            return 0
        client_info = {c: run_client({"client": c, "mode": "probe"}) for c in clients}
        for c, info in client_info.items():
            state = (
                f"{info.get('version')}"
                if info.get("available")
                else f"UNAVAILABLE: {info.get('reason')}"
            )
            print(f"{c:17} {state}", flush=True)
        active = [c for c in clients if client_info[c].get("available")]

        records: List[Dict[str, Any]] = []
        # Placeholders so unavailable clients show up in the table.
        for c in clients:
            if c not in active:
                for s in scenarios:
                    records.append(
                        {
                            "client": c,
                            "scenario": s.name,
                            "mode": "bench",
                            "status": "unavailable",
                            "reason": client_info[c].get("reason"),
                        }
                    )
        total = args.repeat * len(scenarios) * len(active)
        done = 0
        for rep in range(args.repeat):
            for si, scenario in enumerate(scenarios):
                n = scaled_n(scenario, args.scale)
                shift = (rep + si) % max(1, len(active))
                for client in active[shift:] + active[:shift]:
                    record = measure(server, client, scenario, n, f"{rep}-{scenario.name}-{client}")
                    records.append(record)
                    done += 1
                    shown = (
                        fmt_value(record["value"], scenario.unit) + " " + scenario.unit
                        if record["status"] == "ok"
                        else f"{record['status']} {record.get('reason') or ''}"
                    )
                    print(
                        f"[{done}/{total}] run {rep + 1} {scenario.name:22} {client:17} {shown}",
                        flush=True,
                    )

        memory: Dict[str, Dict[str, Any]] = {}
        if not args.no_tracemalloc and any(s.name == MEMORY_SCENARIO for s in scenarios):
            mscen = BY_NAME[MEMORY_SCENARIO]
            mn = max(mscen.k, min(scaled_n(mscen, args.scale), 100))
            memory["_n"] = mn  # type: ignore[assignment]
            for client in active:
                rec = measure(
                    server, client, mscen, mn, f"tracemalloc-{client}", mode="tracemalloc"
                )
                if rec["status"] == "ok":
                    memory[client] = {
                        "tracemalloc_peak_kib": rec["result"].get("tracemalloc_peak_kib")
                    }
                else:
                    memory[client] = {"status": rec["status"]}

        profiles: List[str] = []
        if args.profile and "lomond" in active:
            profiles = profile(server, args.scale, args.profiler, list(PROFILE_SCENARIOS))
    finally:
        server.stop()

    elapsed = time.monotonic() - start
    machine = machine_info(client_info)
    text, md = build_report(
        scenarios,
        clients,
        records,
        client_info,
        memory,
        machine,
        args,
        server.unmask,
        elapsed,
        (load_before, loadavg()),
    )
    print()
    print(text)
    if profiles:
        md += (
            "\n## Profiles\n\n"
            + "\n".join(f"- `{os.path.relpath(p, HERE)}`" for p in profiles)
            + "\n"
        )
    if args.output:
        with open(args.output, "w") as f:
            f.write(md)
        raw = os.path.splitext(args.output)[0] + ".json"
        with open(raw, "w") as f:
            json.dump(
                {"machine": machine, "clients": client_info, "records": records, "memory": memory},
                f,
                indent=1,
                default=str,
            )
        print(f"\nwrote {os.path.relpath(args.output)} and {os.path.relpath(raw)}")
    failed = any(r.get("status") == "FAILED" for r in records)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
