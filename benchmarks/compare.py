#!/usr/bin/env python
"""Before/after: the lomond client of two or more source trees, side by side in one run.

    python benchmarks/compare.py --tree before=/path/to/old --tree after=. [--repeat 5]
        [--scenarios ...] [--scale 1] [--trace] [--build-ext] [--output PATH]

Every run is the lomond adapter (``clients/lomond_client.py``) in a fresh
``client_runner.py`` subprocess with ``PYTHONPATH=<tree>``, against one
``server.py`` (this checkout's), checked exactly like ``run.py`` checks it.
Runs are interleaved: for each repeat and scenario every variant runs once,
and the order rotates from one repeat to the next (A B, B A, ...), so a load
change on the shared machine hits all variants alike. A run's ratio is taken
against the first tree *in the same repeat* (a paired run); the report gives
per scenario the median of each variant, the ratio of the medians and the
min/max of the paired ratios (the spread).

``--trace`` adds one more variant: the last tree again with
``WebSocket(..., trace=<no-op callable>)``, so the cost of the trace hook
shows as its own column, next to the same tree with ``trace=None``.

Which lomond each subprocess imported is checked: the probe prints
``lomond.__file__`` once per tree, and every run's ``lomond.__file__`` must lie
inside the tree it was given (a stale lomond in site-packages must not win).

Both sides must mask with the same implementation: ``--build-ext`` copies
each tree's ``lomond/`` and setup files to a temporary directory and builds
``lomond._speedups`` in place there (the trees themselves are never
written); without it the trees run as they are and the script refuses to
compare trees whose ``lomond.accel.IMPLEMENTATION`` differ.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run as bench  # noqa: E402
from scenarios import BY_NAME, Scenario, scaled_n  # noqa: E402

RESULTS_DIR = os.path.join(HERE, "results")
# Builds only the extension; the tree's own setup files are not copied (an old
# setuptools may reject a newer pyproject.toml, and nothing else is needed).
BUILD_EXT = (
    "from setuptools import Extension, setup; "
    "setup(name='lomond-bench-copy', script_args=['-q', 'build_ext', '--inplace'], "
    "ext_modules=[Extension('lomond._speedups', ['lomond/_speedups.c'])])"
)


class Variant:
    """One column: a lomond tree (its path goes first on PYTHONPATH) and extra environment."""

    def __init__(self, name: str, path: str, env: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self.path = os.path.abspath(path)
        self.source = self.path  # the tree as given (path may be a built copy)
        self.extra = dict(env or {})
        self.info: Dict[str, Any] = {}

    def env(self) -> Dict[str, str]:
        env = bench.clean_env()
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = self.path + (os.pathsep + old if old else "")
        env.update(self.extra)
        return env


def parse_tree(text: str) -> Tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--tree wants NAME=PATH, not {text!r}")
    if not os.path.isfile(os.path.join(path, "lomond", "__init__.py")):
        raise SystemExit(f"--tree {name}: no lomond package in {path}")
    return name, path


def build_copy(name: str, path: str, root: str) -> str:
    """Copy ``path``'s lomond package under ``root`` and compile its C extension there."""
    dest = os.path.join(root, name)
    shutil.copytree(
        os.path.join(path, "lomond"),
        os.path.join(dest, "lomond"),
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_EXT],
        cwd=dest,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(f"building {name}'s extension failed:\n{proc.stderr[-2000:]}")
    return dest


def run_client(
    spec: Dict[str, Any],
    variant: Variant,
    prefix: Sequence[str] = (),
    timeout: float = bench.RUN_TIMEOUT,
) -> Dict[str, Any]:
    """Run ``client_runner.py`` with the variant's lomond (``prefix``: e.g. valgrind's command)."""
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, os.path.join(HERE, "client_runner.py"), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=variant.env(),
            cwd=HERE,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: Dict[str, Any] = json.loads(line[7:])
            return result
    return {"error": f"no result (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"}


def inside(path: Optional[str], tree: str) -> bool:
    return bool(path) and os.path.abspath(str(path)).startswith(tree + os.sep)


def measure(
    server: bench.Server,
    variant: Variant,
    scenario: Scenario,
    n: int,
    run_id: str,
    prefix: Sequence[str] = (),
    timeout: float = bench.RUN_TIMEOUT,
) -> Dict[str, Any]:
    """One checked run of the lomond adapter from ``variant``'s tree."""
    url = f"ws://127.0.0.1:{server.port}/{scenario.name}?n={n}&id={run_id}"
    spec = {"client": "lomond", "scenario": scenario.name, "url": url, "n": n, "mode": "bench"}
    result = run_client(spec, variant, prefix, timeout)
    record: Dict[str, Any] = {
        "variant": variant.name,
        "scenario": scenario.name,
        "n": n,
        "id": run_id,
        "result": result,
    }
    report = server.report(run_id) if "error" not in result else None
    record["server"] = report
    problem = bench.check(scenario, n, result, report)
    if not problem and not inside(result.get("lomond_file"), variant.path):
        problem = f"imported lomond from {result.get('lomond_file')}, not from {variant.path}"
    if problem:
        record["status"] = "FAILED"
        record["reason"] = problem
    else:
        record["status"] = "ok"
        record["value"] = bench.throughput(scenario, n, result["elapsed_s"])
    return record


