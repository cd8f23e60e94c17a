"""Build lomond's C extension next to the source for the test run, when it is missing.

``python -m pytest`` from a checkout (or from the unpacked sdist) imports
``lomond`` from the source tree, where nothing is compiled: the masking tests
would then cover wsaccel and pure Python only, and the C path that every
release wheel ships would go untested. So before anything imports lomond,
conftest.py calls :func:`ensure_built`: when the imported ``lomond`` is this
source tree, a C compiler and the Python headers are present and the
extension is missing or older than ``lomond/_speedups.c``, it is compiled into
``lomond/`` (``*.so`` is gitignored and excluded from the sdist). An installed
lomond (``pytest`` run from elsewhere, cibuildwheel) is tested as installed.

This module must not import lomond (it runs before the first import).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lomond"
SOURCE = PACKAGE / "_speedups.c"

# Built with setuptools' build_ext on a bare Distribution, in a subprocess:
# the project metadata is not needed (nor validated) for one extension, and
# setuptools' distutils patching stays out of the test process.
_BUILD = textwrap.dedent("""
    import os, shutil, sys
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext
    source, out, target = sys.argv[1:4]
    ext = Extension("lomond._speedups", [source])
    dist = Distribution({"name": "lomond", "ext_modules": [ext]})
    cmd = build_ext(dist)
    cmd.build_lib = cmd.build_temp = out
    cmd.ensure_finalized()
    cmd.run()
    (built,) = cmd.get_outputs()
    # Replaced, not overwritten: a running interpreter may have the old one mapped.
    shutil.copyfile(built, target + ".tmp")
    os.replace(target + ".tmp", target)
""")


def c_compiler_available() -> bool:
    """Whether this interpreter can build a C extension: its compiler and ``Python.h``."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC")  # setuptools honours $CC too
    if not cc:
        return False  # Windows (MSVC) is not probed: the wheels carry the extension there
    if shutil.which(shlex.split(cc)[0]) is None:
        return False
    include = sysconfig.get_paths().get("include")
    return bool(include) and Path(include, "Python.h").is_file()


def setuptools_available() -> bool:
    """Whether setuptools (the extension's build tool) can be imported."""
    return importlib.util.find_spec("setuptools") is not None


def in_place_target() -> Path:
    """Where this interpreter imports ``lomond._speedups`` from in the source tree."""
    return PACKAGE / f"_speedups{sysconfig.get_config_var('EXT_SUFFIX')}"


def source_tree_is_imported() -> bool:
    """Whether ``import lomond`` would load this checkout's ``lomond/`` (not an install)."""
    spec = importlib.util.find_spec("lomond")
    origin = None if spec is None else spec.origin
    return origin is not None and Path(origin).resolve().parent == PACKAGE


def ensure_built() -> Optional[str]:
    """Build the extension in place if it is needed and can be; a note for the report.

    Never raises: a failed build leaves lomond on wsaccel or pure Python, and
    tests/test_accel.py fails if the C path is missing where it could be built.
    """
    if os.environ.get("LOMOND_NO_EXTENSION"):
        return "C extension not built: LOMOND_NO_EXTENSION is set"
    if not source_tree_is_imported() or not SOURCE.is_file():
        return None
    target = in_place_target()
    if target.is_file() and target.stat().st_mtime >= SOURCE.stat().st_mtime:
        return None
    if not c_compiler_available():
        return "C extension not built: no C compiler or Python headers"
    if not setuptools_available():
        return "C extension not built: setuptools is not installed"
    with tempfile.TemporaryDirectory(prefix="lomond-build-") as out:
        result = subprocess.run(
            [sys.executable, "-c", _BUILD, str(SOURCE), out, str(target)],
            capture_output=True, text=True, timeout=300, cwd=out,
        )
    if result.returncode != 0 or not target.is_file():
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        return f"C extension build failed: {lines[-1]}"
    return f"C extension built in place: {target.relative_to(ROOT)}"


__all__ = [
    "c_compiler_available", "ensure_built", "in_place_target", "setuptools_available",
    "source_tree_is_imported",
]
