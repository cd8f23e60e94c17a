"""Writes ``docs/report.md``, the conformance and interop report of the docs site.

    # the Autobahn results, one run per driver (about 10 minutes each on 2 cores)
    python tests/compliance/autobahn_client.py
    python tests/compliance/autobahn_client.py --client lomond-hub
    python tests/compliance/autobahn_client.py --client lomond-asyncio
    # then the page: those results, and the interop matrix run now
    python tests/compliance/report.py --autobahn reports/autobahn --interop

``--autobahn DIR`` reads what ``autobahn_client.py`` saved for each of
lomond's drivers (``DIR/lomond``, ``DIR/lomond-hub`` and ``DIR/lomond-asyncio``:
``results.json``, ``harness.json``, ``meta.json``) and rewrites the page's
Autobahn sections: a summary per group and every case's verdict through each
driver. ``--interop`` runs the interop matrix (``interop.py``: each check through
every driver against every real server installed here) and rewrites its
section. A section not asked for stays as the page has it, and so does the
text outside the generated sections (between ``<!-- report:NAME:start -->``
and ``<!-- report:NAME:end -->``). ``--check`` only says whether the page's
generated sections are well formed (CI runs the matrix as a test instead:
``tests/compliance/test_interop.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PAGE = REPO / "docs" / "report.md"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import autobahn_client as ab  # noqa: E402

#: lomond's drivers as autobahn_client.py names them, and as the page does.
DRIVERS: Tuple[Tuple[str, str], ...] = (
    ("lomond", "threaded"),
    ("lomond-hub", "hub"),
    ("lomond-asyncio", "asyncio"),
)
SECTIONS = ("autobahn-summary", "autobahn-cases", "interop")

TEMPLATE = """# Conformance and interop report

What lomond was checked against, case by case: the
[Autobahn client test suite](conformance.md) (517 cases, RFC 6455 and RFC 7692)
through each of lomond's three drivers, and a matrix of real WebSocket
servers. The threaded driver is `WebSocket.connect()` in the caller's thread;
the hub is a `WebSocketApp` on a `lomond.handlers.Hub`, many connections on
one thread; asyncio is a `WebSocketApp` awaited with `run_async()`.

The sections below are written by `tests/compliance/report.py` (how to run it
is at the end of this page); each says when its runs were made and on what.

## Autobahn: the summary

<!-- report:autobahn-summary:start -->
<!-- report:autobahn-summary:end -->

## Real servers

<!-- report:interop:start -->
<!-- report:interop:end -->

## Autobahn: every case

<!-- report:autobahn-cases:start -->
<!-- report:autobahn-cases:end -->

## Regenerating this page

<!-- not-runnable: installs the test extra and runs the Autobahn suite for about 30 minutes -->
```sh
pip install ".[test]"
# one run per driver, into reports/autobahn/<client>/
python tests/compliance/autobahn_client.py
python tests/compliance/autobahn_client.py --client lomond-hub
python tests/compliance/autobahn_client.py --client lomond-asyncio
python tests/compliance/report.py --autobahn reports/autobahn --interop
```

