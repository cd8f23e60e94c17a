"""Masking (RFC 6455 section 5.3): every implementation in lomond.accel agrees.

The reference below is the section 5.3 definition written out byte by byte;
each available implementation (pure Python, wsaccel, lomond's C extension)
must give exactly its result, for every length including 0-7 (shorter than
a machine word) and lengths that are not a multiple of 4 or 8. The tests
that take the ``masking`` fixture run once on each implementation.

Where a C compiler is available the C extension must be among them (a test
run from a checkout builds it in place first: see tests/speedups_build.py),
so the path that the release wheels ship cannot silently drop out.
"""

from __future__ import annotations

import os
import random
from typing import Callable

import pytest
from speedups_build import c_compiler_available, setuptools_available, source_tree_is_imported

import lomond.frame
from lomond import accel
from lomond.frame import Opcode, build_frame

IMPLEMENTATIONS = sorted(accel.IMPLEMENTATIONS)

SIZES = [*range(0, 34), 63, 64, 65, 125, 126, 127, 1000, 1023, 4093, 4096, 4099, 65535,
         65536, 65537, 1 << 20 | 5]


def reference_mask(key: bytes, data: bytes) -> bytes:
    """RFC 6455 section 5.3: octet i of the result is octet i of data XOR key[i % 4]."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_pure_python_is_always_available() -> None:
    assert "python" in accel.IMPLEMENTATIONS
    assert accel.IMPLEMENTATIONS["python"][0] is accel.mask_python


def test_c_extension_is_present_wherever_it_can_be_built() -> None:
    if os.environ.get("LOMOND_NO_EXTENSION"):
        pytest.skip("LOMOND_NO_EXTENSION is set: the extension is left out on purpose")
    if not c_compiler_available():
        pytest.skip("no C compiler or Python headers on this machine")
    if source_tree_is_imported() and not setuptools_available():
        pytest.skip("setuptools is needed to build the extension in the source tree")
    assert "c" in accel.IMPLEMENTATIONS, (
        f"a C compiler is available but lomond._speedups is missing: "
        f"{sorted(accel.IMPLEMENTATIONS)}"
    )
    from lomond import _speedups  # type: ignore[attr-defined]

    assert accel.IMPLEMENTATIONS["c"] == (_speedups.mask, _speedups.masked_frame)
    if not os.environ.get("LOMOND_NO_ACCEL"):
        assert accel.IMPLEMENTATION == "c"


def test_wsaccel_is_registered_when_installed() -> None:
    pytest.importorskip("wsaccel")
    assert "wsaccel" in accel.IMPLEMENTATIONS


def test_default_prefers_an_accelerator_when_one_is_available() -> None:
    if os.environ.get("LOMOND_NO_ACCEL"):
        assert accel.IMPLEMENTATION == "python"
    elif set(accel.IMPLEMENTATIONS) - {"python"}:
        assert accel.IMPLEMENTATION != "python"
        assert accel.ACCELERATED


@pytest.mark.parametrize("size", SIZES)
def test_mask_matches_reference(masking: str, size: int) -> None:
    rng = random.Random(size)
    key = bytes(rng.randrange(256) for _ in range(4))
    data = rng.randbytes(size)
    expected = reference_mask(key, data) if size <= 65537 else None
    masked = accel.mask(key, data)
    assert isinstance(masked, bytes)
    assert len(masked) == size
    if expected is not None:
        assert masked == expected
    # Masking is an involution: applying it twice gives the data back.
    assert accel.mask(key, masked) == data


@pytest.mark.parametrize("size", [*range(0, 20), 255, 4097])
def test_all_implementations_agree(size: int) -> None:
    rng = random.Random(1000 + size)
    for _ in range(5):
        key = rng.randbytes(4)
        data = rng.randbytes(size)
        results = {name: impl[0](key, data) for name, impl in accel.IMPLEMENTATIONS.items()}
        assert set(results.values()) == {reference_mask(key, data)}, results


@pytest.mark.parametrize("offset", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("size", [0, 1, 3, 7, 9, 17, 100, 1001])
def test_unaligned_buffers(masking: str, offset: int, size: int) -> None:
    """A payload that starts at an odd address (a slice of a larger buffer) masks the same."""
    key = b"\x9a\x01\xff\x37"
    backing = bytearray(os.urandom(offset + size + 3))
    view = memoryview(backing)[offset : offset + size]
    expected = reference_mask(key, bytes(view))
    assert accel.mask(key, view) == expected  # type: ignore[arg-type]
    assert accel.mask(key, bytes(view)) == expected


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_masked_frame_accepts_any_buffer(
    masking: str, kind: Callable[[bytes], object]
) -> None:
    key = b"\x37\xfa\x21\x3d"
    header = b"\x81\x85"
    frame = accel.masked_frame(header, key, kind(b"Hello"))  # type: ignore[arg-type]
    # RFC 6455 section 5.7: a single-frame masked text message "Hello".
    assert frame == bytes.fromhex("818537fa213d7f9f4d5158")


def test_mask_with_zero_key_is_identity(masking: str) -> None:
    data = os.urandom(333)
    assert accel.mask(b"\0\0\0\0", data) == data


def test_build_frame_uses_the_selected_implementation(
    masking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = accel.masked_frame

    def spy(header: bytes, key: bytes, payload: bytes) -> bytes:
        calls.append((header, key, bytes(payload)))
        return real(header, key, payload)

    monkeypatch.setattr(accel, "masked_frame", spy)
    monkeypatch.setattr(os, "urandom", lambda n: b"\x01\x02\x03\x04" * (n // 4))
    monkeypatch.setattr(lomond.frame, "_keys", iter(()))  # draw a fresh pool of keys
    data = build_frame(Opcode.BINARY, b"abcdef")
    assert calls == [(b"\x82\x86", b"\x01\x02\x03\x04", b"abcdef")]
    assert data == b"\x82\x86\x01\x02\x03\x04" + reference_mask(b"\x01\x02\x03\x04", b"abcdef")


def test_use_rejects_unknown_names() -> None:
    with pytest.raises(KeyError):
        accel.use("no-such-implementation")
    assert accel.IMPLEMENTATION in accel.IMPLEMENTATIONS


def test_mask_implementations_agree_with_python_on_large_random_data() -> None:
    data = os.urandom(3 * 65536 + 3)
    key = os.urandom(4)
    expected = accel.mask_python(key, data)
    for name, (mask, _) in accel.IMPLEMENTATIONS.items():
        assert mask(key, data) == expected, name
