"""Benchmark scenarios and their deterministic payloads.

Shared by the server (which sends or expects the payloads), the client runner
(which checks what a client received against them) and ``run.py``.

Every scenario uses ``k`` distinct payloads; message ``i`` is
``payloads[i % k]``, so dropped, duplicated, reordered or corrupted messages
all show up as mismatches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Union

Payload = Union[bytes, str]

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # "recv" (server -> client), "send" (client -> server), "echo"
    kind: str  # "text" or "binary"
    size: int  # payload size in bytes (UTF-8 encoded size for text)
    n: int  # messages (or round trips) in a default run
    k: int  # distinct payloads, cycled
    deflate: bool = False
    utf8: str = "ascii"  # "ascii" or "multibyte" (text only)
    description: str = ""

    @property
    def unit(self) -> str:
        """How throughput is reported: messages/s for small payloads, MB/s for large."""
        if self.mode == "echo":
            return "rt/s"
        return "msg/s" if self.size < 4 * KIB else "MB/s"

    @property
    def big(self) -> bool:
        return self.size >= 4 * KIB


SCENARIOS: List[Scenario] = [
    Scenario(
        "recv_text_16",
        "recv",
        "text",
        16,
        100_000,
        1000,
        description="server streams 16-byte ASCII text messages",
    ),
    Scenario(
        "recv_binary_16",
        "recv",
        "binary",
        16,
        100_000,
        1000,
        description="server streams 16-byte binary messages",
    ),
    Scenario(
        "recv_binary_64k",
        "recv",
        "binary",
        64 * KIB,
        20_000,
        8,
        description="server streams 64 KiB binary messages",
    ),
    Scenario(
        "recv_binary_1m",
        "recv",
        "binary",
        MIB,
        1_500,
        4,
        description="server streams 1 MiB binary messages",
    ),
    Scenario(
        "recv_text_1m_utf8",
        "recv",
        "text",
        MIB,
        150,
        3,
        utf8="multibyte",
        description="server streams 1 MiB text messages of mixed 1/2/3/4-byte UTF-8",
    ),
    Scenario(
        "send_binary_16",
        "send",
        "binary",
        16,
        80_000,
        1000,
        description="client sends 16-byte binary messages; server checks each",
    ),
    Scenario(
        "send_binary_1m",
        "send",
        "binary",
        MIB,
        1_500,
        4,
        description="client sends 1 MiB binary messages; server checks each",
    ),
    Scenario(
        "echo_16",
        "echo",
        "binary",
        16,
        10_000,
        1000,
        description="client sends a 16-byte binary message and waits for the echo",
    ),
    Scenario(
        "recv_text_16_deflate",
        "recv",
        "text",
        16,
        100_000,
        1000,
        deflate=True,
        description="server streams 16-byte text messages compressed with permessage-deflate",
    ),
    Scenario(
        "recv_text_64k_deflate",
        "recv",
        "text",
        64 * KIB,
        5_000,
        8,
        deflate=True,
        description="server streams 64 KiB ASCII text messages compressed with permessage-deflate",
    ),
]

BY_NAME: Dict[str, Scenario] = {s.name: s for s in SCENARIOS}

_cache: Dict[str, List[Payload]] = {}

# Characters of every UTF-8 length, multi-byte ones weighted up.
_UTF8_CHARS = (
    "abcdefgh"  # 1 byte
    "éüßжяλΩ"  # 2 bytes
    "€中文日本語한"  # 3 bytes
    "😀🎉𝄞🚀🌍"  # 4 bytes
)


def _multibyte_text(size: int, seed: int) -> str:
    """Exactly ``size`` bytes of UTF-8 mixing 1, 2, 3 and 4-byte characters."""
    rng = random.Random(seed)
    base = "".join(rng.choice(_UTF8_CHARS) for _ in range(6000))
    text = base * (size // len(base.encode()) + 1)
    # Trim to at most `size` bytes on a character boundary, then pad with ASCII.
    encoded = text.encode()[:size]
    text = encoded.decode("utf-8", "ignore")
    text += "x" * (size - len(text.encode()))
    assert len(text.encode()) == size
    return text


def payloads(scenario: Scenario) -> List[Payload]:
    """The scenario's ``k`` distinct payloads (``str`` for text, ``bytes`` for binary)."""
    cached = _cache.get(scenario.name)
    if cached is not None:
        return cached
    rng = random.Random(scenario.name)
    result: List[Payload] = []
    for i in range(scenario.k):
        if scenario.kind == "binary":
            result.append(rng.randbytes(scenario.size))
        elif scenario.utf8 == "multibyte":
            result.append(_multibyte_text(scenario.size, seed=i))
        else:
            head = f"{i:07d}:"
            tail = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(scenario.size))
            result.append((head + tail)[: scenario.size])
    _cache[scenario.name] = result
    return result


def encoded_payloads(scenario: Scenario) -> List[bytes]:
    """The payloads as bytes (UTF-8 for text)."""
    return [p.encode() if isinstance(p, str) else p for p in payloads(scenario)]


def scaled_n(scenario: Scenario, scale: float) -> int:
    return max(scenario.k, int(scenario.n * scale))
