"""Every code block of the site runs, or says why it cannot.

The site is README.md, docs/**/*.md and the files docs/ includes
(benchmarks/README.md, CHANGELOG.md). A ```python block is classified by the
HTML comment on the line before it (invisible once rendered), or by what it
contains:

* ``<!-- not-runnable: REASON -->``: a fragment (it uses names from another
  block, or serves until Ctrl-C). It must still compile; each is listed by
  :func:`test_fragments_are_declared` and by its test id.
* ``<!-- offline: REASON -->``: runs, and needs no server (constructing a
  ``WebSocket`` does no I/O; ``app.dispatch()`` tests handlers).
* ``<!-- runs-forever: REASON -->``: reconnects until stopped; runs against the
  local feed until it reconnects (tests/docs_harness.py stops it there).
* no comment, the block connects to ``wss://example.org/feed``: runs against
  the local feed (tests/docs_harness.py), which must see a connection.
* no comment, the block starts its own ``LocalServer``: runs as it is.

Any other ```python block fails the test: nothing is skipped silently.

Every other code block (``sh``, ``console``, ``text``, or none) must say
what it is on the line before it:

* ``<!-- not-runnable: REASON -->``: shown, not run (an install command, a
  session against a server of yours, output that differs on every run);
* ``<!-- console: REASON -->`` on a ``console`` block: each ``$ python -m
  lomond ...`` line is run here and what it prints (stdout and stderr) must be
  the lines that follow it in the block, exactly.

MyST directives (```{toctree}, ```{include}) are not code blocks.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(__file__).resolve().parent / "docs_harness.py"
MARKER_URL = "wss://example.org/feed"
TIMEOUT = 30.0  # seconds for one example; every runnable example ends well before

COMMENT = re.compile(
    r"^\s*<!--\s*(not-runnable|offline|runs-forever|console)\s*:\s*(.+?)\s*-->\s*$"
)
#: Any fenced block: its indent and info string (a language, a {directive} or nothing).
ANY_FENCE = re.compile(r"^(\s*)```([^`]*)$")
#: Files outside docs/ that the site includes (docs/benchmarks.md, docs/changelog.md).
INCLUDED = ("benchmarks/README.md", "CHANGELOG.md")
ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
ENV["PYTHONUNBUFFERED"] = "1"
ENV["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


class Block(NamedTuple):
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    marker: Optional[str]  # not-runnable, offline, runs-forever or None
    reason: str

    @property
    def id(self) -> str:
        label = self.marker or "runs"
        return f"{self.path.relative_to(ROOT)}:{self.line}:{label}"

    @property
    def kind(self) -> Optional[str]:
        if self.marker == "not-runnable":
            return "fragment"
        if self.marker == "offline":
            return "offline"
        if self.marker == "runs-forever":
            return "forever"
        if MARKER_URL in self.code:
            return "feed"
        if "LocalServer" in self.code:
            return "self-contained"
        return None


def markdown_files() -> List[Path]:
    docs = [p for p in sorted((ROOT / "docs").rglob("*.md")) if "_build" not in p.parts]
    return [ROOT / "README.md", *docs]


class Fenced(NamedTuple):
    """One fenced block as written: its info string (``python``, ``sh``, ``{toctree}``...)."""

    line: int  # of the opening fence, 1-based
    info: str
    code: str  # dedented by the fence's indent
    marker: Optional[str]
    reason: str


def fenced_blocks(path: Path) -> List[Fenced]:
    """Every fenced block of ``path``, with the marker comment on the line before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = ANY_FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, info = match.group(1), match.group(2).strip()
        start = index
        body = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            line = lines[index]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            index += 1
        if index == len(lines):
            raise AssertionError(f"{path}:{start + 1}: unterminated ```{info} block")
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        comment = COMMENT.match(lines[previous]) if previous >= 0 else None
        blocks.append(Fenced(
            start + 1, info, "\n".join(body) + "\n",
            comment.group(1) if comment else None, comment.group(2) if comment else "",
        ))
        index += 1
    return blocks


