"""The documentation site builds cleanly and its API reference covers every public name.

Needs the ``docs`` extra (Sphinx 8+, Python 3.11+) beside the ``test`` one:
``pip install ".[test,docs]"``; without it these tests are reported as
skipped with that reason. CI installs both.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_REASON = 'the docs extra is not installed: pip install ".[test,docs]"'

pytest.importorskip("sphinx", minversion="8", reason=SKIP_REASON)
pytest.importorskip("furo", reason=SKIP_REASON)
pytest.importorskip("myst_parser", reason=SKIP_REASON)
pytest.importorskip("sphinx_autodoc_typehints", reason=SKIP_REASON)

from sphinx.util.inventory import InventoryFile  # noqa: E402

# The modules the reference must cover, as the brief for the site lists them.
MODULES: Dict[str, List[str]] = {
    name: [] for name in (
        "lomond", "lomond.websocket", "lomond.events", "lomond.errors", "lomond.persist",
        "lomond.response", "lomond.request", "lomond.handshake", "lomond.status",
        "lomond.constants", "lomond.compression", "lomond.proxy", "lomond.protocol",
        "lomond.accel", "lomond.testing",
        "lomond.handlers", "lomond.handlers.app", "lomond.handlers.interrupt",
        "lomond.handlers.outcome", "lomond.handlers.policy", "lomond.handlers.registration",
        "lomond.handlers.registry", "lomond.handlers.runner", "lomond.options",
        "lomond.wakeup", "lomond.trace", "lomond.tls", "lomond.timers", "lomond.session",
        "lomond.handlers.hub", "lomond.handlers.serial", "lomond.sync.session",
        "lomond.asyncio", "lomond.asyncio.websocket", "lomond.lifecycle",
    )
}



def public_names(module_name: str) -> List[str]:
    if MODULES[module_name]:
        return MODULES[module_name]
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:  # lomond.constants: every public constant it defines
        names = [
            name for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value)
            and name != "annotations"  # from __future__
            and getattr(value, "__module__", module_name) == module_name  # not imported
        ]
    return list(names)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module (warnings are errors)."""
    out = tmp_path_factory.mktemp("html")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-n", "-q",
         "-b", "html", str(ROOT / "docs"), str(out)],
        capture_output=True, timeout=600, env=env, cwd=ROOT,
    )
    # -W -n: a dead cross-reference (a renamed function, say) is an error.
    assert result.returncode == 0, result.stderr.decode()[-5000:]
    return out


@pytest.fixture(scope="module")
def inventory(site: Path) -> Set[str]:
    with open(site / "objects.inv", "rb") as stream:
        inv = InventoryFile.load(stream, "", lambda base, uri: uri)
    names: Set[str] = set()
    for kind, entries in inv.data.items() if hasattr(inv, "data") else inv.items():
        if kind.startswith("py:"):
            names.update(entries)
    return names


def documented(module_name: str, name: str, inventory: Set[str]) -> bool:
    if f"{module_name}.{name}" in inventory:
        return True
    value = getattr(importlib.import_module(module_name), name)
    if inspect.ismodule(value):
        return value.__name__ in inventory
    # A re-export (lomond.WebSocket) is documented where it is defined.
    canonical = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
    if canonical in inventory:
        return True
    # A re-exported alias or constant (lomond.handlers.ErrorPolicy): the very
    # object documented under the same name elsewhere.
    for entry in inventory:
        owner, _, last = entry.rpartition(".")
        if last == name and owner.startswith("lomond"):
            try:
                if getattr(importlib.import_module(owner), name) is value:
                    return True
            except (ImportError, AttributeError):
                continue
    return False


def test_reference_covers_every_public_name(inventory: Set[str]) -> None:
    assert "lomond.websocket.WebSocket.connect" in inventory  # the parse worked
    missing = [
        f"{module}.{name}" for module in MODULES for name in public_names(module)
        if not documented(module, name, inventory)
    ]
    assert not missing, f"not in the API reference: {missing}"


def test_every_reference_module_has_a_page(inventory: Set[str]) -> None:
    assert [module for module in MODULES if module not in inventory] == []


def test_values_render_cleanly(site: Path) -> None:
    # Issue 22: NOT_READY rendered with backslashes (\\'ready\\'); a set's
    # order must not depend on the build's hash seed.
    page = (site / "api" / "handlers.app.html").read_text(encoding="utf-8")
    start = page.index('id="lomond.handlers.app.NOT_READY"')
    signature = page[start:page.index("</dt>", start)]
    assert "\\" not in signature
    assert "'ready'" in signature.replace("&#39;", "'")
    start = page.index('id="lomond.handlers.app.HOOK_NAMES"')
    signature = page[start:page.index("</dt>", start)]
    names = re.findall(r"'(on_[a-z_]+)'", signature.replace("&#39;", "'"))
    assert names == sorted(names) and len(names) >= 3, signature


def test_the_sidebar_breaks_dotted_names_at_dots(site: Path) -> None:
    # Issue 22: furo wraps anywhere, so a long module name broke mid-word
    # ("lomond.handlers.registrat|ion"); a <wbr> after each dot comes first.
    page = (site / "api" / "handlers.registration.html").read_text(encoding="utf-8")
    start = page.index('class="sidebar-tree"')
    sidebar = page[start:page.index('<div class="main"', start)]
    assert "lomond.<wbr>handlers.<wbr>registration" in sidebar
    assert "lomond.handlers.registration" not in sidebar
