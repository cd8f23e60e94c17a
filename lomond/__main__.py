"""``python -m lomond``: see :mod:`lomond.cli` (and the ``lomond`` console script)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main"]