def fmt_ratio(x: float) -> str:
    return f"{x:.3f}"


def summarize(
    records: List[Dict[str, Any]], scenario: str, variants: List[Variant], repeat: int
) -> Dict[str, Any]:
    """Medians per variant, and per non-baseline variant the paired ratios against its base."""
    by: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for r in records:
        if r["scenario"] == scenario:
            by[(r["variant"], r["rep"])] = r
    out: Dict[str, Any] = {"median": {}, "failed": {}}
    for v in variants:
        rows = [by.get((v.name, i)) for i in range(repeat)]
        bad = [r for r in rows if r is None or r["status"] != "ok"]
        if bad:
            out["failed"][v.name] = next((r.get("reason") for r in bad if r), "missing")
            continue
        out["median"][v.name] = statistics.median(r["value"] for r in rows if r)
    return out | {"by": by}


def pair_ratios(
    summary: Dict[str, Any], a: str, b: str, repeat: int
) -> Optional[Tuple[float, float, float, float]]:
    """(ratio of medians b/a, median, min, max of the paired ratios), or None if a run failed."""
    if a not in summary["median"] or b not in summary["median"]:
        return None
    by = summary["by"]
    pairs = [by[(b, i)]["value"] / by[(a, i)]["value"] for i in range(repeat)]
    return (
        summary["median"][b] / summary["median"][a],
        statistics.median(pairs),
        min(pairs),
        max(pairs),
    )


def md_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a lomond source tree (repeat; the first is the baseline A)",
    )
    parser.add_argument("--scenarios", nargs="+", metavar="NAME", help="default: all")
    parser.add_argument("--repeat", type=int, default=5, help="paired runs per scenario")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also run the last tree with WebSocket(trace=<no-op callable>)",
    )
    parser.add_argument(
        "--build-ext",
        action="store_true",
        help="build lomond._speedups in a temporary copy of each tree (same masking for all)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="markdown report (default results/compare-<date>.md; '' to write nothing)",
    )
    args = parser.parse_args(argv)
    trees = [parse_tree(t) for t in args.tree]
    if len(trees) < 2 and not args.trace:
        raise SystemExit("give two trees or more (or one tree with --trace)")
    if len({n for n, _ in trees}) != len(trees):
        raise SystemExit("tree names must differ")
    names = bench.parse_list(args.scenarios, list(BY_NAME), "scenario")
    scenarios = [BY_NAME[n] for n in names]

    tmp = tempfile.mkdtemp(prefix="lomond-compare-") if args.build_ext else None
    try:
        variants = make_variants(trees, tmp, args.trace)
        probe_variants(variants)
        return compare(args, argv, variants, scenarios)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def make_variants(
    trees: List[Tuple[str, str]], build_root: Optional[str], trace: bool
) -> List[Variant]:
    """One variant per tree (a built copy under ``build_root`` if given), plus the trace one."""
    variants = []
    for name, path in trees:
        v = Variant(name, build_copy(name, path, build_root) if build_root else path)
        v.source = os.path.abspath(path)
        variants.append(v)
    if trace:
        last = variants[-1]
        tv = Variant(last.name + "+trace", last.path, {"LOMOND_BENCH_TRACE": "noop"})
        tv.source = last.source
        variants.append(tv)
    return variants


def probe_variants(variants: List[Variant]) -> None:
    """Print which lomond each variant imports; exit unless each is its tree's, same masking."""
    for v in variants:
        v.info = run_client({"client": "lomond", "mode": "probe"}, v)
        if not v.info.get("available"):
            raise SystemExit(f"{v.name}: lomond unavailable: {v.info.get('reason')}")
        print(
            f"{v.name:16} lomond {v.info.get('version')} from {v.info.get('file')} "
            f"(accel {v.info.get('accel')}; tree {v.source})",
            flush=True,
        )
        if not inside(v.info.get("file"), v.path):
            raise SystemExit(f"{v.name}: imported {v.info.get('file')}, not the tree {v.path}")
    accels = {v.info.get("accel") for v in variants}
    if len(accels) > 1:
        raise SystemExit(
            f"the trees mask with different implementations ({', '.join(map(str, accels))}): "
            "use --build-ext, or set LOMOND_NO_ACCEL=1 for all"
        )


