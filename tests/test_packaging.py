"""Packaging: the optional C extension falls back honestly; the sdist is complete.

The sdist and wheel themselves are built by .ci/run (``python -m build``,
``twine check``, then the test suite from the unpacked sdist); here are the
checks that need no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BUILD = textwrap.dedent("""
    import runpy, sys
    from setuptools import Distribution
    setup_py = runpy.run_path({setup!r}, run_name="lomond_setup")
    ext = setup_py["SPEEDUPS"]
    ext.sources = [{source!r}]
    dist = Distribution({{"name": "lomond", "ext_modules": [ext]}})
    cmd = setup_py["OptionalBuildExt"](dist)
    cmd.build_lib = cmd.build_temp = {out!r}
    cmd.ensure_finalized()
    cmd.run()
    print("outputs:", cmd.get_outputs())
""")


def build_extension(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    code = BUILD.format(
        setup=str(ROOT / "setup.py"), source=str(ROOT / "lomond" / "_speedups.c"),
        out=str(tmp_path),
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=300, cwd=tmp_path,
        env={**os.environ, **env},
    )


def built_modules(tmp_path: Path) -> list:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return sorted(tmp_path.rglob(f"_speedups{suffix}"))


def test_without_a_compiler_the_build_goes_on_and_says_so_once(tmp_path: Path) -> None:
    result = build_extension(tmp_path, CC="/bin/false", LDSHARED="/bin/false")
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert err.count("lomond: the optional C extension lomond._speedups could not be built") == 1
    assert "pure-Python masking" in err
    assert built_modules(tmp_path) == []
    assert "outputs: []" in result.stdout.decode()


def test_lomond_no_extension_skips_the_build(tmp_path: Path) -> None:
    result = build_extension(tmp_path, LOMOND_NO_EXTENSION="1")
    assert result.returncode == 0
    assert "LOMOND_NO_EXTENSION is set" in result.stderr.decode()
    assert built_modules(tmp_path) == []


@pytest.mark.skipif(
    shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC")
                 else "cc") is None,
    reason="no C compiler on this machine",
)
def test_with_a_compiler_the_extension_is_built(tmp_path: Path) -> None:
    result = build_extension(tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert "could not be built" not in result.stderr.decode()
    assert len(built_modules(tmp_path)) == 1


def test_accel_implementation_tells_the_truth() -> None:
    # What lomond.accel reports must be what that same interpreter can import.
    code = (
        "import importlib.util as u, lomond.accel as a\n"
        "print(a.IMPLEMENTATION, u.find_spec('lomond._speedups') is not None,"
        " u.find_spec('wsaccel') is not None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LOMOND_NO_ACCEL"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, env=env, cwd=ROOT,
    )
    implementation, has_c, has_wsaccel = result.stdout.decode().split()
    if has_c == "True":
        expected = "c"
    elif has_wsaccel == "True":
        expected = "wsaccel"
    else:
        expected = "python"
    assert implementation == expected, result.stderr.decode()


def _bdist_wheel_available() -> bool:
    """Whether this interpreter can build a wheel from setup.py (setuptools 77+, as pyproject)."""
    code = (
        "import setuptools, sys\n"
        "major = int(setuptools.__version__.split('.')[0])\n"
        "import setuptools.command.bdist_wheel\n"
        "sys.exit(0 if major >= 77 else 1)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    return result.returncode == 0


@pytest.mark.skipif(
    not _bdist_wheel_available(), reason="building a wheel needs setuptools 77+ (pyproject.toml)"
)
def test_a_wheel_without_the_extension_is_pure_python(tmp_path: Path) -> None:
    # Issue 22: a wheel built where the extension fell back was still tagged
    # for the platform (cp311-cp311-linux_x86_64) though it holds no binary.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "lomond", source / "lomond",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    dist = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "bdist_wheel", "-d", str(dist)],
        capture_output=True, timeout=300, cwd=source,
        env={**os.environ, "LOMOND_NO_EXTENSION": "1"},
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert "LOMOND_NO_EXTENSION is set" in result.stderr.decode()
    [wheel] = [path.name for path in dist.iterdir()]
    assert wheel.endswith("-py3-none-any.whl"), wheel
