"""The TLS context for ``wss://``: Lomond 0.3.4's ``ssl_verify`` and ``ssl_cafile`` options.

:func:`make_ssl_context` turns the three TLS arguments of
:class:`~lomond.websocket.WebSocket` into the one :class:`ssl.SSLContext`
a connection uses. The rules, and why:

* Default (no arguments): ``None``, meaning the system's trusted CAs with
  certificate and host name verified (:func:`ssl.create_default_context`,
  which the connection builds when a ``wss://`` connection needs it). RFC 6455
  section 10.6 leaves server authentication to TLS; anything weaker by
  default would be a silent downgrade. Building it lazily keeps
  constructing a ``ws://`` WebSocket cheap (loading the system store takes
  milliseconds) and picks up changes to the store between connections.
* ``ssl_cafile``: trust the CA certificates in that PEM file *instead of* the
  system store, as :func:`ssl.create_default_context` does with ``cafile``
  (and as ``lomond --cafile`` does). Pinning a private CA is what the option
  is for; quietly trusting every public CA as well would widen that trust
  behind the caller's back. To trust both, build an ``ssl_context`` (call
  ``load_default_certs()`` and ``load_verify_locations()`` on it).
* ``ssl_verify=False``: no certificate and no host-name check at all. This is
  **insecure**: anyone on the path can impersonate the server and read the
  traffic. It exists for test servers with self-signed certificates; prefer
  ``ssl_cafile`` with that certificate.
* An explicit ``ssl_context`` is used exactly as given, never modified or
  copied (a context cannot be copied faithfully, and changing a caller's
  object, possibly shared, would be a surprise). Combining it with a
  non-default ``ssl_verify`` or ``ssl_cafile`` is therefore contradictory and
  raises ``ValueError`` at once rather than ignoring one of them silently;
  configure the context itself instead.

Every mistake is reported when the arguments are given (``TypeError`` for a
wrong type, ``ValueError`` for a missing or unusable CA file), not as a
connection failure later.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Optional, Union

log = logging.getLogger("lomond.tls")

#: What ``ssl_cafile`` accepts: a path as ``str``, ``bytes`` or :class:`os.PathLike`.
CAFile = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]


def make_ssl_context(
    ssl_context: Optional[ssl.SSLContext] = None,
    ssl_verify: bool = True,
    ssl_cafile: Optional[CAFile] = None,
) -> Optional[ssl.SSLContext]:
    """The :class:`ssl.SSLContext` for ``wss://`` connections, from the WebSocket's TLS options.

    Returns ``None`` when all three are the defaults: the connection then uses
    :func:`ssl.create_default_context` (system CAs, everything verified).

    :param ssl_context: a context to use as given (then ``ssl_verify`` and
        ``ssl_cafile`` must keep their defaults).
    :param ssl_verify: ``False`` disables certificate and host-name
        verification (insecure: for test servers only).
    :param ssl_cafile: a PEM file of CA certificates to trust instead of the
        system's.
    :raises TypeError: an argument has the wrong type.
    :raises ValueError: contradictory arguments, or a CA file that is
        missing, unreadable or holds no certificate.
    """
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(
            f"ssl_context must be an ssl.SSLContext or None, not {type(ssl_context).__name__}"
        )
    if not isinstance(ssl_verify, bool):
        raise TypeError(f"ssl_verify must be True or False, not {type(ssl_verify).__name__}")
    path = _cafile_path(ssl_cafile)
    if ssl_context is not None:
        if not ssl_verify or path is not None:
            raise ValueError(
                "ssl_verify and ssl_cafile cannot be combined with ssl_context: an explicit "
                "ssl_context is used as given, so configure verification on it instead"
            )
        return ssl_context
    if not ssl_verify:
        if path is not None:
            raise ValueError(
                "ssl_cafile has no effect with ssl_verify=False: pass one or the other"
            )
        return _unverified_context()
    if path is None:
        return None
    return _context_trusting(path)


def _cafile_path(ssl_cafile: Optional[CAFile]) -> Optional[str]:
    """Validate ``ssl_cafile`` and return it as a ``str`` path (or ``None``)."""
    if ssl_cafile is None:
        return None
    if not isinstance(ssl_cafile, (str, bytes, os.PathLike)):
        raise TypeError(
            f"ssl_cafile must be a path (str or os.PathLike) or None, "
            f"not {type(ssl_cafile).__name__}"
        )
    path = os.fsdecode(os.fspath(ssl_cafile))
    if not path:
        raise ValueError("ssl_cafile must not be empty")
    if not os.path.exists(path):
        raise ValueError(f"ssl_cafile {path!r} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"ssl_cafile {path!r} is not a file")
    return path


def _context_trusting(path: str) -> ssl.SSLContext:
    """A verifying context that trusts only the CAs in ``path``."""
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as error:
        # Not PEM, or PEM without a certificate: the message names the file only.
        raise ValueError(
            f"ssl_cafile {path!r} holds no usable CA certificate ({error.reason or error})"
        ) from None
    except OSError as error:
        raise ValueError(f"ssl_cafile {path!r} cannot be read: {error.strerror or error}") from None


def _unverified_context() -> ssl.SSLContext:
    """A client context that verifies nothing (``ssl_verify=False``)."""
    # PROTOCOL_TLS_CLIENT keeps the modern protocol and cipher defaults; no CA
    # store is loaded because nothing would be checked against it.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # must be off before verify_mode can be CERT_NONE
    context.verify_mode = ssl.CERT_NONE
    log.debug("TLS certificate verification is disabled (ssl_verify=False)")
    return context


__all__ = ["CAFile", "make_ssl_context"]
