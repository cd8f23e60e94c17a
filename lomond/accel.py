"""The one import point for optional accelerators.

Only the XOR masking of outgoing payloads (RFC 6455 section 5.3) has an
accelerated path. ``wsaccel`` is used when it is installed and the environment
variable ``LOMOND_NO_ACCEL`` is unset or empty; otherwise the pure-Python path
runs. Both are always importable from here so the test suite runs on both.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

MaskFunc = Callable[[bytes, bytes], bytes]


def mask_python(key: bytes, data: bytes) -> bytes:
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


def _load_wsaccel() -> Optional[MaskFunc]:
    if os.environ.get("LOMOND_NO_ACCEL"):
        return None
    try:
        from wsaccel.xormask import XorMaskerSimple  # type: ignore[import-untyped]
    except ImportError:
        return None

    def mask_wsaccel(key: bytes, data: bytes) -> bytes:
        """XOR ``data`` with ``key`` using wsaccel's C implementation."""
        result: bytes = XorMaskerSimple(key).process(data)
        return result

    return mask_wsaccel


mask_accel: Optional[MaskFunc] = _load_wsaccel()

#: Whether an accelerator is in use.
ACCELERATED = mask_accel is not None

#: The masking function the protocol uses: ``mask(key, data) -> bytes``.
mask: MaskFunc = mask_accel or mask_python

__all__ = ["ACCELERATED", "mask", "mask_accel", "mask_python"]
