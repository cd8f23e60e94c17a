"""Build hook for the optional C accelerator; all metadata is in pyproject.toml.

``lomond._speedups`` masks outgoing frames in C. It is optional: where it
cannot be built (no compiler, no Python headers) the install goes on without
it, says so once, and lomond uses wsaccel or pure Python at run time
(``lomond.accel.IMPLEMENTATION`` and ``lomond --version`` tell which), and
the wheel built then is tagged pure Python (``py3-none-any``).
``LOMOND_NO_EXTENSION=1`` skips the build on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FALLBACK_MESSAGE = (
    "lomond: the optional C extension lomond._speedups could not be built ({reason}); "
    "lomond will use wsaccel if installed, else pure-Python masking. "
    "Everything works; only sending is slower."
)


#: Set once the extension was left out: the wheel is then pure Python.
_FELL_BACK = []


class OptionalBuildExt(build_ext):
    """``build_ext`` that turns a failed compile into one clear message.

    setuptools' own ``optional=True`` only logs a generic warning that is easy
    to miss; this prints a single line (visible with ``pip install -v``) that
    says what happened and what it means.
    """

    def run(self) -> None:
        if os.environ.get("LOMOND_NO_EXTENSION"):
            self._fell_back("LOMOND_NO_EXTENSION is set")
            return
        try:
            super().run()
        except Exception as error:  # whatever failed, lomond works without it
            self._fell_back(f"{type(error).__name__}: {error}")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # no compiler, no Python headers, a compile error
            self._fell_back(f"{type(error).__name__}: {error}")

    def _fell_back(self, reason: str) -> None:
        lines = reason.strip().splitlines() or ["unknown"]
        print(FALLBACK_MESSAGE.format(reason=lines[-1]), file=sys.stderr)
        self.extensions = []
        _FELL_BACK.append(reason)


def pure_if_no_extension(bdist_wheel: type) -> type:
    """A ``bdist_wheel`` whose wheel is tagged ``py3-none-any`` when the extension fell back.

    setuptools tags a wheel for the platform as soon as the distribution
    declares an extension, built or not; a wheel without ``lomond._speedups``
    is pure Python and installs anywhere.
    """

    class PureIfNoExtension(bdist_wheel):  # type: ignore[misc, valid-type]
        def run(self) -> None:
            if not self.skip_build:
                self.run_command("build")  # runs once: super().run() skips it
            if _FELL_BACK:
                self.root_is_pure = True
            super().run()

    return PureIfNoExtension


def command_classes() -> dict:
    """``cmdclass`` for setup(): the optional build_ext, and bdist_wheel if there is one."""
    classes = {"build_ext": OptionalBuildExt}
    try:
        from setuptools.command.bdist_wheel import bdist_wheel  # setuptools 70.1+
    except ImportError:
        try:
            from wheel.bdist_wheel import bdist_wheel  # older setuptools, with wheel
        except ImportError:
            return classes
    classes["bdist_wheel"] = pure_if_no_extension(bdist_wheel)
    return classes


SPEEDUPS = Extension("lomond._speedups", ["lomond/_speedups.c"])

if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it
    setup(ext_modules=[SPEEDUPS], cmdclass=command_classes())
