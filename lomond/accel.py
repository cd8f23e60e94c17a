"""The one import point for optional accelerators.

Only the masking of outgoing payloads (RFC 6455 section 5.3) is
accelerated; everything else uses the standard library's C code (zlib, the
UTF-8 codec, ssl, selectors). Three implementations, fastest first:

- ``c``: lomond's own extension, ``lomond/_speedups.c``, built at install
  time when a compiler is present (eight bytes per step);
- ``wsaccel``: the ``wsaccel`` package (``pip install lomond[accel]``), for
  installs without a compiler;
- ``python``: pure Python, always available.

Setting the environment variable ``LOMOND_NO_ACCEL`` to a non-empty value
selects pure Python. :data:`IMPLEMENTATIONS` holds every available one so
the test suite runs the same tests on each.

UTF-8 validation of incoming text (RFC 6455 section 8.1) has one path: the
interpreter's own UTF-8 codec, incrementally across fragments (C code on
CPython). :func:`describe` says which paths are active, and why the C
extension is missing when it is; ``lomond --version`` prints it.
"""

from __future__ import annotations

import os
import platform
from typing import Callable, Dict, List, Optional, Union

#: What the mask functions accept as data: any contiguous byte buffer.
Buffer = Union[bytes, bytearray, memoryview]
MaskFunc = Callable[[bytes, Buffer], bytes]
FrameFunc = Callable[[bytes, bytes, Buffer], bytes]


def mask_python(key: bytes, data: Buffer) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key``, in pure Python.

    Converting to one big integer lets CPython do the XOR a machine word at a
    time in C, which is far faster than a byte loop in Python.
    """
    n = len(data)
    if not n:
        return b""
    repeated = key * (n // 4 + 1)
    return (
        int.from_bytes(data, "little") ^ int.from_bytes(repeated[:n], "little")
    ).to_bytes(n, "little")


def _frame_from(mask: MaskFunc) -> FrameFunc:
    def masked_frame(header: bytes, key: bytes, payload: Buffer) -> bytes:
        """``header + key + mask(key, payload)``."""
        return header + key + mask(key, payload)

    return masked_frame


#: Available implementations by name: ``(mask, masked_frame)``.
IMPLEMENTATIONS: Dict[str, tuple[MaskFunc, FrameFunc]] = {
    "python": (mask_python, _frame_from(mask_python)),
}

try:
    from wsaccel.xormask import XorMaskerSimple
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:

    def mask_wsaccel(key: bytes, data: Buffer) -> bytes:
        """XOR ``data`` with ``key`` using wsaccel's C implementation."""
        result: bytes = XorMaskerSimple(key).process(data)
        return result

    IMPLEMENTATIONS["wsaccel"] = (mask_wsaccel, _frame_from(mask_wsaccel))

#: Why ``lomond._speedups`` could not be imported (``None`` when it was).
_C_MISSING: Optional[str] = None
try:
    from . import _speedups
except ImportError as error:  # pragma: no cover - depends on the environment
    if isinstance(error, ModuleNotFoundError) and error.name == f"{__package__}._speedups":
        _C_MISSING = "not built with this install (no C compiler, or LOMOND_NO_EXTENSION)"
    else:  # built, but not loadable here (another Python, a broken build)
        _C_MISSING = f"built but not loadable: {error}"
else:
    IMPLEMENTATIONS["c"] = (_speedups.mask, _speedups.masked_frame)


def _choose() -> str:
    if os.environ.get("LOMOND_NO_ACCEL"):
        return "python"
    for name in ("c", "wsaccel"):
        if name in IMPLEMENTATIONS:
            return name
    return "python"


#: The implementation in use: ``"c"``, ``"wsaccel"`` or ``"python"``.
IMPLEMENTATION = _choose()
#: Whether an accelerator is in use.
ACCELERATED = IMPLEMENTATION != "python"
#: ``mask(key, data) -> bytes``: XOR with the repeating 4-byte key.
mask: MaskFunc = IMPLEMENTATIONS[IMPLEMENTATION][0]
#: ``masked_frame(header, key, payload) -> bytes``: a complete masked frame.
masked_frame: FrameFunc = IMPLEMENTATIONS[IMPLEMENTATION][1]


def describe() -> Dict[str, str]:
    """Which code paths are active: ``{"masking": ..., "utf-8": ...}``, one line each.

    ``masking`` names :data:`IMPLEMENTATION`, what it is, and, when it is
    not the C extension, why (``LOMOND_NO_ACCEL`` set, or the extension
    not built with this install) and what else is available; ``utf-8`` the
    decoder of incoming text.

    .. not-runnable: what it returned on one machine; it depends on the install

    For example, on CPython with the extension::

        {"masking": "c (lomond._speedups); also available: python, wsaccel",
         "utf-8": "the interpreter's incremental UTF-8 codec (C, CPython 3.11.7)"}
    """
    what = {
        "c": "c (lomond._speedups)",
        "wsaccel": "wsaccel (the wsaccel package)",
        "python": "python (pure Python: sending is slower)",
    }
    notes: List[str] = []
    if IMPLEMENTATION != "c":
        if os.environ.get("LOMOND_NO_ACCEL"):
            notes.append("LOMOND_NO_ACCEL is set")
        if _C_MISSING is not None:
            notes.append(f"the C extension is {_C_MISSING}")
        if "wsaccel" not in IMPLEMENTATIONS and IMPLEMENTATION == "python":
            notes.append('pip install "lomond[accel]" adds wsaccel')
    others = sorted(name for name in IMPLEMENTATIONS if name != IMPLEMENTATION)
    masking = what[IMPLEMENTATION]
    if notes:
        masking += f" [{'; '.join(notes)}]"
    if others:
        masking += f"; also available: {', '.join(others)}"
    language = "C" if platform.python_implementation() == "CPython" else "built in"
    utf8 = (
        f"the interpreter's incremental UTF-8 codec ({language}, "
        f"{platform.python_implementation()} {platform.python_version()})"
    )
    return {"masking": masking, "utf-8": utf8}


def use(name: str) -> None:
    """Switch implementation (for tests and benchmarks): a key of :data:`IMPLEMENTATIONS`."""
    global IMPLEMENTATION, ACCELERATED, mask, masked_frame
    mask, masked_frame = IMPLEMENTATIONS[name]
    IMPLEMENTATION = name
    ACCELERATED = name != "python"


__all__ = [
    "ACCELERATED", "IMPLEMENTATION", "IMPLEMENTATIONS", "describe", "mask", "mask_python",
    "masked_frame", "use",
]
