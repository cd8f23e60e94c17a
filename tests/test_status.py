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


def test_invalid_codes_are_the_reserved_ones() -> None:
    assert Status.invalid_codes == {1004, 1005, 1006, 1015}
    assert isinstance(Status.invalid_codes, frozenset)
    assert Status.NO_STATUS in Status.invalid_codes
    assert 1000 not in Status.invalid_codes


def test_invalid_codes_is_not_a_member() -> None:
    # Iterating the enum yields close codes only, one per value.
    assert [int(member) for member in Status] == sorted({int(m) for m in Status})
    assert "invalid_codes" not in Status.__members__
    with pytest.raises(ValueError):
        Status(1004)


@pytest.mark.parametrize("code", sorted(Status.invalid_codes))
def test_invalid_codes_are_refused_on_the_wire(code: int) -> None:
    assert not is_valid_close_code(code)


@pytest.mark.parametrize("member", list(Status), ids=lambda m: m.name)
def test_every_sendable_member_is_valid(member: Status) -> None:
    assert is_valid_close_code(member) == (member not in Status.invalid_codes)