def parse_blocks(path: Path) -> List[Block]:
    return [
        Block(path, block.line, block.code, block.marker, block.reason)
        for block in fenced_blocks(path) if block.info == "python"
    ]


BLOCKS = [block for path in markdown_files() for block in parse_blocks(path)]


def test_the_docs_have_python_examples() -> None:
    # A parser that found nothing would make every test below vacuous.
    assert len(BLOCKS) >= 10
    assert {block.path.name for block in BLOCKS} >= {"README.md", "handlers.md"}


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_doc_example(block: Block, tmp_path: Path) -> None:
    kind = block.kind
    assert kind is not None, (
        f"{block.id}: cannot classify this ```python block: connect to {MARKER_URL}, start a "
        "LocalServer, or put <!-- not-runnable: why -->, <!-- offline: why --> or "
        "<!-- runs-forever: why --> on the line before it"
    )
    if kind == "fragment":
        compile(block.code, block.id, "exec")  # a fragment still has to be Python
        return
    example = tmp_path / "example.py"
    example.write_text(block.code, encoding="utf-8")
    mode = {"forever": "forever", "offline": "offline"}.get(kind, "run")
    result = subprocess.run(
        [sys.executable, str(HARNESS), str(example), mode],
        capture_output=True, timeout=TIMEOUT, env=ENV, cwd=tmp_path,
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{block.id} failed:\n{out}\n{err}"
    assert "Traceback" not in err, err
    summary = re.search(r"@@docs-harness connections=(\d+) stopped=(\d)", out)
    assert summary, out
    connections, stopped = int(summary.group(1)), summary.group(2) == "1"
    if kind == "forever":
        assert stopped and connections == 2, f"{block.id} did not reconnect:\n{out}"
    elif kind == "feed":
        assert connections >= 1, f"{block.id} never connected to the feed:\n{out}"


class Other(NamedTuple):
    """A code block that is not Python: shown, or a console session checked here."""

    path: Path
    line: int
    language: str
    code: str
    marker: Optional[str]
    reason: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}:{self.language or 'plain'}"


def other_blocks(path: Path) -> List[Other]:
    return [
        Other(path, block.line, block.info, block.code, block.marker, block.reason)
        for block in fenced_blocks(path)
        if block.info != "python" and not block.info.startswith("{")  # not a directive
    ]


SITE_FILES = [*markdown_files(), *(ROOT / name for name in INCLUDED)]
OTHERS = [block for path in SITE_FILES for block in other_blocks(path)]


def test_every_other_code_block_says_what_it_is() -> None:
    assert len(OTHERS) >= 20  # the parser found the shell sessions
    undeclared = [
        block.id for block in OTHERS
        if block.marker not in ("not-runnable", "console") or len(block.reason) < 8
    ]
    assert not undeclared, (
        "put <!-- not-runnable: why --> (or, on a console session this test can run, "
        f"<!-- console: what it shows -->) on the line before: {undeclared}"
    )
    assert all(block.language == "console" for block in OTHERS if block.marker == "console")


CONSOLE = [block for block in OTHERS if block.marker == "console"]


@pytest.mark.parametrize("block", CONSOLE, ids=[block.id for block in CONSOLE])
def test_console_session(block: Other, tmp_path: Path) -> None:
    sessions: List[List[str]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            sessions.append([line[2:]])
        else:
            assert sessions, f"{block.id}: output before the first $ command"
            sessions[-1].append(line)
    assert sessions, f"{block.id}: no $ command"
    for command, *expected in sessions:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "lomond"], f"{block.id}: runs only python -m lomond"
        result = subprocess.run(
            [sys.executable, *argv[1:]], capture_output=True, timeout=TIMEOUT, env=ENV,
            cwd=tmp_path, stdin=subprocess.DEVNULL,
        )
        printed = (result.stdout + result.stderr).decode().splitlines()
        assert printed == expected, f"{block.id}: $ {command}"


# -- the literal blocks of the docstrings (the API reference) -----------------------

