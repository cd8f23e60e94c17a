#!/usr/bin/env python
"""Deterministic before/after: CPU instructions per message, counted by callgrind.

    python benchmarks/callgrind.py --tree before=/path/to/old --tree after=. [--build-ext]
        [--trace] [--scenarios ...] [--keep DIR] [--output PATH]

Wall-clock numbers on a shared 2-core machine move by 10-30%; instruction
counts do not. For each scenario and each tree (``--tree``, ``--build-ext``
and ``--trace`` as in ``compare.py``) the lomond adapter runs the scenario
twice under ``valgrind --tool=callgrind``, with a small and a larger message
count, against the normal ``server.py`` (outside valgrind: only the client
process is counted). Every run is checked like any benchmark run.

    instructions per message = (I(n_large) - I(n_small)) / (n_large - n_small)

The difference cancels everything that does not scale with the messages:
interpreter start-up, imports, building the payloads, the opening and
closing handshakes. What remains is the client's per-message work (lomond,
plus the harness's own per-message bookkeeping and checking, which is the
same code for every tree, so ratios slightly understate differences).

``--keep DIR`` keeps the ``callgrind.out`` files of the large runs, for
``callgrind_annotate --inclusive=yes DIR/<scenario>-<variant>.out``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402
import run as bench  # noqa: E402
from scenarios import BY_NAME, KIB, Scenario  # noqa: E402

RESULTS_DIR = os.path.join(HERE, "results")
VALGRIND_TIMEOUT = 600.0


def counts(scenario: Scenario, scale: float) -> Tuple[int, int]:
    """(small, large) message counts: a few thousand small messages, a few dozen MiB of big ones."""
    if scenario.size < 4 * KIB:
        small, large = 500, 2500
    elif scenario.size < 1024 * KIB:
        small, large = 2 * scenario.k, 10 * scenario.k  # 16 / 80 x 64 KiB
    else:
        small, large = scenario.k, 4 * scenario.k  # 4 / 16 x 1 MiB (3 / 12 for the UTF-8 text)
    return small, max(small + scenario.k, int(large * scale))


def total_instructions(path: str) -> int:
    """The ``totals:`` (or ``summary:``) line of a callgrind output file: Ir of the whole run."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"no totals in {path}")
    return int(m.group(1))


