"""Type stub for lomond's optional C extension (``lomond/_speedups.c``).

The extension is built at install time when a compiler is present; this
stub lets ``mypy --strict`` check :mod:`lomond.accel` whether or not it is.
"""

from typing import Union

_Buffer = Union[bytes, bytearray, memoryview]

def mask(key: _Buffer, data: _Buffer) -> bytes: ...
def masked_frame(header: _Buffer, key: _Buffer, payload: _Buffer) -> bytes: ...
