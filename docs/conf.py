"""Sphinx configuration for lomond's documentation site.

Build it with ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``
(see docs/README.md). CI builds it with warnings as errors and nitpicky mode,
so a renamed function cannot leave a dead reference behind.
"""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
# Document the checkout beside this file, not some other installed lomond.
sys.path.insert(0, str(ROOT))

import lomond  # noqa: E402

project = "lomond"
author = "lomond developers"
copyright = "lomond developers"
release = lomond.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx_autodoc_typehints",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# README.md is how to build the site, not a page of it.
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]

html_theme = "furo"
html_title = f"lomond {release}"

# --- Markdown (MyST) -------------------------------------------------------
# Headings get anchors so the guides can link to each other's sections.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# --- autodoc -------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
# Signatures without the hints; sphinx-autodoc-typehints moves them into the
# parameter descriptions, where they are readable.
autodoc_typehints = "none"
typehints_defaults = "comma"
always_document_param_types = False
autodoc_preserve_defaults = True

# --- nitpicky mode -----------------------------------------------------------
# Every cross-reference must resolve. The exceptions are types that live
# outside lomond: the build machine has no network, so there is no intersphinx
# inventory for the standard library or for attrs/blinker to link them to.
nitpicky = True
_EXTERNAL_MODULES = (
    "socket", "ssl", "threading", "selectors", "collections", "collections.abc",
    "typing", "typing_extensions", "types", "enum", "datetime", "zlib", "random",
    "logging", "argparse", "io", "os", "signal", "blinker", "attr", "attrs",
    "urllib", "http", "contextlib", "_thread", "json", "email", "time", "concurrent",
    "asyncio",
)
nitpick_ignore_regex = [
    (r"py:.*", r"({})(\..+)?".format("|".join(m.replace(".", r"\.") for m in _EXTERNAL_MODULES))),
    # Builtins and typing names as sphinx-autodoc-typehints renders them.
    (r"py:(class|obj|data)", r"(int|float|str|bytes|bytearray|memoryview|bool|object|"
     r"None|NoneType|dict|list|tuple|set|frozenset|type|callable|Ellipsis|"
     r"Exception|BaseException|ValueError|TypeError|RuntimeError|OSError|"
     r"KeyboardInterrupt|SystemExit|ImportError|UnicodeDecodeError|"
     r"TimeoutError|ConnectionError|IntEnum|Enum|Any|Optional|Union|Callable|"
     r"Iterator|Iterable|Generator|Mapping|Sequence|Dict|List|Tuple|Set|"
     r"Type|TypeVar|Literal|Protocol|ClassVar|Final|overload)"),
    # Type variables (``T``, ``E``...) are not documented objects.
    (r"py:(class|obj)", r"lomond\..*\.[A-Z]"),
]

# sphinx-autodoc-typehints calls an API that Sphinx deprecates; not ours to fix.
warnings.filterwarnings("ignore", message=".*set_application.*is deprecated")


def _lookup(dotted: str) -> Any:
    """The object a dotted name means, importing as needed; ``KeyError`` if none."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise KeyError(dotted)


_documented: Dict[str, List[Tuple[str, Any]]] = {}


def _documented_as(env: Any, obj: Any, name: str) -> Optional[str]:
    """The full name under which ``obj`` (last called ``name``) is documented."""
    objects = env.get_domain("py").objects
    if not _documented:
        for fullname in objects:
            try:
                found = _lookup(fullname)
            except KeyError:
                continue
            _documented.setdefault(fullname.rsplit(".", 1)[-1], []).append((fullname, found))
    for fullname, found in _documented.get(name, []):
        if found is obj:
            return fullname
    return None


def _resolve_python_name(app: Any, env: Any, node: Any, contnode: Any) -> Optional[Any]:
    """Resolve a reference the way Python would resolve the name in its docstring.

    The reference documents each object once, where it is defined
    (``lomond.websocket.WebSocket``). Docstrings may name an object by a
    re-export (``lomond.WebSocket``) or as the module that holds the docstring
    sees it (``ConnectError`` imported into ``lomond.proxy``, ``Outcome`` in
    ``lomond.handlers.app``). Such a name is looked up by importing, then
    linked to where that very object is documented. A name that no longer
    exists still fails the build.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip(".~")
    module = node.get("py:module")
    cls = node.get("py:class")
    candidates = []
    if module and cls:
        candidates.append(f"{module}.{cls}.{target}")
    if module:
        candidates.append(f"{module}.{target}")
    if target.startswith("lomond"):
        candidates.append(target)
    for candidate in candidates:
        try:
            obj = _lookup(candidate)
        except KeyError:
            continue
        documented = _documented_as(env, obj, target.rsplit(".", 1)[-1])
        if documented is None or documented == candidate:
            continue
        new = node.deepcopy()
        new["reftarget"] = documented
        return env.get_domain("py").resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], documented, new, contnode
        )
    return None


def _import_type_checking_names() -> None:
    """Make the names imported under ``if TYPE_CHECKING:`` real, for the build only.

    Annotations such as ``Optional[Response]`` in :mod:`lomond.events` name
    classes imported only for the type checker (to avoid import cycles at run
    time); sphinx-autodoc-typehints evaluates them in the module's namespace.
    """
    import ast

    for path in sorted((ROOT / "lomond").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        blocks = [
            node for node in tree.body
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ]
        if not blocks:
            continue
        relative = path.relative_to(ROOT).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = importlib.import_module(".".join(parts))
        names: Dict[str, Any] = {"__name__": module.__name__, "__package__": module.__package__}
        for block in blocks:
            code = compile(ast.Module(body=block.body, type_ignores=[]), str(path), "exec")
            exec(code, names)
        imported = {k: v for k, v in names.items() if not k.startswith("__")}
        for key, value in imported.items():
            setattr(module, key, value)
        # attrs generates each class's __init__ with globals of its own, in
        # which the hints of its fields are evaluated.
        for value in list(vars(module).values()):
            init = getattr(value, "__init__", None)
            if hasattr(value, "__attrs_attrs__") and hasattr(init, "__globals__"):
                for key, name_value in imported.items():
                    init.__globals__.setdefault(key, name_value)


_import_type_checking_names()


#: A dotted name in a rendered ``code`` literal (``lomond.handlers.registration``).
_DOTTED_LITERAL = re.compile(r'(<span class="pre">)([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+)(</span>)')


def _break_at_dots(html: str) -> str:
    """Let dotted names wrap after a dot (``<wbr>``), not in the middle of a word.

    furo's sidebar wraps with ``overflow-wrap: anywhere``: a module name too
    long for it (``lomond.handlers.registration``) broke as
    ``lomond.handlers.registrat`` / ``ion``. With a break opportunity after
    each dot, the browser wraps there first.
    """
    return _DOTTED_LITERAL.sub(
        lambda m: m.group(1) + m.group(2).replace(".", ".<wbr>") + m.group(3), html
    )


def _sidebar_breaks(app: Any, pagename: str, templatename: str, context: Dict[str, Any],
                    doctree: Any) -> None:
    """After furo built the navigation tree (and the page's table of contents): see above."""
    for key in ("furo_navigation_tree", "toc"):
        value = context.get(key)
        if isinstance(value, str):
            context[key] = _break_at_dots(value)


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_python_name)
    # furo computes its navigation tree at the default priority (500).
    app.connect("html-page-context", _sidebar_breaks, priority=900)