def fmt_count(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:,.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:,.1f}k"
    return f"{x:,.0f}"


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--scenarios", nargs="+", metavar="NAME", help="default: all")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the large count")
    parser.add_argument("--trace", action="store_true", help="also the last tree with trace=no-op")
    parser.add_argument("--build-ext", action="store_true", help="as in compare.py")
    parser.add_argument("--keep", default=None, help="keep the large runs' callgrind files here")
    parser.add_argument(
        "--output",
        default=None,
        help="markdown report (default results/callgrind-<date>.md; '' to write nothing)",
    )
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed")
    trees = [compare.parse_tree(t) for t in args.tree]
    names = bench.parse_list(args.scenarios, list(BY_NAME), "scenario")
    scenarios = [BY_NAME[n] for n in names]
    tmp = tempfile.mkdtemp(prefix="lomond-callgrind-")
    keep = args.keep
    if keep:
        os.makedirs(keep, exist_ok=True)
    try:
        variants = compare.make_variants(
            trees, os.path.join(tmp, "trees") if args.build_ext else None, args.trace
        )
        compare.probe_variants(variants)
        for v in variants:
            # Same string hashes in every run: set/dict layouts do not vary between runs.
            v.extra["PYTHONHASHSEED"] = "0"
        return measure_all(args, argv, variants, scenarios, tmp, keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure_all(
    args: argparse.Namespace,
    argv: List[str],
    variants: List[compare.Variant],
    scenarios: List[Scenario],
    tmp: str,
    keep: Optional[str],
) -> int:
    start = time.monotonic()
    server = bench.Server()
    per_msg: Dict[Tuple[str, str], float] = {}
    failures: List[str] = []
    detail: List[List[str]] = []
    try:
        for scenario in scenarios:
            small, large = counts(scenario, args.scale)
            for vi, v in enumerate(variants):
                totals: Dict[int, int] = {}
                for n in (small, large):
                    out = os.path.join(tmp, f"{scenario.name}-v{vi}-{n}.out")
                    prefix = [
                        "valgrind",
                        "--tool=callgrind",
                        f"--callgrind-out-file={out}",
                        "--quiet",
                    ]
                    rec = compare.measure(
                        server,
                        v,
                        scenario,
                        n,
                        f"cg-{scenario.name}-v{vi}-{n}",
                        prefix=prefix,
                        timeout=VALGRIND_TIMEOUT,
                    )
                    if rec["status"] != "ok":
                        failures.append(f"{scenario.name} {v.name} n={n}: {rec.get('reason')}")
                        break
                    totals[n] = total_instructions(out)
                    if keep and n == large:
                        shutil.copy(out, os.path.join(keep, f"{scenario.name}-{v.name}.out"))
                if len(totals) == 2:
                    value = (totals[large] - totals[small]) / (large - small)
                    per_msg[(scenario.name, v.name)] = value
                    detail.append(
                        [
                            scenario.name,
                            v.name,
                            f"{small:,}",
                            f"{totals[small]:,}",
                            f"{large:,}",
                            f"{totals[large]:,}",
                            f"{value:,.0f}",
                        ]
                    )
                    print(
                        f"{scenario.name:22} {v.name:16} {fmt_count(value)} instructions/message",
                        flush=True,
                    )
    finally:
        server.stop()
    elapsed = time.monotonic() - start

    base = variants[0]
    pairs = [(base.name, v.name) for v in variants[1:]]
    if args.trace:
        pairs = [(a, b) for a, b in pairs if b != variants[-1].name]
        pairs.append((variants[-2].name, variants[-1].name))
    header = ["scenario", *[v.name for v in variants], *[f"{b}/{a}" for a, b in pairs]]
    rows = []
    for scenario in scenarios:
        row = [scenario.name]
        for v in variants:
            value = per_msg.get((scenario.name, v.name))
            row.append(fmt_count(value) if value is not None else "FAILED")
        for a, b in pairs:
            va, vb = per_msg.get((scenario.name, a)), per_msg.get((scenario.name, b))
            row.append(f"{vb / va:.3f}" if va and vb else "-")
        rows.append(row)

    machine = bench.machine_info({})
    lines = [
        "# lomond before/after: instructions per message (callgrind)",
        "",
        f"Generated by `python benchmarks/callgrind.py {' '.join(argv)}` in {elapsed:.0f} s.",
        "",
        f"- date: {machine['date']}",
        f"- machine: {machine['cpu']}, {machine['platform']}; {machine['python']}",
        "- client under `valgrind --tool=callgrind`, `PYTHONHASHSEED=0`; server outside valgrind",
        "",
        "Variants:",
        "",
    ]
    for v in variants:
        lines.append(
            f"- **{v.name}**: tree `{v.source}`, lomond from `{v.info.get('file')}`, "
            f"accel `{v.info.get('accel')}`; {v.info.get('settings')}"
        )
    lines += [
        "",
        "## Instructions per message",
        "",
        compare.md_table(header, rows),
        "",
        "- Instructions per message = (I(n_large) - I(n_small)) / (n_large - n_small), I = all "
        "instructions the client process executed (callgrind `Ir`): start-up, imports and "
        "handshakes cancel out.",
        "- `B/A` below 1 means B executes fewer instructions per message (faster); above 1, more.",
        "- Includes the harness's per-message bookkeeping (the same code for every tree).",
    ]
    if failures:
        lines += ["", "## Failed", "", *[f"- {f}" for f in failures]]
    lines += [
        "",
        "## Raw counts",
        "",
        compare.md_table(
            ["scenario", "variant", "n small", "I small", "n large", "I large", "per message"],
            detail,
        ),
        "",
    ]
    md = "\n".join(lines)
    print()
    print(md)
    output = args.output
    if output is None:
        output = os.path.join(RESULTS_DIR, f"callgrind-{datetime.date.today().isoformat()}.md")
    if output:
        with open(output, "w") as f:
            f.write(md)
        print(f"\nwrote {os.path.relpath(output)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
