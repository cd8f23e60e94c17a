"""Protocol constants and library-wide defaults.

Defaults are documented in the README's "Limits and security defaults" table;
change them here, not at the call sites.
"""

from __future__ import annotations

from ._version import __version__

#: The ``User-Agent`` header sent by default.
USER_AGENT = f"lomond/{__version__}"

#: The only protocol version lomond speaks (RFC 6455 section 4.1, item 9).
WS_VERSION = 13

#: GUID appended to ``Sec-WebSocket-Key`` to compute ``Sec-WebSocket-Accept``
#: (RFC 6455 section 1.3).
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Lomond 0.3's name for :data:`WS_GUID` (the same ``bytes`` object).
WS_KEY = WS_GUID

#: Largest assembled message accepted, in bytes, after decompression.
DEFAULT_MAX_SIZE = 16 * 1024 * 1024

#: Largest HTTP response header block accepted during the opening handshake.
MAX_RESPONSE_HEADER_SIZE = 64 * 1024

#: Largest upgrade request header block a server accepts
#: (:class:`~lomond.protocol.ServerProtocol`); a larger one is answered with
#: 431 Request Header Fields Too Large. Browsers send a few KiB at most.
MAX_REQUEST_HEADER_SIZE = 16 * 1024

#: Seconds allowed for the TCP connect (and the proxy's CONNECT answer).
DEFAULT_CONNECT_TIMEOUT = 10.0

#: Seconds allowed from the TCP connection to a complete upgrade response,
#: TLS handshake included.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: Seconds a single send may wait for the socket to accept more bytes before
#: the transport is declared failed (a peer that stopped reading).
DEFAULT_SEND_TIMEOUT = 30.0

#: The reason of the Close that ``close()`` and a stop request send by default
#: (Lomond 0.3's ``b"goodbye"``).
DEFAULT_CLOSE_REASON = "goodbye"

#: Bytes asked for per ``recv`` call.
READ_SIZE = 64 * 1024

#: The largest read while the rest of a big payload is known to be coming:
#: fewer, larger reads for big messages (measured fastest on loopback at
#: 256 KiB; larger reads gain nothing and cost a bigger allocation).
PAYLOAD_READ_SIZE = 256 * 1024
