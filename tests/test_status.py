"""Close codes: members, aliases, the reserved set (RFC 6455 section 7.4)."""

from __future__ import annotations

import pytest

from lomond.status import Status, is_valid_close_code


def test_aliases_are_the_same_members() -> None:
    assert Status.BAD_DATA is Status.INVALID_PAYLOAD
    assert Status.BAD_DATA == 1007
    assert Status.DATA_NOT_UNDERSTOOD is Status.UNSUPPORTED_DATA
    assert Status.DATA_NOT_UNDERSTOOD == 1003
    assert Status.DATA_NOT_CONSISTENT is Status.INVALID_PAYLOAD
    assert Status.EXTENSION_FAILED == 1010
    assert Status.UNEXPECTED_CONDITION == 1011
    assert Status.TLS_FAILURE is Status.TLS_HANDSHAKE


def test_invalid_codes_are_every_code_below_3000_that_may_not_be_sent() -> None:
    # As Lomond 0.3.4's set (0-999, 1004-1006, 1014-2999: 2,989 codes), but
    # for 1014, which IANA registered (issue 20).
    expected = set(range(0, 1000)) | {1004, 1005, 1006} | set(range(1015, 3000))
    assert Status.invalid_codes == expected
    assert len(Status.invalid_codes) == 2988
    assert isinstance(Status.invalid_codes, frozenset)
    assert Status.NO_STATUS in Status.invalid_codes
    assert {999, 1016, 2999} <= Status.invalid_codes
    assert not {1000, 1014, 3000, 4999} & Status.invalid_codes
    assert Status.invalid_codes == {c for c in range(3000) if not is_valid_close_code(c)}


def test_invalid_codes_is_not_a_member() -> None:
    # Iterating the enum yields close codes only, one per value.
    assert [int(member) for member in Status] == sorted({int(m) for m in Status})
    assert "invalid_codes" not in Status.__members__
    with pytest.raises(ValueError):
        Status(1004)


def test_invalid_codes_are_refused_on_the_wire() -> None:
    assert [code for code in sorted(Status.invalid_codes) if is_valid_close_code(code)] == []


@pytest.mark.parametrize("member", list(Status), ids=lambda m: m.name)
def test_every_sendable_member_is_valid(member: Status) -> None:
    assert is_valid_close_code(member) == (member not in Status.invalid_codes)