#: ``.. not-runnable: REASON``: an rST comment (invisible once rendered) in the
#: paragraph before a docstring's ``::`` block.
DOC_MARKER = re.compile(r"^\s*\.\.\s+not-runnable:\s*(.+?)\s*$")


class DocBlock(NamedTuple):
    """A literal block (``::``) in a docstring of lomond's, as the API reference shows it."""

    owner: str  # the documented object's dotted name
    index: int
    code: str
    reason: str  # of its not-runnable marker, or ""

    @property
    def id(self) -> str:
        return f"{self.owner}:{self.index}"


def literal_blocks(owner: str, doc: Optional[str]) -> List[DocBlock]:
    if not doc:
        return []
    lines = inspect.cleandoc(doc).splitlines()
    found = []
    reason = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = DOC_MARKER.match(line)
        if marker:
            reason = marker.group(1)
        elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            indent = len(line) - len(line.lstrip())
            body = []
            index += 1
            while index < len(lines) and (
                not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
            ):
                body.append(lines[index])
                index += 1
            found.append(DocBlock(owner, len(found) + 1, textwrap.dedent("\n".join(body)).strip()
                                  + "\n", reason))
            reason = ""
            continue
        index += 1
    return found


def docstring_blocks() -> List[DocBlock]:
    import lomond

    names = ["lomond"] + [
        info.name for info in pkgutil.walk_packages(lomond.__path__, "lomond.")
        if info.name != "lomond.__main__" and not info.name.split(".")[-1].startswith("_")
    ]
    found = []
    for name in names:
        module = importlib.import_module(name)
        found += literal_blocks(name, module.__doc__)
        for attr, value in vars(module).items():
            if getattr(value, "__module__", None) != name or not (
                inspect.isclass(value) or inspect.isfunction(value)
            ):
                continue  # imported, or a constant (a TypeVar's doc is typing's)
            found += literal_blocks(f"{name}.{attr}", value.__doc__)
            if inspect.isclass(value):
                for member, function in vars(value).items():
                    function = getattr(function, "__func__", function)
                    if inspect.isfunction(function) or isinstance(function, property):
                        found += literal_blocks(f"{name}.{attr}.{member}", function.__doc__)
    return found


DOC_BLOCKS = docstring_blocks()


def test_every_docstring_block_runs_or_says_why_not() -> None:
    assert len(DOC_BLOCKS) >= 8  # the walk found the modules' examples
    undeclared = [
        block.id for block in DOC_BLOCKS
        if not block.reason and MARKER_URL not in block.code
    ]
    assert not undeclared, (
        f"a docstring's :: block must connect to {MARKER_URL} (it is run), or have "
        f"'.. not-runnable: why' in the paragraph before it: {undeclared}"
    )
    assert all(len(block.reason) >= 8 for block in DOC_BLOCKS if block.reason)


RUNNABLE_DOC_BLOCKS = [block for block in DOC_BLOCKS if not block.reason]


@pytest.mark.parametrize("block", RUNNABLE_DOC_BLOCKS, ids=[b.id for b in RUNNABLE_DOC_BLOCKS])
def test_docstring_example(block: DocBlock, tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(block.code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(HARNESS), str(example), "run"],
        capture_output=True, timeout=TIMEOUT, env=ENV, cwd=tmp_path,
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{block.id} failed:\n{out}\n{err}"
    assert "Traceback" not in err, err
    summary = re.search(r"@@docs-harness connections=(\d+) stopped=(\d)", out)
    assert summary and int(summary.group(1)) >= 1, f"{block.id} never connected:\n{out}"


def test_fragments_are_declared() -> None:
    fragments = [block for block in BLOCKS if block.kind == "fragment"]
    for block in fragments:
        assert len(block.reason) >= 8, f"{block.id}: say why it cannot run"
    # Listed in the output of a verbose run (pytest -rA / -v shows the ids).
    print(f"{len(fragments)} fragments:", *(f"{b.id} ({b.reason})" for b in fragments), sep="\n  ")
