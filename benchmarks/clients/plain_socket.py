"""The ceiling: a minimal raw-socket WebSocket client.

It does the opening handshake, then reads and writes frames with the least
work that still gives correct results *for this benchmark server*: frames
are parsed straight out of 64 KiB ``recv`` chunks, big payloads (64 KiB and
more) are read into place with ``recv_into``, text is decoded (and so validated) with
``bytes.decode``, compressed messages go through one ``zlib`` decompressor.
It does not handle fragmentation, pings, limits or error recovery, which is
why it is a reference and not a peer.

Masking uses the fastest XOR available: ``websockets.speedups.apply_mask``
(a C function), else ``wsaccel``, else an integer XOR. Mask keys come from
``os.urandom``, fetched in one call per ``send()``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import sys
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Union
from urllib.parse import urlsplit

NAME = "plain"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RECV_SIZE = 64 * 1024  # fresh bytes per recv(): stay under the mmap threshold
BIG = 64 * 1024
TAIL = b"\x00\x00\xff\xff"

try:
    from websockets.speedups import apply_mask as _apply_mask

    MASK_IMPL = "websockets.speedups.apply_mask"

    def mask(data: bytes, key: bytes) -> bytes:
        return _apply_mask(data, key)

except ImportError:  # pragma: no cover - depends on the environment
    try:
        from wsaccel.xormask import XorMaskerSimple

        MASK_IMPL = "wsaccel"

        def mask(data: bytes, key: bytes) -> bytes:
            return XorMaskerSimple(key).process(data)

    except ImportError:
        MASK_IMPL = "int-xor"

        def mask(data: bytes, key: bytes) -> bytes:
            n = len(data)
            k = (key * (n // 4 + 1))[:n]
            return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(
                n, "little"
            )


def probe() -> Dict:
    return {
        "available": True,
        "version": f"python {sys.version.split()[0]}",
        "settings": f"raw socket, TCP_NODELAY, masking: {MASK_IMPL}",
    }


def unsupported(scenario) -> Optional[str]:  # type: ignore[no-untyped-def]
    return None


class PlainError(Exception):
    pass


def masked_header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((0x80 | opcode, 0x80 | length))
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0xFE, length)
    return struct.pack("!BBQ", 0x80 | opcode, 0xFF, length)


class Connection:
    def __init__(self, url: str, scenario) -> None:  # type: ignore[no-untyped-def]
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + ("?" + parts.query if parts.query else "")
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if scenario.deflate:
            request += (
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
            )
        sock.sendall((request + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise PlainError("EOF during handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split(" ")[1] != "101":
            raise PlainError(f"handshake refused: {lines[0]}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expect = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expect:
            raise PlainError("bad Sec-WebSocket-Accept")
        self.extensions = headers.get("sec-websocket-extensions")
        self.inflater = None
        if self.extensions:
            if not self.extensions.startswith("permessage-deflate"):
                raise PlainError(f"unexpected extension {self.extensions}")
            self.inflater = zlib.decompressobj(-15)
        self.sock = sock
        self.data = rest

    def recv(self, n: int, add: Callable) -> None:
        sock = self.sock
        data = self.data
        pos = 0
        count = 0
        inflater = self.inflater
        header_only = False
        while True:
            end_data = len(data)
            while count < n and end_data - pos >= 2:
                b0 = data[pos]
                length = data[pos + 1] & 0x7F
                h = pos + 2
                if length == 126:
                    if end_data - pos < 4:
                        break
                    length = (data[h] << 8) | data[h + 1]
                    h += 2
                elif length == 127:
                    if end_data - pos < 10:
                        break
                    length = int.from_bytes(data[h : h + 8], "big")
                    h += 8
                end = h + length
                if end > end_data:
                    if length < BIG:
                        break
                    payload = bytearray(length)
                    have = end_data - h
                    payload[:have] = data[h:end_data]
                    view = memoryview(payload)
                    while have < length:
                        got = sock.recv_into(view[have:], length - have)
                        if not got:
                            raise PlainError("EOF inside a frame")
                        have += got
                    data = b""
                    end_data = pos = 0
                    # More big frames are likely: read just the next header,
                    # so the payload again lands in place with recv_into.
                    header_only = True
                else:
                    payload = data[h:end]
                    pos = end
                opcode = b0 & 0x0F
                if not b0 & 0x80 or opcode == 0 or opcode > 2:
                    raise PlainError(f"unexpected frame 0x{b0:02x}")
                if b0 & 0x40:
                    payload = inflater.decompress(payload + TAIL)  # type: ignore[union-attr]
                add(payload.decode() if opcode == 1 else payload)
                count += 1
            if count >= n:
                break
            data = data[pos:]
            pos = 0
            chunk = sock.recv(14 if header_only else RECV_SIZE)
            header_only = False
            if not chunk:
                raise PlainError(f"EOF after {count} of {n} messages")
            data = data + chunk if data else chunk
        self.data = data[pos:]

    def send(self, seq: Sequence[Union[bytes, str]]) -> None:
        keys = os.urandom(4 * len(seq))
        sendall = self.sock.sendall
        i = 0
        for payload in seq:
            if isinstance(payload, str):
                payload, opcode = payload.encode(), 1
            else:
                opcode = 2
            key = keys[i : i + 4]
            i += 4
            if len(payload) < BIG:
                sendall(masked_header(opcode, len(payload)) + key + mask(payload, key))
            else:
                sendall(masked_header(opcode, len(payload)) + key)
                sendall(mask(payload, key))

    def echo(self, seq: Sequence[Union[bytes, str]], add: Callable) -> None:
        recv = self.recv
        send = self.send
        for payload in seq:
            send((payload,))
            recv(1, add)

    def close(self) -> None:
        key = os.urandom(4)
        payload = struct.pack("!H", 1000)
        self.sock.sendall(masked_header(8, 2) + key + mask(payload, key))
        self.sock.settimeout(10)
        data = self.data
        # Skip anything still in flight until the server's Close (or EOF).
        while True:
            while len(data) >= 2:
                b0 = data[0]
                length = data[1] & 0x7F
                h = 2
                if length == 126:
                    if len(data) < 4:
                        break
                    length = int.from_bytes(data[2:4], "big")
                    h = 4
                elif length == 127:
                    if len(data) < 10:
                        break
                    length = int.from_bytes(data[2:10], "big")
                    h = 10
                if len(data) < h + length:
                    break
                if b0 & 0x0F == 8:
                    self.sock.close()
                    return
                data = data[h + length :]
            chunk = self.sock.recv(RECV_SIZE)
            if not chunk:
                break
            data += chunk
        self.sock.close()


def connect(url: str, scenario) -> Connection:  # type: ignore[no-untyped-def]
    return Connection(url, scenario)


__all__: List[str] = ["NAME", "connect", "probe", "unsupported"]