Each Autobahn run (one per driver) takes about ten minutes on two cores; the interop matrix a
few seconds. `--interop` alone (or `--autobahn` alone) rewrites only its
sections. The matrix also runs in CI as `tests/compliance/test_interop.py`,
and the Autobahn suite as `tests/compliance/test_autobahn.py`.
"""


# ---------------------------------------------------------------------------
# The page and its sections
# ---------------------------------------------------------------------------


def _markers(name: str) -> Tuple[str, str]:
    return f"<!-- report:{name}:start -->", f"<!-- report:{name}:end -->"


def replace_section(page: str, name: str, body: str) -> str:
    """``page`` with the section ``name`` replaced by ``body``; ``ValueError`` if it has none."""
    start, end = _markers(name)
    if page.count(start) != 1 or page.count(end) != 1 or page.index(start) > page.index(end):
        raise ValueError(f"the page must have one {start} ... {end} section")
    head, rest = page.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def section(page: str, name: str) -> str:
    start, end = _markers(name)
    return page.split(start, 1)[1].split(end, 1)[0].strip()


# ---------------------------------------------------------------------------
# Autobahn
# ---------------------------------------------------------------------------


class Run:
    """One driver's saved Autobahn run (autobahn_client.py's output directory)."""

    def __init__(self, directory: Path, driver: str) -> None:
        self.driver = driver
        self.results: Dict[str, Dict[str, Any]] = {
            r["id"]: r for r in json.loads((directory / "results.json").read_text("utf-8"))
        }
        self.harness: Dict[str, Any] = json.loads((directory / "harness.json").read_text("utf-8"))
        meta_file = directory / "meta.json"
        if meta_file.exists():
            self.meta: Dict[str, Any] = json.loads(meta_file.read_text("utf-8"))
        else:  # saved before meta.json existed: what summary.md says
            self.meta = _meta_from_summary((directory / "summary.md").read_text("utf-8"))

    @property
    def case_ids(self) -> List[str]:
        return sorted(self.results, key=ab.case_sort_key)

    def verdict(self, case_id: str) -> str:
        result = self.results.get(case_id)
        return result["behavior"] if result else "MISSING"

    def counts(self, case_ids: Optional[Sequence[str]] = None) -> Counter:
        return Counter(self.verdict(c) for c in (case_ids or self.case_ids))

    def describe(self) -> str:
        meta = self.meta
        versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        code = f", code {meta['code']}" if meta.get("code") else ""
        return (
            f"run {meta.get('started', 'at an unknown time')} ({versions}{code}), "
            f"{len(self.results)} cases in {self.harness.get('wall_seconds', 0):.0f} s: "
            f"**{ab.format_counts(self.counts())}**"
        )


def _meta_from_summary(text: str) -> Dict[str, Any]:
    match = re.search(r"Run (\S+ \S+ UTC) on (\S+) with (\d+) cores \(([^)]*)\)", text)
    if not match:
        return {}
    versions = dict(part.rsplit(" ", 1) for part in match.group(4).split(", ") if " " in part)
    return {"started": match.group(1), "machine": match.group(2),
            "cores": int(match.group(3)), "versions": versions}


def _cell_counts(counts: Counter) -> str:
    return ", ".join(f"{counts[v]} {v}" for v in (*ab.BEHAVIOURS, "MISSING") if counts[v])


def render_autobahn_summary(runs: Dict[str, Run]) -> str:
    lines = []
    for client, driver in DRIVERS:
        run = runs[client]
        lines.append(f"- **{driver}**: {run.describe()}.")
    any_run = runs[DRIVERS[0][0]]
    machine = any_run.meta.get("machine", "?")
    cores = any_run.meta.get("cores", "?")
    lines += [
        "",
        f"On {machine} with {cores} cores, cases served by kosoku (Autobahn's case files). "
        "A case passes when its verdict is OK, NON-STRICT or INFORMATIONAL; "
        "[conformance](conformance.md) explains the harness.",
        "",
        "| Group | Cases | " + " | ".join(driver for _, driver in DRIVERS) + " |",
        "|---|---:|" + "---|" * len(DRIVERS),
    ]
    ids = any_run.case_ids
    groups: Dict[str, List[str]] = {}
    for case_id in ids:
        groups.setdefault(case_id.split(".")[0], []).append(case_id)
    for group, members in groups.items():
        cells = [_cell_counts(runs[client].counts(members)) for client, _ in DRIVERS]
        name = ab.GROUP_NAMES.get(group, "")
        lines.append(f"| [{group} {name}](#autobahn-{group}) | {len(members)} | "
                     + " | ".join(cells) + " |")
    total = [_cell_counts(runs[client].counts()) for client, _ in DRIVERS]
    lines.append(f"| **Total** | **{len(ids)}** | " + " | ".join(f"**{c}**" for c in total) + " |")
    other = [c for c in ids if any(runs[client].verdict(c) != "OK" for client, _ in DRIVERS)]
    if other:
        lines += ["", "The cases not OK in some driver, with kosoku's words:", ""]
        for case_id in other:
            first = runs[DRIVERS[0][0]].results.get(case_id, {})
            verdicts = ", ".join(f"{driver} {runs[client].verdict(case_id)}"
                                 for client, driver in DRIVERS)
            lines.append(
                f"- **{case_id}** ({verdicts}). The server: "
                f"{_sentence(first.get('description', ''))} "
                f"Expected: {_sentence(first.get('expectation', ''))} "
                f"Result: {_sentence(first.get('result', ''))}"
            )
    return "\n".join(lines)


_TAG = re.compile(r"<[^>]+>")
_SPECIAL = re.compile(r"([\\`*_\[\]|<>#])")


def _clean(text: str) -> str:
    """A kosoku description as one line of Markdown: tags out, specials escaped."""
    text = text.replace("<br>", " ").replace("\n", " ")
    text = _TAG.sub("", text)
    text = "".join(ch for ch in text if ch.isprintable())
    text = re.sub(r"\s+", " ", text).strip()
    return _SPECIAL.sub(r"\\\1", text)


def _sentence(text: str) -> str:
    cleaned = _clean(text)
    return cleaned if not cleaned or cleaned.endswith((".", "!", "?")) else cleaned + "."


def _verdict_cell(run: Run, case_id: str) -> str:
    result = run.results.get(case_id)
    if result is None:
        return "MISSING"
    verdict = result["behavior"]
    close = result.get("behaviorClose")
    if close and close != "OK":
        verdict += f" (close: {close})"
    return verdict if verdict == "OK" else f"**{verdict}**"


def render_autobahn_cases(runs: Dict[str, Run]) -> str:
    ids = runs[DRIVERS[0][0]].case_ids
    lines: List[str] = []
    group = None
    for case_id in ids:
        this_group = case_id.split(".")[0]
        if this_group != group:
            group = this_group
            lines += [
                "", f"({'autobahn-' + group})=", "",
                f"### {group} {ab.GROUP_NAMES.get(group, '')}", "",
                "| Case | What the server does | " + " | ".join(d for _, d in DRIVERS) + " |",
                "|---|---|" + "---|" * len(DRIVERS),
            ]
        description = _clean(runs[DRIVERS[0][0]].results[case_id].get("description", ""))
        cells = [_verdict_cell(runs[client], case_id) for client, _ in DRIVERS]
        lines.append(f"| {case_id} | {description} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The interop matrix
# ---------------------------------------------------------------------------


def render_interop(cells: List[Any], started: str) -> str:
    import interop

    import lomond

    servers = [s for s in interop.SERVERS if s.available()]
    missing = [s for s in interop.SERVERS if not s.available()]
    by_cell: Dict[Tuple[str, str], List[Any]] = {}
    for cell in cells:
        by_cell.setdefault((cell.server, cell.check), []).append(cell)
    passed = sum(cell.error is None for cell in cells)
    code = ab._code_version()
    lines = [
        f"Run {started} on {platform.machine()} with {os.cpu_count()} cores (python "
        f"{platform.python_version()}, lomond {lomond.__version__}"
        + (f", code {code}" if code else "") + f"): **{passed} of {len(cells)} cells "
        "passed**. Each cell is one connection on loopback, made once through each driver: "
        "the threaded one, a `WebSocketApp` on a `Hub`, and a `WebSocketApp` awaited with "
        "`run_async()`; ✓ means all three passed. A "
        "server without a feature has no cell for it (—).",
        "",
        "| check | " + " | ".join(f"{s.title} {s.version()}" for s in servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    notes: List[str] = []
    for check in interop.CHECKS:
        row = [check.title]
        for server in servers:
            found = by_cell.get((server.name, check.name))
            if not found:
                row.append("—")
                continue
            failed = [c for c in found if c.error is not None]
            if not failed:
                row.append("✓")
                continue
            for cell in failed:
                notes.append(f"{server.title}, {check.title}, {cell.driver}: {cell.error}")
            row.append("✗ " + ", ".join(c.driver for c in failed) + f" [{len(notes)}]")
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines += ["", "Failures:", ""] + [f"{n}. {_clean(text)}" for n, text in
                                          enumerate(notes, 1)]
    lines += [
        "",
        "The checks (`tests/compliance/interop.py`): an echo of a text and a binary "
        "message; a 1 MiB binary message; permessage-deflate negotiated and a compressed "
        "echo; a subprotocol chosen by the server; a ping answered by a pong; the close "
        "handshake started by lomond (code 1000), and by the server (after one echo); "
        "`wss://` with the certificate verified against a test CA; and the echo through "
        "an HTTP proxy (proxy.py, CONNECT). Every server is started on 127.0.0.1 with "
        "its defaults, except a message size limit above 1 MiB and the subprotocol "
        "offered.",
    ]
    if missing:
        lines += [
            "",
            "Not installed for this run, so not in the table: "
            + ", ".join(f"{s.title} (`pip install {s.module}`)" for s in missing) + ".",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def check_page(page: str) -> List[str]:
    """What is wrong with the page's generated sections (empty if nothing)."""
    problems = []
    for name in SECTIONS:
        start, end = _markers(name)
        if page.count(start) != 1 or page.count(end) != 1:
            problems.append(f"section {name}: needs one {start} and one {end}")
        elif not section(page, name):
            problems.append(f"section {name} is empty: run report.py to fill it")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--autobahn", metavar="DIR",
                        help="autobahn_client.py's output directory (its lomond, "
                        "lomond-hub and lomond-asyncio subdirectories)")
    parser.add_argument("--interop", action="store_true", help="run the interop matrix now")
    parser.add_argument("--output", default=str(PAGE), help=f"the page (default {PAGE})")
    parser.add_argument("--check", action="store_true",
                        help="only check that the page's generated sections are filled")
    args = parser.parse_args(argv)
    path = Path(args.output)
    page = path.read_text("utf-8") if path.exists() else TEMPLATE
    if args.check:
        problems = check_page(page)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if not args.autobahn and not args.interop:
        parser.error("give --autobahn DIR, --interop, or both")
    if args.autobahn:
        runs = {client: Run(Path(args.autobahn) / client, driver) for client, driver in DRIVERS}
        page = replace_section(page, "autobahn-summary", render_autobahn_summary(runs))
        page = replace_section(page, "autobahn-cases", render_autobahn_cases(runs))
    if args.interop:
        import interop

        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with interop.Matrix() as matrix:
            cells = matrix.run_all()
        page = replace_section(page, "interop", render_interop(cells, started))
    path.write_text(page, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # the matrix's servers run on daemon threads
