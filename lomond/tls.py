"""TLS for ``wss://``: the context, from Lomond 0.3.4's ``ssl_verify`` and ``ssl_cafile``."""

from __future__ import annotations

import ssl
from typing import Optional


def make_ssl_context(
    ssl_context: Optional[ssl.SSLContext], ssl_verify: bool = True, ssl_cafile: Optional[str] = None
) -> Optional[ssl.SSLContext]:
    """The context for ``wss://`` connections (``None``: the verifying default)."""
    if ssl_context is not None:
        return ssl_context
    if ssl_verify and ssl_cafile is None:
        return None
    context = ssl.create_default_context(cafile=ssl_cafile)
    if not ssl_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


__all__ = ["make_ssl_context"]