def compare(
    args: argparse.Namespace, argv: List[str], variants: List[Variant], scenarios: List[Scenario]
) -> int:
    """The interleaved runs, the table and the report."""
    start = time.monotonic()
    load_before = bench.loadavg()
    server = bench.Server()
    records: List[Dict[str, Any]] = []
    try:
        total = args.repeat * len(scenarios) * len(variants)
        done = 0
        for rep in range(args.repeat):
            for si, scenario in enumerate(scenarios):
                n = scaled_n(scenario, args.scale)
                shift = (rep + si) % len(variants)
                for v in variants[shift:] + variants[:shift]:
                    # The id travels in the URL's query: no variant name ("+" would decode as " ").
                    run_id = f"{rep}-{scenario.name}-v{variants.index(v)}"
                    rec = measure(server, v, scenario, n, run_id)
                    rec["rep"] = rep
                    records.append(rec)
                    done += 1
                    shown = (
                        bench.fmt_value(rec["value"], scenario.unit) + " " + scenario.unit
                        if rec["status"] == "ok"
                        else f"FAILED {rec.get('reason')}"
                    )
                    print(
                        f"[{done}/{total}] run {rep + 1} {scenario.name:22} {v.name:16} {shown}",
                        flush=True,
                    )
    finally:
        server.stop()
    elapsed = time.monotonic() - start
    load_after = bench.loadavg()

    base = variants[0]
    # Ratio columns: every tree against the first; the trace variant against its own tree.
    pairs: List[Tuple[str, str]] = [(base.name, v.name) for v in variants[1:]]
    if args.trace:
        traced = variants[-1]
        plain = variants[-2]
        pairs = [(a, b) for a, b in pairs if b != traced.name] + [(plain.name, traced.name)]

    header = ["scenario", "unit"] + [f"{v.name} (median)" for v in variants]
    for a, b in pairs:
        header += [f"{b}/{a}", "paired min-max"]
    rows: List[List[str]] = []
    failures: List[str] = []
    for scenario in scenarios:
        s = summarize(records, scenario.name, variants, args.repeat)
        row = [scenario.name, scenario.unit]
        for v in variants:
            if v.name in s["median"]:
                row.append(bench.fmt_value(s["median"][v.name], scenario.unit))
            else:
                row.append("FAILED")
                failures.append(f"{scenario.name} {v.name}: {s['failed'][v.name]}")
        for a, b in pairs:
            r = pair_ratios(s, a, b, args.repeat)
            if r is None:
                row += ["-", "-"]
            else:
                row += [fmt_ratio(r[0]), f"{fmt_ratio(r[2])}-{fmt_ratio(r[3])}"]
        rows.append(row)

    machine = bench.machine_info({})
    lines = [
        "# lomond before/after comparison",
        "",
        f"Generated by `python benchmarks/compare.py {' '.join(argv)}` in {elapsed:.0f} s.",
        "",
        f"- date: {machine['date']}",
        f"- machine: {machine['nproc']} CPUs (`nproc`), {machine['cpu']}, {machine['platform']}",
        f"- load average before / after: {load_before} / {load_after}",
        f"- Python: {machine['python']}",
        f"- server: this checkout's `benchmarks/server.py`, unmasking {server.unmask}",
        f"- {args.repeat} paired runs per scenario, interleaved, order rotated per repeat; "
        f"scale {args.scale:g}",
        "",
        "Variants (each run's `lomond.__file__` was checked to lie in its tree):",
        "",
    ]
    for v in variants:
        lines.append(
            f"- **{v.name}**: tree `{v.source}`"
            + (f" (built copy `{v.path}`)" if v.path != v.source else "")
            + f", lomond {v.info.get('version')}, accel `{v.info.get('accel')}`; "
            f"{v.info.get('settings')}"
        )
    lines += [
        "",
        "## Throughput",
        "",
        md_table(header, rows),
        "",
        "- Medians in thousands of messages (or round trips) per second for 16-byte payloads, "
        "MB/s (10^6 payload bytes/s) for big ones; higher is faster.",
        "- `B/A` = median of B / median of A: above 1 means B is faster. `paired min-max` = "
        "the smallest and largest of the per-repeat ratios B/A (A and B run back to back in "
        "the same repeat): the spread to judge a ratio against.",
    ]
    if failures:
        lines += ["", "## Failed", "", *[f"- {f}" for f in failures]]
    lines += ["", "## Every run", ""]
    run_header = ["scenario", "variant"] + [f"run {i + 1}" for i in range(args.repeat)]
    run_rows = []
    for scenario in scenarios:
        for v in variants:
            vals = []
            for i in range(args.repeat):
                rec = next(
                    (
                        r
                        for r in records
                        if r["scenario"] == scenario.name
                        and r["variant"] == v.name
                        and r["rep"] == i
                    ),
                    None,
                )
                vals.append(
                    bench.fmt_value(rec["value"], scenario.unit)
                    if rec and rec["status"] == "ok"
                    else "FAILED"
                )
            run_rows.append([scenario.name, v.name, *vals])
    lines += [md_table(run_header, run_rows), ""]
    md = "\n".join(lines)
    print()
    print(md)
    output = args.output
    if output is None:
        output = os.path.join(RESULTS_DIR, f"compare-{datetime.date.today().isoformat()}.md")
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            f.write(md)
        with open(os.path.splitext(output)[0] + ".json", "w") as f:
            json.dump({"records": records}, f, indent=1, default=str)
        print(f"\nwrote {os.path.relpath(output)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
