"""Close status codes (RFC 6455 section 7.4)."""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar, FrozenSet


class Status(IntEnum):
    """Close codes defined by RFC 6455 section 7.4.1 and the IANA registry.

    :attr:`invalid_codes` holds the codes below 3000 that must never appear
    in a Close frame (``code in Status.invalid_codes``), as in Lomond 0.3.4;
    it is a class attribute, not a member, so iterating over ``Status``
    yields codes only.
    """

    #: The codes below 3000 that a Close frame must not carry (RFC 6455
    #: section 7.4): 0-999 (not used), 1004-1006 and 1015 (reserved: 1005,
    #: 1006 and 1015 are only reported locally) and 1016-2999 (unassigned),
    #: 2,988 codes. Lomond 0.3.4's set also held 1014, which the IANA
    #: registry assigns (Bad Gateway). Codes from 5000 up are invalid too but
    #: not listed (a set cannot hold "everything above"):
    #: :func:`is_valid_close_code` checks every code. Annotated without a
    #: value so that the enum does not make it a member; assigned below.
    invalid_codes: ClassVar[FrozenSet[int]]

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    #: Reserved: must never be sent in a Close frame.
    NO_STATUS = 1005
    #: Reserved: must never be sent in a Close frame.
    ABNORMAL_CLOSURE = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_LARGE = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    #: Reserved: must never be sent in a Close frame.
    TLS_HANDSHAKE = 1015

    # Aliases: other names in use for the same codes (each is the same
    # member as the name above it with that value).
    DATA_NOT_UNDERSTOOD = 1003
    BAD_DATA = 1007
    DATA_NOT_CONSISTENT = 1007
    EXTENSION_FAILED = 1010
    UNEXPECTED_CONDITION = 1011
    TLS_FAILURE = 1015


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame on the wire.

    RFC 6455 section 7.4: 1000-1003 and 1007-1011 are defined for use, 1012-1014
    are registered with IANA, 3000-3999 are for libraries and frameworks and
    4000-4999 for private use. 1004-1006, 1015, everything below 1000 and
    1016-2999 are reserved or unassigned and fail the connection.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# Everything below 3000 that is_valid_close_code() refuses (see the attribute).
Status.invalid_codes = frozenset(code for code in range(3000) if not is_valid_close_code(code))


__all__ = ["Status", "is_valid_close_code"]
